"""The only module that talks to Dask: cluster choice, batching, named tasks, streaming results.

Batches are formed from the discovery stream as it goes and submitted with backpressure (a few
batches in flight per worker), so the client never builds a per-simulation task list and never
holds more than a handful of results; each result is handed to the caller as soon as it arrives.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol, runtime_checkable

from .errors import ClusterError
from .lifecycle import STOP

log = logging.getLogger("mdbatch")

#: Simulations per task for small-file campaigns: ~1 s of work per task, ~4,000 tasks at 1M sims.
DEFAULT_BATCH = 250
MIN_BATCH = 8
MIN_SIMS_PER_WORKER = 50


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """Where the fan-out runs: a LocalCluster sized to the machine, a Slurm cluster through
    dask-jobqueue, or a running scheduler (address or scheduler file)."""

    kind: str = "local"  # local | slurm
    workers: int | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    #: True/False force the dashboard on/off; None starts it only for campaigns big enough to watch.
    dashboard: bool | None = None
    dashboard_address: str = ":8787"
    # Slurm (dask-jobqueue SLURMCluster); None means "from the jobqueue YAML / Dask config".
    jobs: int | None = None
    min_jobs: int | None = None
    max_jobs: int | None = None
    cores: int | None = None
    processes: int | None = None
    memory: str | None = None
    walltime: str | None = None
    partition: str | None = None
    account: str | None = None
    job_extra: tuple[str, ...] = ()
    interface: str | None = None
    jobqueue_config: str | None = None
    worker_timeout_s: float = 600.0
    performance_report: str | None = None


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


#: Campaigns with more simulations than this get the Dask dashboard unless told otherwise.
DASHBOARD_THRESHOLD = 10_000


@dataclass(slots=True)
class Peek:
    """The start of a discovery stream, and the cluster and batch size it calls for."""

    head: list[str]
    #: Whether the stream ended within the head: the whole campaign is known before any work starts.
    exhausted: bool
    workers: int
    batch_size: int
    elapsed_s: float

    def paths(self, rest: Iterator[str]) -> Iterator[str]:
        """The peeked paths, then the rest of the stream."""
        yield from self.head
        yield from rest


def peek(stream: Iterator[str], options: ClusterOptions, batch_size: int | None) -> Peek:
    """Read the start of `stream`: a campaign that ends within it gets a right-sized cluster and no
    dashboard (a run of a few seconds is not watched; --dashboard forces one)."""
    cores = options.workers or os.cpu_count() or 1
    limit = max(cores * 2 * (batch_size or DEFAULT_BATCH), DASHBOARD_THRESHOLD)
    started = time.monotonic()
    head = list(itertools.islice(stream, limit + 1))
    exhausted = len(head) <= limit
    workers, size = plan(len(head), exhausted, cores, batch_size)
    return Peek(head, exhausted, workers, size, time.monotonic() - started)


class Progress:
    """A bar on a terminal; a log line every `interval` seconds otherwise (Slurm logs)."""

    def __init__(self, label: str, *, stream: IO[str] | None = None, enabled: bool = True, interval: float | None = None) -> None:
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


@runtime_checkable
class Work(Protocol):
    """What `Fanout.stream` runs: `take` gives the next item, or None when there is none now. The
    stream asks again after each result is handled, so results may add work (follow-ups the caller
    owns); it ends when `take` gives None and nothing is in flight."""

    def take(self) -> Any | None: ...


class Items:
    """A plain iterable as `Work` (nothing is added later)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = iter(items)

    def take(self) -> Any | None:
        return next(self._items, None)


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
        self._workers = 0
        self._workers_at = 0.0

    def __enter__(self) -> Fanout:
        try:
            self._start()
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise ClusterError(f"cannot start or reach the Dask cluster: {exc}") from exc
        except BaseException:  # a ClusterError, or a stop signal while workers start: leave nothing running
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        from distributed import Client

        opts = self.options
        if opts.kind == "slurm":
            self._start_slurm()
        elif opts.scheduler or opts.scheduler_file:
            target = opts.scheduler or None
            try:
                if opts.scheduler_file:
                    target = _scheduler_address(opts.scheduler_file)
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
            # Forked workers start in ~0.3 s and inherit the imported scan stack; spawned ones pay
            # ~3 s re-importing distributed and pyarrow. MDBATCH_MP_METHOD=spawn restores Dask's default.
            method = os.environ.get("MDBATCH_MP_METHOD", "fork")
            _workers_die_with_client()
            with dask.config.set({"distributed.worker.multiprocessing-method": method}):
                self.cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    # A worker's own log lines (e.g. a heartbeat failing while the cluster shuts down after
                    # a stop signal) are noise to the user: task errors reach the client as exceptions.
                    silence_logs=logging.ERROR if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL,
                    preload=["mdbatch.batch", "mdbatch.engine"],
                    scheduler_kwargs=_dashboard_options(self.want_dashboard and _have_bokeh(), opts.dashboard_address),
                )
            self.client = Client(self.cluster)
            self.n_workers = n
        if self.want_dashboard:
            self.dashboard_link = _dashboard(self.client)

    def _start_slurm(self) -> None:
        """SLURMCluster from dask-jobqueue: defaults from the jobqueue YAML, overridden by options."""
        import dask
        from distributed import Client

        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise ClusterError("--cluster slurm needs dask-jobqueue: pip install 'mdbatch[slurm]'") from exc
        opts = self.options
        path = opts.jobqueue_config or os.environ.get("MDBATCH_JOBQUEUE_CONFIG")
        if path:
            load_jobqueue_config(path)
        kwargs: dict[str, Any] = {
            key: value
            for key, value in {
                "cores": opts.cores,
                "processes": opts.processes,
                "memory": opts.memory,
                "walltime": opts.walltime,
                "queue": opts.partition,
                "account": opts.account,
                "interface": opts.interface,
            }.items()
            if value is not None
        }
        if opts.job_extra:
            kwargs["job_extra_directives"] = list(opts.job_extra)
        cfg = dask.config.get("jobqueue.slurm", {})
        kwargs.setdefault("cores", cfg.get("cores") or 1)
        kwargs.setdefault("memory", cfg.get("memory") or "2GB")
        if kwargs.get("interface") is None and cfg.get("interface") is None:
            # Workers must reach the scheduler: bind it where this host is reachable.
            kwargs["scheduler_options"] = {"host": os.environ.get("MDBATCH_SCHEDULER_HOST", "127.0.0.1")}
        want_dash = self.want_dashboard and _have_bokeh()
        kwargs["scheduler_options"] = {**kwargs.get("scheduler_options", {}), **_dashboard_options(want_dash, opts.dashboard_address)}
        try:
            self.cluster = SLURMCluster(silence_logs="error", **kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ClusterError(f"cannot configure the Slurm cluster: {exc}") from exc
        if opts.min_jobs is not None or opts.max_jobs is not None:
            self.cluster.adapt(minimum_jobs=opts.min_jobs or 1, maximum_jobs=max(opts.max_jobs or 1, opts.min_jobs or 1))
            first = opts.min_jobs or 1
        else:
            first = opts.jobs or 1
            self.cluster.scale(jobs=first)
        self.client = Client(self.cluster)
        per_job = int(self.cluster._dummy_job.worker_processes) if hasattr(self.cluster, "_dummy_job") else 1
        log.info("mdbatch: submitted %d Slurm job(s); waiting for workers", first)
        try:
            self.client.wait_for_workers(1, timeout=opts.worker_timeout_s)
        except TimeoutError as exc:
            raise ClusterError(
                f"no Slurm worker connected within {opts.worker_timeout_s:.0f}s: check squeue, the partition/account and the job logs"
            ) from exc
        self.n_workers = max(1, first * per_job)

    def performance_report(self) -> Any:
        """Dask's performance report around the run when asked for, else a no-op context."""
        import contextlib

        if not self.options.performance_report:
            return contextlib.nullcontext()
        from distributed import performance_report

        return performance_report(filename=self.options.performance_report)

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
        work: Work | Iterable[Any],
        *args: Any,
        prefix: str = "scan",
        in_flight: int | None = None,
    ) -> Iterator[Any]:
        """Run `fn(item, *args, index=i)` for each item of `work` on the cluster, yielding results as they finish.

        At most `in_flight` tasks are outstanding (default: three per worker, following the workers
        as they join and leave a running cluster), so the client's memory does not grow with the
        campaign. `work` is asked for more (`Work.take`) after each result has been handled, so
        handling a result may add follow-up work; the stream ends when `take` gives None and
        nothing is in flight. Task keys read `scan-000042-<run>` on the
        dashboard. If the iteration is interrupted (a signal raising in the client), :meth:`drain`
        hands back the results that had already completed.
        """
        from distributed import as_completed

        source = work if isinstance(work, Work) else Items(work)
        token = uuid.uuid4().hex[:8]
        index = 0
        self._pending = as_completed()

        def limit() -> int:
            return in_flight or max(2, 3 * self.workers_now())

        def submit_next() -> bool:
            nonlocal index
            item = source.take()
            if item is None:
                return False
            # Dask wraps whatever is raised while it serializes a task (a stop signal too) in its own
            # TypeError: a signal here is raised once the task is submitted, as Interrupted.
            with STOP.deferred():
                future = self.client.submit(fn, item, *args, index=index, key=f"{prefix}-{index:06d}-{token}", pure=False)
                self._pending.add(future)
            index += 1
            return True

        while self._pending.count() < limit() and submit_next():
            pass
        for future in self._pending:
            with STOP.deferred():  # fetching and deserializing a result: not cut by a stop signal either
                try:
                    result = future.result()
                finally:
                    future.release()
            yield result
            # Handling the result may have given `work` more to run (follow-ups): top the queue up.
            while self._pending.count() < limit() and submit_next():
                pass

    def workers_now(self) -> int:
        """The workers the scheduler has now (at least 1), looked up at most once a second; the
        most ever seen is kept in `n_workers` (workers of an allocation join after the client)."""
        now = time.monotonic()
        if now - self._workers_at >= 1.0 and self.client is not None:
            self._workers_at = now
            with STOP.deferred():
                self._workers = max(1, len(self.client.scheduler_info().get("workers", {})))
            self.n_workers = max(self.n_workers, self._workers)
        return self._workers or max(1, self.n_workers)

    def drain(self) -> Iterator[Any]:
        """Results of tasks that already finished; everything still queued or running is cancelled."""
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        futures = list(pending.futures)
        pending.clear()
        for future in futures:
            if future.status == "finished":
                try:
                    yield future.result(timeout=30)
                finally:
                    future.release()
            else:
                future.cancel()


