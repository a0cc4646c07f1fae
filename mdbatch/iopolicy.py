"""How many files each worker reads at once, decided from what the reads themselves find.

On a warm page cache a read costs a few microseconds of CPU and threads only contend for the GIL:
one read at a time is fastest. On cold or network storage a read waits on the device or the
metadata server, and several reads in flight per worker keep it busy. The scan's first read of
each file asks the kernel not to wait (RWF_NOWAIT): when it cannot answer from the page cache, the
file was cold. That signal does not depend on how loaded the machine is. Where a filesystem
cannot tell (no RWF_NOWAIT reads, e.g. some network filesystems), the latency of small reads
decides instead. `AdaptiveIO` starts from a probe of a few real files and follows what each
finished batch measured; `--io-concurrency N` fixes the setting instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from .hashing import digest_file

#: Share of cold reads from which several reads in flight pay off.
COLD_SHARE = 0.25
#: Where the page-cache state is unknown: the mean small-read latency above which reads wait on
#: storage (a warm open, read and close of a small file takes 5-15 us), and above which the storage
#: is slow enough for more reads in flight still.
COLD_S = 100e-6
SLOW_S = 2e-3
#: Reads in flight per worker: warm, cold, slow.
WARM_THREADS, COLD_THREADS, SLOW_THREADS = 1, 4, 8
#: Small files the start-up probe reads (the first simulations' top-level files), and their largest size.
PROBE_FILES = 16
PROBE_BYTES = 64 << 10


def threads_for(cold_share: float | None, latency_s: float | None) -> int:
    """Reads in flight per worker for a share of cold reads (None: unknown) and a mean latency."""
    if cold_share is not None:
        if cold_share < COLD_SHARE:
            return WARM_THREADS
        return SLOW_THREADS if latency_s is not None and latency_s >= SLOW_S else COLD_THREADS
    if latency_s is None or latency_s < COLD_S:
        return WARM_THREADS
    return COLD_THREADS if latency_s < SLOW_S else SLOW_THREADS


class AdaptiveIO:
    """The reads-in-flight setting of an audit: fixed when the user chose it, else measured."""

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.reads = self.known = self.cold = 0
        self.read_s = 0.0
        self.current = WARM_THREADS
        #: Every setting used, in order (for the summary).
        self.history: list[int] = []

    @property
    def threads(self) -> int:
        return self.fixed if self.fixed is not None else self.current

    @property
    def latency_s(self) -> float | None:
        return self.read_s / self.reads if self.reads else None

    @property
    def cold_share(self) -> float | None:
        return self.cold / self.known if self.known else None

    def start(self, simulations: Iterable[str]) -> None:
        """Probe the storage with the first simulations' top-level files before any batch is sent."""
        if self.fixed is not None:
            return
        probed = 0
        for sim in simulations:
            try:  # small files only: their reads take the storage's latency, and the probe stays cheap
                names = sorted(e.path for e in os.scandir(sim) if e.is_file(follow_symlinks=False) and e.stat().st_size <= PROBE_BYTES)
            except OSError:
                continue
            for path in names[: PROBE_FILES - probed]:
                started = time.perf_counter()
                try:
                    d = digest_file(path, want_xxh3=False)
                except OSError:
                    continue
                self._count(1, time.perf_counter() - started, d.cold is not None, bool(d.cold))
                probed += 1
            if probed >= PROBE_FILES:
                break
        self._decide()

    def observe(self, reads: int, read_s: float, known: int, cold: int) -> None:
        """Fold one finished batch's reads in: the recent batches decide (older counts are halved)."""
        if self.fixed is not None or (reads == 0 and known == 0):
            return
        self.reads, self.read_s, self.known, self.cold = self.reads // 2, self.read_s / 2, self.known // 2, self.cold // 2
        self._count(reads, read_s, known, cold)
        self._decide()

    def _count(self, reads: int, read_s: float, known: int, cold: int) -> None:
        self.reads += reads
        self.read_s += read_s
        self.known += known
        self.cold += cold

    def _decide(self) -> None:
        self.current = threads_for(self.cold_share, self.latency_s)
        if not self.history or self.history[-1] != self.current:
            self.history.append(self.current)
