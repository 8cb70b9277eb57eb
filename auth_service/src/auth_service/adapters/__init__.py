"""Adapters: SQL tables and repositories, password hashing and token signing."""
