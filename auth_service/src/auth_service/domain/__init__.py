"""The auth domain: users, refresh tokens, signing keys and their rules (plain Python)."""
