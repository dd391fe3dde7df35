"""Process-wide runtime settings of a serving process."""

from __future__ import annotations

import gc

# Allocations between two young-generation collections (CPython's default is 700).
GEN0_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Keep the cycle collector off the request path.

    What exists once the app is built (Django, FastAPI, the routes and models) lives as long as
    the process: freezing it takes it out of every later collection, which otherwise scanned
    it again and again and showed as p99 spikes under load. Far fewer young-generation
    collections cost less again; the older generations keep their ratios, so cyclic garbage is
    still collected. The figures are in loadtests/PERFORMANCE.md.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, middle, oldest)
