"""Create, read, update, list and delete items on a running kvkit service.

Run with `python examples/basic.py`; KV_URL and KV_API_KEY select the service.
"""

from __future__ import annotations

import logging
import os
import uuid

from kvclient import KVClient, NotFound, RetryPolicy, VersionMismatch


def main() -> None:
    """Walk through every operation once, printing what the service answers."""
    logging.basicConfig(level=logging.INFO)  # shows one line per retry, if any
    url = os.environ.get("KV_URL", "http://127.0.0.1:8000")
    prefix = f"example-{uuid.uuid4().hex[:8]}:"
    policy = RetryPolicy(max_attempts=5, deadline=10.0)
    with KVClient(url, api_key=os.environ.get("KV_API_KEY"), retry=policy) as kv:
        item = kv.create(prefix + "greeting", {"text": "hello"})
        print("created", item)
        item = kv.update(item.key, {"text": "hi"}, if_version=item.version)
        print("updated to version", item.version)
        try:
            kv.update(item.key, {"text": "stale"}, if_version=1)
        except VersionMismatch as exc:
            print("stale write refused:", exc.code, exc.request_id)
        for n in range(3):
            kv.create(f"{prefix}n{n}", n)
        print("listed", [i.key for i in kv.iter_items(prefix=prefix, page_size=2)])
        for listed in kv.iter_items(prefix=prefix):
            kv.delete(listed.key)
        try:
            kv.get(item.key)
        except NotFound:
            print("deleted", item.key)


if __name__ == "__main__":
    main()
