"""kvkit: a key-value HTTP service on FastAPI and the Django ORM."""

__version__ = "0.1.0"
