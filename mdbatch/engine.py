"""The only module that talks to Dask: cluster choice, batching, named tasks, streaming results.

Batches are formed from the discovery stream as it goes and submitted with backpressure (a few
batches in flight per worker), so the client never builds a per-simulation task list and never
holds more than a handful of results; each result is handed to the caller as soon as it arrives.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ClusterError

log = logging.getLogger("mdbatch")

#: Simulations per task for small-file campaigns: ~1 s of work per task, ~4,000 tasks at 1M sims.
DEFAULT_BATCH = 250
MIN_BATCH = 8
MIN_SIMS_PER_WORKER = 50


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """Where the fan-out runs: a LocalCluster sized to the machine, or a running scheduler."""

    workers: int | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    #: True/False force the dashboard on/off; None starts it only for campaigns big enough to watch.
    dashboard: bool | None = None
    dashboard_address: str = ":8787"


def batches(paths: Iterator[str], size: int) -> Iterator[list[str]]:
    """Group a stream of paths into lists of `size` (the last one shorter)."""
    batch: list[str] = []
    for path in paths:
        batch.append(path)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def plan(known: int, exhausted: bool, max_workers: int, batch_size: int | None) -> tuple[int, int]:
    """(workers, batch size) for a campaign of which `known` simulations have been found so far.

    A small campaign gets only the workers it can keep busy (one per ~50 simulations), and batches
    small enough that every worker gets several, so one slow batch does not idle the others.
    """
    workers = max_workers if not exhausted else max(1, min(max_workers, known // MIN_SIMS_PER_WORKER))
    if batch_size is not None:
        size = max(1, batch_size)
    elif exhausted:
        size = max(MIN_BATCH, min(DEFAULT_BATCH, math.ceil(known / (workers * 4))))
    else:
        size = DEFAULT_BATCH
    return workers, size


class Progress:
    """A bar on a terminal; a log line every `interval` seconds otherwise (Slurm logs)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool = True, interval: float | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else float(os.environ.get("MDBATCH_PROGRESS_INTERVAL", "10"))
        self.started = time.monotonic()
        self.last = 0.0
        self.done = 0
        self.files = 0
        self.total: int | None = None

    def update(self, sims: int, files: int, total: int | None) -> None:
        self.done += sims
        self.files += files
        self.total = total
        now = time.monotonic()
        if not self.enabled:
            return
        if self.tty:
            if now - self.last >= 0.1 or (total is not None and self.done >= total):
                self.last = now
                self.stream.write("\r" + self._line(now, bar=True))
                self.stream.flush()
        elif now - self.last >= self.interval:
            self.last = now
            self.stream.write(self._line(now, bar=False) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.done:
            self.stream.write("\r" + self._line(time.monotonic(), bar=True) + "\n")
            self.stream.flush()

    def _line(self, now: float, bar: bool) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            head = f"[{'#' * int(frac * 30):<30}] " if bar else ""
            return f"{head}{self.label}: {self.done}/{self.total} simulations, {self.files} files, {rate:.0f} sims/s, ETA {eta:.0f}s"
        return f"{self.label}: {self.done} simulations, {self.files} files, {rate:.0f} sims/s (discovering)"


class Fanout:
    """A Dask client for one command: a LocalCluster it owns, or a connection to a running one."""

    def __init__(self, options: ClusterOptions, workers_needed: int | None = None, dashboard: bool = True) -> None:
        self.options = options
        self.workers_needed = workers_needed
        self.want_dashboard = dashboard if options.dashboard is None else options.dashboard
        self.client: Any = None
        self.cluster: Any = None
        self.dashboard_link: str | None = None
        self.n_workers = 0

    def __enter__(self) -> Fanout:
        try:
            self._start()
        except ClusterError:
            self.close()
            raise
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise ClusterError(f"cannot start or reach the Dask cluster: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        from distributed import Client

        opts = self.options
        if opts.scheduler or opts.scheduler_file:
            target = opts.scheduler or None
            try:
                if opts.scheduler_file:
                    if not os.path.exists(opts.scheduler_file):
                        raise ClusterError(f"scheduler file {opts.scheduler_file!r} does not exist")
                    self.client = Client(scheduler_file=opts.scheduler_file, timeout="30s")
                else:
                    self.client = Client(target, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"cannot reach the Dask scheduler {target or opts.scheduler_file}: {exc}") from exc
            self.n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        else:
            import dask
            from distributed import LocalCluster

            cores = os.cpu_count() or 1
            wanted = opts.workers or cores
            n = max(1, min(wanted, self.workers_needed or wanted))
            dash = opts.dashboard_address if self.want_dashboard and _have_bokeh() else None
            # Forked workers start in ~0.3 s and inherit the imported scan stack; spawned ones pay
            # ~3 s re-importing distributed and pyarrow. MDBATCH_MP_METHOD=spawn restores Dask's default.
            method = os.environ.get("MDBATCH_MP_METHOD", "fork")
            with dask.config.set({"distributed.worker.multiprocessing-method": method}):
                self.cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=dash,
                    silence_logs=logging.ERROR,
                    preload=["mdbatch.records"],
                )
            self.client = Client(self.cluster)
            self.n_workers = n
        if self.want_dashboard:
            self.dashboard_link = _dashboard(self.client)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def stream(
        self,
        fn: Callable[..., Any],
        groups: Iterable[list[str]],
        *args: Any,
        prefix: str = "scan",
        in_flight: int | None = None,
    ) -> Iterator[Any]:
        """Run `fn(group, *args, index=i)` for each group on the cluster, yielding results as they finish.

        At most `in_flight` tasks are outstanding (default: three per worker), so the client's
        memory does not grow with the campaign. Task keys read `scan-000042-<run>` on the dashboard.
        """
        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        limit = in_flight or max(2, 3 * self.n_workers)
        it = iter(groups)
        index = 0
        pending = as_completed()
        outstanding = 0

        def submit_next() -> bool:
            nonlocal index, outstanding
            group = next(it, None)
            if group is None:
                return False
            future = self.client.submit(fn, group, *args, index=index, key=f"{prefix}-{index:06d}-{token}", pure=False)
            pending.add(future)
            index += 1
            outstanding += 1
            return True

        while outstanding < limit and submit_next():
            pass
        for future in pending:
            outstanding -= 1
            try:
                result = future.result()
            finally:
                future.release()
            submit_next()
            yield result


def _have_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _dashboard(client: Any) -> str | None:
    try:
        link = client.dashboard_link
    except (AttributeError, KeyError):
        return None
    return str(link) if link else None
