"""Per-client rate limiting: a sliding log in Redis, or in process without Redis."""
