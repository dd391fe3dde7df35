"""The HTTP layer: routes, request/response schemas, problem responses and middleware."""
