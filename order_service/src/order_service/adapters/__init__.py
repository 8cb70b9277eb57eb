"""Adapters: database tables and repository, and clients of product_service and payments."""
