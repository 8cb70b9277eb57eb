"""Use cases of auth_service and the unit of work they run in."""
