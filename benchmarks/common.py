"""Shared helpers for mdbatch benchmarks: cached campaigns, page-cache eviction, timed runs, statistics.

Every benchmark (audit now; push, dedupe and incremental audits later) needs the same few things:
a generated campaign that is reused across runs when its parameters match, a way to make a run
"cold" by dropping the campaign's files from the page cache, a wall-clock timer around a
subprocess, and robust summaries of repeated samples. They live here so each benchmark script is
only its own plan of runs. Standard library only (plus `mdbatch generate` as a subprocess), so the
harness never times an import it did not mean to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

DEFAULT_WORKDIR = Path("/tmp/mdbatch-bench")
MANIFEST_NAME = "mdbatch-campaign.json"
SQLITE_SUFFIXES = ("", "-journal", "-wal", "-shm")


# --- campaigns ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """The parameters that determine a generated campaign's bytes (see `mdbatch generate`)."""

    profile: str  # metadata | bytes
    sims: int
    traj_mb: float | None = None  # bytes profile only
    seed: int = 0

    @property
    def key(self) -> str:
        """Directory name of the cached campaign: one per distinct parameter set."""
        traj = "" if self.traj_mb is None else f"-traj{self.traj_mb:g}mb"
        return f"{self.profile}-{self.sims}sims{traj}-seed{self.seed}"

    def generate_args(self) -> list[str]:
        args = ["--sims", str(self.sims), "--seed", str(self.seed), "--profile", self.profile]
        if self.traj_mb is not None:
            args += ["--traj-mb", f"{self.traj_mb:g}"]
        return args


@dataclass(frozen=True, slots=True)
class Campaign:
    """A generated campaign on disk and the totals its manifest records."""

    spec: CampaignSpec
    root: Path
    files: int
    bytes: int
    simulations: int
    generated_s: float | None  # None when reused from the cache

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self.spec)
        out.update(
            root=str(self.root),
            files=self.files,
            bytes=self.bytes,
            simulations=self.simulations,
            generated_s=self.generated_s,
            cached=self.generated_s is None,
        )
        return out


def mdbatch_command() -> list[str]:
    """How to invoke the `mdbatch` CLI: the console script next to this interpreter, else `-m mdbatch`."""
    script = Path(sys.executable).with_name("mdbatch")
    if script.exists():
        return [str(script)]
    found = shutil.which("mdbatch")
    return [found] if found else [sys.executable, "-m", "mdbatch"]


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _manifest_matches(manifest: Mapping[str, Any], spec: CampaignSpec) -> bool:
    params = manifest.get("parameters", {})
    return (
        params.get("sims") == spec.sims
        and params.get("seed") == spec.seed
        and params.get("profile") == spec.profile
        and (params.get("traj_mb") or None) == spec.traj_mb
        and not params.get("faults")
        and not params.get("hostile")
        and not params.get("nested")
    )


