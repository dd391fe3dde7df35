"""Use cases between the HTTP layer and the store."""