#: What a local Dask cluster costs before it does any work on this kind of machine: importing
#: distributed (~0.35 s), starting the cluster (~0.35 s) and closing it (~0.2 s).
CLUSTER_START_S = 0.9


def inline_is_faster(options: ClusterOptions, estimate_s: float) -> bool:
    """Whether `estimate_s` seconds of serial work finish sooner in this process than on a local
    cluster that must first start (the default local cluster only: explicit workers, a scheduler,
    Slurm, a dashboard or a performance report always get Dask)."""
    if options.kind != "local" or options.workers or options.scheduler or options.scheduler_file:
        return False
    if options.dashboard or options.performance_report:
        return False
    cores = os.cpu_count() or 1
    return estimate_s * (1 - 1 / cores) < CLUSTER_START_S


class Inline:
    """Work run in this process, one item at a time: the `Fanout` interface without a cluster, for
    work smaller than a cluster's start-up (see `inline_is_faster`)."""

    n_workers = 1
    dashboard_link: str | None = None

    def __enter__(self) -> Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def performance_report(self) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def stream(
        self, fn: Callable[..., Any], work: Work | Iterable[Any], *args: Any, prefix: str = "scan", in_flight: int | None = None
    ) -> Iterator[Any]:
        """Run `fn(item, *args, index=i)` for each item of `work` here, yielding each result (the
        next item is taken after the result has been handled, as `Fanout.stream` does)."""
        source = work if isinstance(work, Work) else Items(work)
        index = 0
        while (item := source.take()) is not None:
            yield fn(item, *args, index=index)
            index += 1

    def drain(self) -> Iterator[Any]:
        """Nothing runs but the item in hand: there is nothing to drain."""
        return iter(())


