"""The HTTP server's own limits: request deadlines and a bounded number of connections.

uvicorn and gunicorn bound keep-alive and (with `limit_concurrency`) the requests in progress,
but nothing bounds how long a client may take to send its request: `protocol.py` adds the header
and body deadlines and reclaims waiting connections, `worker.py` applies it all under gunicorn.
`drain.py` makes gunicorn's SIGTERM leave a load balancer's rotation before the listener closes.
"""