def ensure_campaign(workdir: str | os.PathLike[str], spec: CampaignSpec, *, log: Any = None) -> Campaign:
    """The campaign for `spec` under `workdir/campaigns/`, generated on first use and reused after.

    A campaign counts as cached only when its manifest (written last by the generator) exists and
    records the same parameters; a half-written one is removed and regenerated. Generation goes to
    a `.partial` directory renamed into place, so an interrupted run never leaves a fake cache hit.
    """
    base = Path(workdir) / "campaigns"
    base.mkdir(parents=True, exist_ok=True)
    root = base / spec.key
    manifest = _read_manifest(root)
    generated_s: float | None = None
    if manifest is None or not _manifest_matches(manifest, spec):
        partial = base / f"{spec.key}.partial"
        for stale in (root, partial):
            if stale.exists():
                shutil.rmtree(stale)
        if log is not None:
            log(f"generating {spec.key} ...")
        started = time.perf_counter()
        proc = subprocess.run(
            [*mdbatch_command(), "generate", str(partial), *spec.generate_args()],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mdbatch generate failed ({proc.returncode}): {proc.stderr.strip()}")
        os.replace(partial, root)
        generated_s = time.perf_counter() - started
        manifest = _read_manifest(root)
        if manifest is None:
            raise RuntimeError(f"{root}: generator wrote no readable {MANIFEST_NAME}")
        if log is not None:
            log(f"generated {spec.key} in {generated_s:.1f} s")
    return Campaign(spec, root, int(manifest["files"]), int(manifest["bytes"]), len(manifest["simulations"]), generated_s)


def regular_files(root: str | os.PathLike[str]) -> list[str]:
    """Every regular file below `root`, symlinks neither followed nor listed (what eviction touches)."""
    out: list[str] = []
    stack = [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    out.append(entry.path)
    return out


# --- page cache ---------------------------------------------------------------------------------


def evict_page_cache(paths: Iterable[str | os.PathLike[str]], *, sync: bool = True) -> dict[str, Any]:
    """Drop `paths` from the page cache with posix_fadvise(DONTNEED), as a cold cluster filesystem.

    Dirty pages cannot be dropped, so everything is flushed with os.sync() first. Only these files
    are evicted (not the interpreter or libraries, which a cluster node has locally), and only their
    data pages: dentries and inodes stay cached, so directory walks remain warm. Returns what was
    done: files evicted, files that could not be opened, and the seconds it took.
    """
    started = time.perf_counter()
    if sync:
        os.sync()
    evicted = failed = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            failed += 1
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            evicted += 1
        finally:
            os.close(fd)
    return {"files": evicted, "failed": failed, "seconds": round(time.perf_counter() - started, 3)}


def make_cold(paths: Sequence[str], *, verify_sample: int = 500, threshold: float = 0.01) -> dict[str, Any]:
    """Evict `paths` before a timed run, cheaply: fadvise alone, then check with mincore.

    A global os.sync() on a shared machine can take seconds (it flushes everyone's dirty pages), and
    the campaign's files are clean after the first sync, so it is only done when the check finds
    more than `threshold` of the sampled bytes still cached. The result records the residency left.
    """
    done = evict_page_cache(paths, sync=False)
    left = resident_fraction(paths, sample=verify_sample)
    synced = False
    if left is not None and left > threshold:
        done = evict_page_cache(paths, sync=True)
        left = resident_fraction(paths, sample=verify_sample)
        synced = True
    return {**done, "synced": synced, "resident_fraction_after": left}


_libc: Any = None


def _mincore_libc() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        _libc = libc
    return _libc


def resident_bytes(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(bytes of `path` in the page cache, file size), from mincore(2) on a read-only mapping."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        libc = _mincore_libc()
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed", os.fspath(path))
        try:
            page = mmap.PAGESIZE
            pages = (size + page - 1) // page
            vec = ctypes.create_string_buffer(pages)
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed", os.fspath(path))
            resident = sum(b & 1 for b in vec.raw)
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
        return min(resident * page, size), size
    finally:
        os.close(fd)


def resident_fraction(paths: Sequence[str], *, sample: int = 2000) -> float | None:
    """Fraction of the bytes of (an evenly spread sample of) `paths` that is in the page cache."""
    if not paths:
        return None
    step = max(1, len(paths) // sample)
    cached = total = 0
    for path in paths[::step]:
        try:
            res, size = resident_bytes(path)
        except OSError:
            continue
        cached += res
        total += size
    return round(cached / total, 4) if total else None


# --- timed runs ---------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """One timed subprocess run: wall seconds, CPU seconds, exit code and captured output.

    `cpu_s` is user + system time of the process and every descendant it waited for (Dask workers,
    xargs' xxhsum processes): on a shared machine it moves far less than wall time.
    """

    argv: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_timed(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None, ok_codes: Iterable[int] = (0,)
) -> RunResult:
    """Run `argv` and time it with a monotonic clock from fork to exit (start-up included), and
    count the CPU time it and its descendants used.

    Raises RuntimeError when the exit code is not in `ok_codes`, with the end of its stderr.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in set(ok_codes):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {tail}")
    return RunResult(list(argv), seconds, proc.returncode, proc.stdout, proc.stderr, cpu_s=cpu)


def remove_sqlite(path: str | os.PathLike[str]) -> None:
    """Delete a SQLite database and its journal/WAL/SHM files (their pages leave the cache with them)."""
    for suffix in SQLITE_SUFFIXES:
        try:
            os.remove(f"{os.fspath(path)}{suffix}")
        except FileNotFoundError:
            pass


# --- statistics and reporting -------------------------------------------------------------------


def describe(samples: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min, max and every sample (rounded), the shape every benchmark reports."""
    if not samples:
        return {"n": 0, "median_s": None, "min_s": None, "max_s": None, "samples_s": []}
    return {
        "n": len(samples),
        "median_s": round(statistics.median(samples), digits),
        "min_s": round(min(samples), digits),
        "max_s": round(max(samples), digits),
        "samples_s": [round(s, digits) for s in samples],
    }


def median_index(samples: Sequence[float]) -> int:
    """Index of the sample at the (lower) median, to pick the run whose details get reported."""
    order = sorted(range(len(samples)), key=samples.__getitem__)
    return order[(len(order) - 1) // 2]


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def check_target(value: float | None, op: str, bound: float) -> dict[str, Any]:
    """A target as reported: value, the bound it must meet (`>=` or `<=`), and whether it does."""
    if value is None:
        passed = None
    else:
        passed = value >= bound if op == ">=" else value <= bound
    return {"value": value, "target": f"{op} {bound:g}", "pass": passed}


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _tool_version(argv: Sequence[str]) -> str | None:
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else None


def _meminfo_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info(extra_packages: Iterable[str] = ()) -> dict[str, Any]:
    """Where the numbers came from: cores, memory, load, interpreter and package versions."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    packages = ("mdbatch", "dask", "distributed", "pyarrow", "pandas", "xxhash", "sqlalchemy", *extra_packages)
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gb": _meminfo_gb(),
        "loadavg_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in packages},
        "xxhsum": _tool_version(["xxhsum", "--version"]),
    }


def source_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The git commit the measured code came from, and how many files differ from it (others edit concurrently)."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", os.fspath(path), *args], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_head": git("rev-parse", "--short", "HEAD"), "modified_tracked_files": None if status is None else len(status.splitlines())}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def emit_json(doc: Any, json_out: str | os.PathLike[str] | None) -> None:
    """The benchmark's result: one JSON document on stdout, and also at `json_out` when given."""
    text = json.dumps(doc, indent=2)
    print(text)
    if json_out:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def stderr_log(message: str) -> None:
    """Progress lines go to stderr so stdout stays one JSON document."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
