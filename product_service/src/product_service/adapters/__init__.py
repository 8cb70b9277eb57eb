"""Database tables and repositories of product_service."""
