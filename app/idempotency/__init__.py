"""Idempotency-Key handling: validation, request fingerprints and exactly-once writes."""
