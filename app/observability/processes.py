"""CPU, memory and open files of the whole server: the gunicorn master and its workers, summed.

prometheus-client's process collector describes only the process that is scraped, and in
multiprocess mode it is not exported at all; the saturation panels need the server's total.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ServerProcessCollector(Collector):
    """`process_*` metrics of `root` (the gunicorn master) and its children, summed; a worker
    that gunicorn replaced takes its CPU time with it, which rate() reads as a counter reset."""

    def __init__(self, root: int, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.proc = proc

    def pids(self) -> list[int]:
        children = self.proc / str(self.root) / "task" / str(self.root) / "children"
        try:
            return [self.root, *(int(pid) for pid in children.read_text().split())]
        except OSError:
            return [self.root]

    def collect(self) -> Iterator[Metric]:
        cpu = memory = files = 0.0
        for pid in self.pids():
            try:
                # Fields after the command name, which may hold spaces: see proc(5).
                fields = (self.proc / str(pid) / "stat").read_text().rpartition(")")[2].split()
                files += len(os.listdir(self.proc / str(pid) / "fd"))
            except OSError:  # exited meanwhile
                continue
            cpu += (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
            memory += int(fields[21]) * _PAGE  # rss
        yield CounterMetricFamily(
            "process_cpu_seconds", "CPU time of the server's processes.", value=cpu
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of the server's processes.", memory
        )
        yield GaugeMetricFamily("process_open_fds", "Open files of the server's processes.", files)
