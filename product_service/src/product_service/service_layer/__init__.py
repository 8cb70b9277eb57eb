"""Use cases of product_service and the unit of work they run in."""
