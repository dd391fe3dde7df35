"""Keep prometheus-client's multiprocess directory bounded when gunicorn replaces workers.

Each worker writes its own counter and histogram files, and they must outlive it or totals would
drop. Left alone, every recycled worker adds files for good. When a worker exits, the gunicorn
master folds its counter and histogram files into one archive file per type and deletes them, so
the directory holds one set of files per live worker plus the archives.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

# Summing is right for these: every sample in them (counts, sums, buckets) is a running total.
_FOLDED_TYPES = ("counter", "histogram")


def worker_exited(pid: int, directory: str | None = None) -> None:
    """Drop a dead worker's live gauges and fold its running totals into the archives."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    multiprocess.mark_process_dead(pid, directory)
    for kind in _FOLDED_TYPES:
        dead = Path(directory) / f"{kind}_{pid}.db"
        if dead.exists():
            _fold(dead, Path(directory) / f"{kind}_archive.db")


def _fold(source: Path, archive_path: Path) -> None:
    archive = MmapedDict(str(archive_path))
    try:
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(source)):
            current, _ = archive.read_value(key)
            archive.write_value(key, current + value, timestamp)
    finally:
        archive.close()
    source.unlink()
