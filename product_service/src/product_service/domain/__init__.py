"""Products, stock reservations and the rules their inputs follow; plain Python only."""
