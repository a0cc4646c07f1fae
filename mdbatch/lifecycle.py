"""One run's lifecycle, shared by every command that records a run (audit, push, dedupe).

A run is a row of MDBATCH_RUNS: it is recorded `running` with its host, pid and a heartbeat before
any work starts, its progress is written in the same transactions as its work, a thread keeps the
heartbeat fresh while nothing else is written, and it ends `completed`, `interrupted`, `failed` or
`refused`. A run whose process died without ending it (SIGKILL, node lost) is marked `abandoned` by
the next command that opens the catalog: at once on the same host (its process is gone), after
ABANDON_AFTER_S without a heartbeat from another host.

Signals: SIGTERM and SIGUSR1 (what Slurm sends before the walltime) become `Interrupted` from the
first instant of the process (`STOP.install()` is the CLI's first statement). Code that must not be
cut in two (a batch's write and its bookkeeping, recording the run's end) runs inside
`STOP.deferred()`, where a signal is only noted, and raised when the section ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import CatalogDamagedError, Interrupted, MdbatchError, RefusedError

if TYPE_CHECKING:
    from .catalog.base import CatalogBackend
    from .catalog.ops import Op

log = logging.getLogger("mdbatch")

#: Seconds between heartbeats while a run writes nothing else.
HEARTBEAT_S = 30.0
#: A running run on another host whose heartbeat is older than this is abandoned (20 heartbeats).
ABANDON_AFTER_S = 600.0
#: The signals that stop a run gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def new_run_id(prefix: str = "") -> str:
    """Sortable, unique run id: UTC timestamp plus a random suffix (`prefix` first, e.g. 'gc-')."""
    return f"{prefix}{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Stop:
    """The process's graceful-stop signals: noted, and raised as `Interrupted` where it is safe."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._raised = False
        self._depth = 0
        self._owner = os.getpid()
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> bool:
        """Handle STOP_SIGNALS from now on; whether this call installed them (False when they
        already were, or outside the main thread, where the default action stands)."""
        if self._previous:
            return False
        self._owner = os.getpid()
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return bool(self._previous)

    def uninstall(self) -> None:
        """Restore the dispositions `install` replaced, and forget any request."""
        for sig, old in self._previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, old)
        self._previous.clear()
        self.reset()

    def reset(self) -> None:
        """Forget a request already acted on (the next run in this process starts afresh)."""
        self.requested = None
        self._raised = False
        self._depth = 0

    def _handle(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self._owner:
            # A forked child (a Dask worker) inherited this handler: behave as the default would.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        self.check()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section a signal must not cut: the signal is raised when the outermost one ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.check()

    def check(self) -> None:
        """Raise `Interrupted` once if a stop was requested and no deferred section is open.

        Once raised, later signals and checks only note the request: the run is already stopping
        (writing what completed, recording its end), and that must not be cut either.
        """
        if self.requested is not None and self._depth == 0 and not self._raised:
            self._raised = True
            raise Interrupted(f"stopped by {self.requested}")


#: The one Stop of this process.
STOP = Stop()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class RunRecord:
    """One run's row in MDBATCH_RUNS, from `begin` (or `resume`) to `finish`."""

    catalog: CatalogBackend
    run_id: str
    command: str
    root: str | None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    _beat: threading.Thread | None = None
    _stop_beat: threading.Event = field(default_factory=threading.Event)
    _url: str | None = None

    @classmethod
    def start(
        cls,
        catalog: CatalogBackend,
        command: str,
        root: str | None,
        arguments: Mapping[str, Any] | None = None,
        *,
        exclusive: bool = False,
        url: str | None = None,
        prefix: str = "",
    ) -> RunRecord:
        """Record a new run as `running` (after marking dead runs abandoned) and start its heartbeat.

        With `exclusive`, a run of the same command and root already running elsewhere makes this one
        `refused` (RefusedError): two audits of one root at once would each record the other's
        simulations as removed.
        """
        from .catalog.writes import run_row
        from .version import __version__

        reap_abandoned(catalog)
        record = cls(catalog, new_run_id(prefix), command, root, dict(arguments or {}), _url=url)
        catalog.apply(
            [
                run_row(
                    record.run_id,
                    command,
                    root,
                    arguments=_arguments_json(record.arguments),
                    host=record.host,
                    pid=record.pid,
                    job=batch_job(),
                    version=__version__,
                    catalog=catalog.display_url,
                    heartbeat_at=_now(),
                )
            ]
        )
        if exclusive:
            record._refuse_if_concurrent()
        record._start_heartbeat()
        return record

    @classmethod
    def resume(cls, catalog: CatalogBackend, run_id: str, command: str, root: str | None, *, url: str | None = None) -> RunRecord:
        """Take over an unfinished run: `running` again, under this process, with a heartbeat."""
        reap_abandoned(catalog)
        record = cls(catalog, run_id, command, root, _url=url)
        values = {"status": "running", "host": record.host, "pid": record.pid, "ended_at": None, "heartbeat_at": _now(), "job": batch_job()}
        catalog.apply([record._row_update(values)])
        record._refuse_if_concurrent()
        record._start_heartbeat()
        return record

    def progress_op(self, summary: Mapping[str, Any] | None = None) -> Op:
        """An operation to write with the run's work: heartbeat and, if given, the summary so far
        (so a run killed at any instant has a summary that matches what it committed)."""
        values: dict[str, Any] = {"heartbeat_at": _now()}
        if summary is not None:
            values["summary"] = json.dumps(summary, default=str)
        return self._row_update(values)

    def finish(self, status: str, summary: Mapping[str, Any], extra: list[Op] | None = None) -> None:
        """Record the run's end (`extra` operations in the same transaction) and stop the heartbeat."""
        self.stop_heartbeat()
        values = {"status": status, "ended_at": _now(), "heartbeat_at": _now(), "summary": json.dumps(summary, default=str)}
        with STOP.deferred():
            self.catalog.apply([*(extra or []), self._row_update(values)])

    def stop_heartbeat(self) -> None:
        self._stop_beat.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
            self._beat = None

    def _row_update(self, values: Mapping[str, Any]) -> Op:
        from .catalog import schema
        from .catalog.ops import Update, rows_table

        return Update(schema.RUNS.name, rows_table(schema.RUNS, [{"run_id": self.run_id, **values}]))

    def _refuse_if_concurrent(self) -> None:
        """Refuse this run if an older run of the same command and root is still running."""
        from .catalog import schema

        mine = None
        others = []
        for chunk in self.catalog.iter_rows(
            schema.RUNS.name, {"status": "running", "command": self.command}, ["run_id", "root", "started_at", "host", "pid"]
        ):
            for row in chunk.to_pylist():
                if row["run_id"] == self.run_id:
                    mine = row
                elif row["root"] == self.root:
                    others.append(row)
        first = [o for o in others if mine is None or (o["started_at"], o["run_id"]) < (mine["started_at"], mine["run_id"])]
        if not first:
            return
        other = first[0]
        message = (
            f"another {self.command} of {self.root} is running (run {other['run_id']}, pid {other['pid']} on "
            f"{other['host']}); wait for it to end, or stop it and resume it with --resume {other['run_id']}"
        )
        self.finish("refused", {"run_id": self.run_id, "outcome": "refused", "root": self.root, "reason": message})
        raise RefusedError(message, self.run_id)

    def _start_heartbeat(self) -> None:
        if self._url is None:
            return
        self._beat = threading.Thread(target=self._heartbeat, name="mdbatch-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        """Refresh heartbeat_at every HEARTBEAT_S through a connection of its own until stopped."""
        from .catalog import open_catalog

        try:
            catalog = open_catalog(self._url)
        except MdbatchError as exc:
            log.debug("heartbeat: cannot open the catalog: %s", exc)
            return
        try:
            while not self._stop_beat.wait(HEARTBEAT_S):
                try:
                    catalog.apply([self._row_update({"heartbeat_at": _now()})])
                except MdbatchError as exc:  # a missed beat is not fatal; the run's own writes beat too
                    log.debug("heartbeat failed: %s", exc)
        finally:
            catalog.close()


def _arguments_json(arguments: Mapping[str, Any]) -> str:
    from .config import redact

    clean = {k: redact(v) if isinstance(v, str) else v for k, v in arguments.items() if k not in ("func",)}
    return json.dumps(clean, default=str)


def batch_job() -> str | None:
    """This process's Slurm job and leg (`slurm:<job id>:<restart count>`), None outside a job."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm:{job}:{os.environ.get('SLURM_RESTART_COUNT') or 0}" if job else None


def _leg(job: str | None) -> tuple[str, int] | None:
    parts = (job or "").split(":")
    return (parts[1], int(parts[2])) if len(parts) == 3 and parts[0] == "slurm" and parts[2].isdigit() else None


def _earlier_leg(recorded: str | None, current: str | None) -> bool:
    """Whether `recorded` is an earlier leg of the job `current` is a leg of (a requeued job runs one leg at a time)."""
    before, now = _leg(recorded), _leg(current)
    return before is not None and now is not None and before[0] == now[0] and before[1] < now[1]


def process_gone(pid: int | None) -> bool:
    """Whether process `pid` of this host is gone (a zombie counts as gone: it runs nothing)."""
    if not pid or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def abandoned_reason(row: Mapping[str, Any], host: str, now: datetime) -> str | None:
    """Why a `running` run (a MDBATCH_RUNS row) is abandoned, or None while it may be alive."""
    beat = row.get("heartbeat_at") or row.get("started_at")
    silent = (now - beat).total_seconds() if isinstance(beat, datetime) else None
    if row.get("host") == host and process_gone(row.get("pid")):
        return f"its process {row.get('pid')} on {host} is gone"
    if _earlier_leg(row.get("job"), batch_job()):
        return f"it ran in an earlier leg of this batch job ({row.get('job')})"
    if silent is not None and silent > ABANDON_AFTER_S:
        return f"no heartbeat from {row.get('host')} for {silent:.0f}s (more than {ABANDON_AFTER_S:.0f}s)"
    return None


def reap_abandoned(catalog: CatalogBackend) -> list[str]:
    """Mark `running` runs whose process is gone `abandoned`; their ids.

    Only on a catalog of the current schema (a reading command does not migrate an old one).
    """
    from .catalog import schema

    if catalog.schema_version() != schema.SCHEMA_VERSION:
        return []
    now = _now()
    host = socket.gethostname()
    ops = []
    ids = []
    columns = ["run_id", "host", "pid", "started_at", "heartbeat_at", "summary", "job"]
    for chunk in catalog.iter_rows(schema.RUNS.name, {"status": "running"}, columns):
        for row in chunk.to_pylist():
            reason = abandoned_reason(row, host, now)
            if reason is None:
                continue
            summary = _json(row.get("summary"))
            summary.update({"outcome": "abandoned", "abandoned": {"reason": reason, "detected_at": now.isoformat(), "detected_by": host}})
            ended = row.get("heartbeat_at") or row.get("started_at") or now
            record = RunRecord(catalog, row["run_id"], "", None)
            ops.append(record._row_update({"status": "abandoned", "ended_at": ended, "summary": json.dumps(summary, default=str)}))
            ids.append(row["run_id"])
    if ops:
        catalog.apply(ops)
        for run_id in ids:
            log.info("mdbatch: run %s was abandoned (its process is gone); marked abandoned", run_id)
    return ids


def open_catalog_for_command(url: str | None = None, *, must_exist: bool = False) -> CatalogBackend:
    """The catalog a command works on: an older schema migrated (before columns it lacks are read),
    and runs whose process died marked abandoned (a catalog this process may not write to is read
    as it is)."""
    from .catalog import open_catalog, schema

    catalog = open_catalog(url, must_exist=must_exist)
    try:
        version = catalog.schema_version()
        if version is not None and version < schema.SCHEMA_VERSION:
            catalog.init_schema()
        reap_abandoned(catalog)
    except CatalogDamagedError:
        catalog.close()
        raise
    except MdbatchError as exc:
        log.debug("mdbatch: cannot migrate or mark abandoned runs in %s: %s", catalog.display_url, exc)
    return catalog


def _json(text: Any) -> dict[str, Any]:
    if isinstance(text, str) and text:
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


__all__ = [
    "ABANDON_AFTER_S",
    "HEARTBEAT_S",
    "STOP",
    "RunRecord",
    "Stop",
    "abandoned_reason",
    "new_run_id",
    "open_catalog_for_command",
    "process_gone",
    "reap_abandoned",
]
