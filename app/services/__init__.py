"""Domain services: take the session and keyword arguments, never commit."""