def load_jobqueue_config(path: str) -> None:
    """Merge a jobqueue-style YAML (`jobqueue: slurm: ...`) into the Dask config."""
    import dask
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"cannot read jobqueue config {path!r}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ClusterError(f"jobqueue config {path!r} is not a mapping")
    dask.config.update(dask.config.config, doc, priority="new")


#: Environment variable naming the client process a local cluster's workers must not outlive.
CLIENT_PID_ENV = "MDBATCH_CLIENT_PID"
_PR_SET_PDEATHSIG = 1


_fork_parent = 0
_fork_hooks = False


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the thread that forked it ends (PR_SET_PDEATHSIG),
    and exit at once if `parent` is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            log.debug("mdbatch: cannot set the parent-death signal of %s", os.getpid())
    if os.getppid() != parent:
        os._exit(1)


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()


def _after_fork_in_child() -> None:
    _die_with_parent(_fork_parent)


def _workers_die_with_client() -> None:
    """Every process this client forks from now on (LocalCluster workers) dies with it, even by SIGKILL:
    the first thing a forked child does is ask for its parent's death signal."""
    global _fork_hooks
    if not _fork_hooks and sys.platform.startswith("linux"):
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _fork_hooks = True
    os.environ[CLIENT_PID_ENV] = str(os.getpid())


def dask_setup(worker: Any) -> None:
    """Worker preload (local clusters): die with the client process. Forked workers already did (see
    `_workers_die_with_client`); this covers spawned ones (MDBATCH_MP_METHOD=spawn)."""
    expected = os.environ.get(CLIENT_PID_ENV, "")
    if expected.isdigit():
        _die_with_parent(int(expected))


def _dashboard_options(wanted: bool, address: str) -> dict[str, Any]:
    """Scheduler options for the dashboard: none at all when not wanted (only a loopback health port
    that no one else can hold), else `address`, or a free port when its port is taken."""
    if not wanted:
        return {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    host, _, port = address.rpartition(":")
    if port.isdigit() and not _port_free(host or "0.0.0.0", int(port)):
        address = f"{host}:0"
    return {"dashboard": True, "dashboard_address": address}


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _have_bokeh() -> bool:
    """Whether the dashboard can be served (it needs bokeh), without paying bokeh's import here."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client: Any) -> str | None:
    try:
        link = client.dashboard_link
    except (AttributeError, KeyError):
        return None
    return str(link) if link else None


def _scheduler_address(path: str) -> str:
    """The scheduler address in a Dask scheduler file (what `dask scheduler --scheduler-file` writes)."""
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except FileNotFoundError:
        raise ClusterError(f"scheduler file {path!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"scheduler file {path!r} cannot be read as JSON: {exc}") from exc
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address:
        raise ClusterError(f'scheduler file {path!r} names no scheduler address (expected JSON with an "address")')
    return address
