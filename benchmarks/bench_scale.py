"""Scaling curve of `mdbatch audit`: 1,000 / 10,000 / 100,000 small-file simulations.

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--repeat N] [--max-extra N]
        [--interleave] [--nice N] [--src DIR] [--workdir /tmp/mdbatch-scale] [--seed S]
        [--json-out FILE] [--keep] [--keep-db] [--cprofile]

For each size: a campaign from `mdbatch generate --sims N --seed S` (metadata profile, ~16 small
files per simulation), cached under WORKDIR/campaigns keyed by its parameters; one untimed read of
every file (`find | xargs cat`) so the page cache is warm, re-done before a run when a sample shows
less than 95% of the campaign's bytes resident; then `--repeat` timed runs of

    mdbatch audit ROOT --db sqlite:///FRESH.db --quiet --json SUMMARY.json

each as a subprocess timed from fork to reap (interpreter, imports, cluster start and close
included), with a fresh SQLite database every run. When the wall times of a size spread by more
than 15% (the machine is shared), up to `--max-extra` more runs are made; medians are reported.
`--interleave` runs the sizes in rounds (10k, 100k, 10k, 100k, ...) and adds the median of the
per-round 100k/10k throughput ratios: on a shared machine the load others put on it changes over
minutes, and only runs close together in time are comparable. `--nice -10` (root) gives the audit
the CPU first when other jobs compete; `--src DIR` runs a pinned source tree (PYTHONPATH) while the
checkout keeps changing.

Measured per run, without touching mdbatch: wall seconds, simulations/s and files/s; the client
process's peak RSS (VmHWM of the audit's own pid, polled from /proc every 0.25 s; the client hosts
the Dask scheduler too) and, cross-checking it, ru_maxrss from wait4 (max over the client and the
descendants it reaped); the workers' and nannies' peak RSS (VmHWM of every descendant, found by
parent pid); the client's and the workers' CPU seconds; the workers' storage reads (campaign bytes
the page cache did not hold) and the client's storage writes (the catalog, WAL included), from
/proc/<pid>/io; the CPU the rest of the machine used meanwhile (from /proc/stat, to spot contended
runs); the scheduler task count (the summary's `batches`, checked
against ceil(simulations / batch_size)) and the summary's timings. After the first run of each
size the catalog's row counts give the catalog write rate (rows / catalog_write_s). A walk-only
subprocess times `mdbatch.discover.walk_root` alone. `--cprofile` adds one untimed cProfile run of
the largest size's client and reports where its time went.

Prints one JSON document on stdout (progress on stderr): per-size medians and samples, and the two
targets: throughput at 100,000 >= 0.8 x throughput at 10,000, client peak RSS at 100,000 < 1.5 GB.
Campaigns larger than 10,000 simulations are deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # the benchmarks directory is not a package
    CampaignSpec,
    check_target,
    emit_json,
    ensure_campaign,
    machine_info,
    mdbatch_command,
    remove_sqlite,
    resident_fraction,
    stderr_log,
)

DEFAULT_WORKDIR = Path("/tmp/mdbatch-scale")
DEFAULT_SIZES = (1_000, 10_000, 100_000)
POLL_S = 0.25
SPREAD_LIMIT = 0.15  # (max - min) / median of wall times above which another run is made
RESIDENT_MIN = 0.95
RSS_TARGET_BYTES = 1.5e9
RATIO_TARGET = 0.8
KEEP_BY_DEFAULT = 10_000  # campaigns up to this size stay cached; larger ones are deleted unless --keep
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc sampling -------------------------------------------------------------------------------


def _status_kb(pid: int, fields: tuple[str, ...] = ("VmHWM", "VmRSS")) -> dict[str, int]:
    """Memory fields of /proc/<pid>/status in kB ({} once the process is gone or a zombie)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in fields:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used so far) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            rest = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    try:
        return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (IndexError, ValueError):
        return None


def _io_bytes(pid: int) -> tuple[int, int] | None:
    """(bytes read from storage, bytes written to storage) by a process: page-cache hits are not counted."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as handle:
            fields = dict(line.split(": ") for line in handle.read().splitlines())
        return int(fields["read_bytes"]), int(fields["write_bytes"])
    except (OSError, ValueError, KeyError):
        return None


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process (no /proc/<pid>/task/*/children on this kernel)."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = st[0]
    return out


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        parts = [int(x) for x in handle.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


class TreeSampler(threading.Thread):
    """Polls VmHWM/VmRSS and CPU of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = POLL_S) -> None:
        super().__init__(daemon=True, name="tree-sampler")
        self.pid = pid
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_kb: dict[int, int] = {}  # pid -> highest VmHWM seen
        self.depth: dict[int, int] = {pid: 0}
        self.cpu_s: dict[int, float] = {}
        self.io: dict[int, tuple[int, int]] = {}
        self.series: list[tuple[float, int]] = []  # (seconds since start, client VmRSS kB)
        self.started = time.perf_counter()

    def run(self) -> None:
        tick = 0
        while not self.stop_event.is_set():
            if tick % 2 == 0:
                self._find_descendants()
            for pid in list(self.depth):
                mem = _status_kb(pid)
                if "VmHWM" in mem:
                    self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), mem["VmHWM"])
                st = _stat(pid)
                if st is not None and mem:
                    self.cpu_s[pid] = st[1]
                    io = _io_bytes(pid)
                    if io is not None:
                        self.io[pid] = io
                if pid == self.pid and "VmRSS" in mem and tick % 8 == 0:
                    self.series.append((round(time.perf_counter() - self.started, 1), mem["VmRSS"]))
            tick += 1
            self.stop_event.wait(self.interval)

    def _find_descendants(self) -> None:
        parents = _parents()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        frontier = [self.pid]
        while frontier:
            pid = frontier.pop()
            for child in children.get(pid, []):
                if child not in self.depth:
                    self.depth[child] = self.depth[pid] + 1
                frontier.append(child)

    def report(self) -> dict[str, Any]:
        mb = 1024.0
        client_kb = self.peak_kb.get(self.pid)
        by_depth: dict[int, list[int]] = {}
        for pid, depth in self.depth.items():
            if pid != self.pid and pid in self.peak_kb:
                by_depth.setdefault(depth, []).append(self.peak_kb[pid])
        # A LocalCluster's nannies live in the client process; each forks its worker (depth 1).
        workers = by_depth.get(1, [])
        series = self.series
        if len(series) > 40:  # keep the curve's shape, not every point
            step = math.ceil(len(series) / 40)
            series = series[::step] + [series[-1]]
        return {
            "client_peak_rss_mb": None if client_kb is None else round(client_kb / mb, 1),
            "workers_peak_rss_mb": sorted(round(k / mb, 1) for k in workers),
            "workers_peak_rss_max_mb": round(max(workers) / mb, 1) if workers else None,
            "workers_peak_rss_sum_mb": round(sum(workers) / mb, 1) if workers else None,
            "other_descendants": {str(d): len(v) for d, v in by_depth.items() if d != 1},
            "client_cpu_s": round(self.cpu_s.get(self.pid, 0.0), 2),
            "workers_cpu_s": sorted(round(self.cpu_s[p], 2) for p, d in self.depth.items() if d == 1 and p in self.cpu_s),
            # Storage reads by the workers: the campaign bytes the page cache did not hold.
            "workers_storage_read_mb": round(sum(v[0] for p, v in self.io.items() if self.depth.get(p) == 1) / 2**20, 1),
            "client_storage_write_mb": round(self.io.get(self.pid, (0, 0))[1] / 2**20, 1),
            "client_rss_series_mb": [(t, round(kb / mb, 1)) for t, kb in series],
        }


# --- one timed audit ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MdbatchSource:
    """Which mdbatch the runs use: the installed one, or a source tree put first on PYTHONPATH.

    A pinned tree keeps a long benchmark measuring one version while the checkout keeps changing.
    Every subprocess runs outside the checkout: with `python -m`/`-c` the working directory comes
    first on sys.path, so a run started in the repository would import its ./mdbatch instead.
    """

    command: list[str]
    env: dict[str, str] | None
    path: Path
    nice: int = 0

    @classmethod
    def resolve(cls, src: Path | None, nice: int = 0) -> MdbatchSource:
        if src is None:
            return cls(mdbatch_command(), None, Path(__file__).resolve().parents[1], nice)
        src = src.resolve()
        if not (src / "mdbatch" / "__init__.py").is_file():
            raise SystemExit(f"error: {src} has no mdbatch/__init__.py")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        return cls([sys.executable, "-m", "mdbatch"], env, src, nice)

    def describe(self) -> dict[str, Any]:
        code = "import mdbatch; print(mdbatch.__file__)"
        where = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=self.env, check=False, stdin=subprocess.DEVNULL, cwd="/"
        )
        git = subprocess.run(
            ["git", "-C", str(self.path), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True, check=False
        )
        lines = git.stdout.split()
        commit = lines[1] if git.returncode == 0 and len(lines) == 2 and Path(lines[0]) == self.path else None
        dirty = None
        if commit:
            status = subprocess.run(
                ["git", "-C", str(self.path), "status", "--porcelain", "--", "mdbatch"], capture_output=True, text=True, check=False
            )
            dirty = bool(status.stdout.strip())
        return {
            "module": where.stdout.strip() or None,
            "path": str(self.path),
            "git_commit": commit,
            "mdbatch_dirty": dirty,
            "nice": self.nice,
        }


def run_audit(root: Path, rundir: Path, tag: str, src: MdbatchSource, *, profile_to: Path | None = None) -> dict[str, Any]:
    """One `mdbatch audit` subprocess with a fresh SQLite catalog, timed from fork to reap, sampled."""
    db = rundir / f"{tag}.db"
    summary_path = rundir / f"{tag}.json"
    remove_sqlite(db)
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "mdbatch"] if profile_to else src.command
    if src.nice:  # nice(1) execs the command: the audit keeps its pid, its workers inherit the niceness
        prefix = ["nice", "-n", str(src.nice), *prefix]
    argv = [*prefix, "audit", str(root), "--db", f"sqlite:///{db}", "--quiet", "--json", str(summary_path)]
    log_path = rundir / f"{tag}.stderr"
    load_before = os.getloadavg()
    busy0, total0 = _machine_cpu()
    with open(log_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=src.env, cwd=rundir)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop_event.set()
    sampler.join()
    busy1, total1 = _machine_cpu()
    code = proc.returncode
    if code not in (0, 1):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"mdbatch audit exited {code}: " + "\n".join(tail))
    summary = json.loads(summary_path.read_text())
    tree_cpu = usage.ru_utime + usage.ru_stime  # the client plus every descendant it (transitively) reaped
    machine_busy = busy1 - busy0
    sims = summary["simulations"]
    mem = sampler.report()
    return {
        "wall_s": round(wall, 3),
        "exit_code": code,
        "sims_per_s": round(sims / wall, 1),
        "files_per_s": round(summary["files"] / wall, 1),
        **mem,
        "wait4_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        "tree_cpu_s": round(tree_cpu, 2),
        "machine_cpu_s": round(machine_busy, 2),
        "machine_cores": round((total1 - total0) / wall, 2),
        # CPU used by everything else on the (shared) machine, in cores, during this run.
        "others_cores": round(max(0.0, machine_busy - tree_cpu) / wall, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "summary": summary,
        "db": str(db),
    }


def catalog_rows(db: str) -> dict[str, Any]:
    """Row count of every table of a SQLite catalog and its size on disk."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        counts = {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        indexes = [
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        ]
    finally:
        con.close()
    size = sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s))
    return {"tables": counts, "rows_total": sum(counts.values()), "indexes": indexes, "size_mb": round(size / 2**20, 1)}


# --- page cache and walk ---------------------------------------------------------------------------


def warm_read(root: Path) -> float:
    """Read every regular file of the campaign once (untimed for the benchmark); returns seconds."""
    started = time.perf_counter()
    subprocess.run(
        f"find {shlex.quote(str(root))} -type f -print0 | xargs -0 -P2 -n 4000 cat > /dev/null",
        shell=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return round(time.perf_counter() - started, 1)


def sample_files(root: Path, sims: int = 300, seed: int = 0) -> list[str]:
    """Every file of a random sample of simulation directories (for page-cache residency checks)."""
    names = [e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    rng = random.Random(seed)
    out: list[str] = []
    for name in rng.sample(names, min(sims, len(names))):
        for dirpath, _dirs, files in os.walk(root / name):
            out.extend(os.path.join(dirpath, f) for f in files)
    return out


def walk_only(root: Path, src: MdbatchSource) -> dict[str, Any]:
    """The discovery walk alone (mdbatch.discover.walk_root, one thread) in a fresh interpreter."""
    code = (
        "import sys, time\n"
        "from mdbatch.discover import walk_root, DiscoveryStats\n"
        "s = DiscoveryStats(); t = time.perf_counter(); n = sum(1 for _ in walk_root(sys.argv[1], s))\n"
        "print(n, s.directories, time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL, env=src.env, cwd="/"
    )
    n, dirs, seconds = out.stdout.split()
    return {
        "simulations": int(n),
        "directories": int(dirs),
        "seconds": round(float(seconds), 3),
        "us_per_sim": round(float(seconds) / max(1, int(n)) * 1e6, 1),
    }


# --- aggregation -----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def size_report(size: int, runs: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """Medians over the runs of one size, the run at the median wall time in detail, every sample."""
    walls = [r["wall_s"] for r in runs]
    order = sorted(range(len(runs)), key=lambda i: walls[i])
    mid = runs[order[(len(order) - 1) // 2]]
    s = mid["summary"]
    timing_keys = list(s["timings"])
    med_timings = {k: _median([r["summary"]["timings"].get(k) for r in runs]) for k in timing_keys}
    med_wall = _median(walls)
    sims = s["simulations"]
    batches = s["batches"]
    expected_batches = math.ceil(sims / s["batch_size"]) if s["batch_size"] else None
    fanout = med_timings.get("fanout_s")
    scan = med_timings.get("scan_task_s")
    client_cpu = _median([r["client_cpu_s"] for r in runs])
    tree_cpu = _median([r["tree_cpu_s"] for r in runs])
    workers = s["workers"] or 1
    return {
        "simulations": sims,
        "files": s["files"],
        "bytes": s["bytes"],
        "runs": len(runs),
        "wall_s": {"median": med_wall, "min": min(walls), "max": max(walls), "samples": walls},
        "sims_per_s": round(sims / med_wall, 1),
        # The least-disturbed run: on a shared machine the fastest run is the one others slowed least.
        "best_sims_per_s": round(sims / min(walls), 1),
        "files_per_s": round(s["files"] / med_wall, 1),
        "elapsed_s_in_summary": _median([r["summary"]["elapsed_s"] for r in runs]),
        "fanout_sims_per_s": round(sims / fanout, 1) if fanout else None,
        "client_peak_rss_mb": {
            "median": _median([r["client_peak_rss_mb"] for r in runs]),
            "max": max(r["client_peak_rss_mb"] or 0 for r in runs),
            "samples": [r["client_peak_rss_mb"] for r in runs],
        },
        "wait4_maxrss_mb_median": _median([r["wait4_maxrss_mb"] for r in runs]),
        "workers_peak_rss_max_mb": _median([r["workers_peak_rss_max_mb"] for r in runs]),
        "workers_peak_rss_sum_mb": _median([r["workers_peak_rss_sum_mb"] for r in runs]),
        "client_cpu_s": client_cpu,
        "tree_cpu_s": tree_cpu,
        # CPU per simulation barely moves with the load other jobs put on a shared machine.
        "client_cpu_us_per_sim": round(client_cpu / sims * 1e6) if client_cpu and sims else None,
        "tree_cpu_us_per_sim": round(tree_cpu / sims * 1e6) if tree_cpu and sims else None,
        "others_cores": {"median": _median([r["others_cores"] for r in runs]), "samples": [r["others_cores"] for r in runs]},
        "scheduler_tasks": batches,
        "scheduler_tasks_check": {"batches": batches, "ceil_sims_over_batch_size": expected_batches, "match": batches == expected_batches},
        "workers": s["workers"],
        "batch_size": s["batch_size"],
        "timings_median": med_timings,
        "worker_utilisation": round(scan / (workers * fanout), 2) if fanout and scan else None,
        "scan_us_per_file": round(scan / s["files"] * 1e6, 1) if s["files"] and scan else None,
        "median_run": {k: v for k, v in mid.items() if k not in ("summary", "db")}
        | {"run_id": s["run_id"], "outcome": s["outcome"], "findings_total": s["findings_total"]},
        **extra,
    }


def targets(sizes: dict[str, Any], paired: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's two targets, when 10,000 and 100,000 were both measured."""
    small, big = sizes.get("10000"), sizes.get("100000")
    out: dict[str, Any] = {}
    if small and big:
        out["throughput_ratio_100k_vs_10k"] = check_target(round(big["sims_per_s"] / small["sims_per_s"], 3), ">=", RATIO_TARGET)
        if paired:
            out["throughput_ratio_100k_vs_10k_paired"] = check_target(paired["median"], ">=", RATIO_TARGET) | {"samples": paired["samples"]}
        out["throughput_ratio_100k_vs_10k_best_runs"] = check_target(
            round(big["best_sims_per_s"] / small["best_sims_per_s"], 3), ">=", RATIO_TARGET
        )
        if small["fanout_sims_per_s"] and big["fanout_sims_per_s"]:
            # The same ratio without fixed costs (start-up, cluster, close): the steady state alone.
            out["fanout_throughput_ratio_100k_vs_10k"] = check_target(
                round(big["fanout_sims_per_s"] / small["fanout_sims_per_s"], 3), ">=", RATIO_TARGET
            )
    if big:
        worst = big["client_peak_rss_mb"]["max"]
        out["client_peak_rss_100k_gb"] = check_target(round(worst * 2**20 / 1e9, 3), "<", RSS_TARGET_BYTES / 1e9)
        out["client_peak_rss_100k_gb"]["target"] = f"< {RSS_TARGET_BYTES / 1e9:g}"
        out["client_peak_rss_100k_gb"]["pass"] = worst * 2**20 < RSS_TARGET_BYTES
    return out


# --- profiling -------------------------------------------------------------------------------------


def cprofile_run(root: Path, rundir: Path, size: int, src: MdbatchSource, top: int = 30) -> dict[str, Any]:
    """One untimed audit with the client under cProfile: its hottest functions by own and total time."""
    prof = rundir / f"profile-{size}.prof"
    run = run_audit(root, rundir, f"profile-{size}", src, profile_to=prof)
    stats = pstats.Stats(str(prof))
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{_short(filename)}:{line}({func})", "calls": nc, "own_s": round(tt, 3), "cumulative_s": round(ct, 3)})
    remove_sqlite(run["db"])
    return {
        "wall_s_under_profiler": run["wall_s"],
        "timings": run["summary"]["timings"],
        "by_own_time": sorted(rows, key=lambda r: -r["own_s"])[:top],
        "by_cumulative_time": sorted(rows, key=lambda r: -r["cumulative_s"])[:top],
        "profile_file": str(prof),
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.replace(str(Path(__file__).resolve().parents[1]) + "/", "")


# --- main ------------------------------------------------------------------------------------------


class SizeRuns:
    """One campaign size: its cached campaign, warm-up, walk-alone timing and timed runs so far."""

    def __init__(self, size: int, args: argparse.Namespace, rundir: Path, src: MdbatchSource) -> None:
        self.size, self.rundir, self.src, self.keep_db = size, rundir, src, args.keep_db
        self.campaign = ensure_campaign(args.workdir, CampaignSpec("metadata", size, seed=args.seed), log=stderr_log)
        self.root = self.campaign.root
        stderr_log(f"{size}: warm-up read of {self.campaign.files} files")
        self.warm_s = warm_read(self.root)
        self.sample = sample_files(self.root)
        self.walk = walk_only(self.root, src)
        stderr_log(f"{size}: warm-up {self.warm_s} s, walk alone {self.walk['seconds']} s ({self.walk['us_per_sim']} us/sim)")
        self.runs: list[dict[str, Any]] = []
        self.rewarmed = 0
        self.rows: dict[str, Any] | None = None

    def run_once(self) -> dict[str, Any]:
        """One timed audit, after re-reading the campaign if too little of it is still cached."""
        resident = resident_fraction(self.sample, sample=len(self.sample))
        if resident is not None and resident < RESIDENT_MIN:
            stderr_log(f"{self.size}: only {resident:.0%} of a sample resident, re-reading the campaign")
            warm_read(self.root)
            self.rewarmed += 1
            resident = resident_fraction(self.sample, sample=len(self.sample))
        run = run_audit(self.root, self.rundir, f"audit-{self.size}-{len(self.runs)}", self.src)
        run["resident_fraction_before"] = resident
        if self.rows is None:
            self.rows = catalog_rows(run["db"])
        if not self.keep_db:
            remove_sqlite(run["db"])
        self.runs.append(run)
        stderr_log(
            f"{self.size}: run {len(self.runs)}: {run['wall_s']} s, {run['sims_per_s']} sims/s, "
            f"client peak {run['client_peak_rss_mb']} MB, others {run['others_cores']} cores"
        )
        return run

    def spread_too_wide(self) -> bool:
        walls = [r["wall_s"] for r in self.runs]
        return len(walls) > 1 and (max(walls) - min(walls)) / statistics.median(walls) > SPREAD_LIMIT

    def report(self) -> dict[str, Any]:
        rows = self.rows
        write_s = statistics.median([r["summary"]["timings"]["catalog_write_s"] for r in self.runs])
        extra = {
            "campaign": self.campaign.to_dict(),
            "warm_read_s": self.warm_s,
            "rewarmed": self.rewarmed,
            "walk_only": self.walk,
            "catalog": rows,
            "catalog_rows_per_s": round(rows["rows_total"] / write_s) if rows and write_s else None,
            "catalog_rows_per_sim": round(rows["rows_total"] / self.size, 2) if rows else None,
        }
        return size_report(self.size, self.runs, extra)


def measure(sizes: list[int], args: argparse.Namespace, rundir: Path, src: MdbatchSource) -> dict[int, SizeRuns]:
    """Every size's runs: size after size, or (`--interleave`) in rounds of one run per size.

    Rounds put a 10,000 and a 100,000 run close together in time, so a ratio between them compares
    runs that met similar load from the rest of a shared machine.
    """
    done: dict[int, SizeRuns] = {}
    if not args.interleave:
        for size in sizes:
            plan = done[size] = SizeRuns(size, args, rundir, src)
            while len(plan.runs) < args.repeat or (plan.spread_too_wide() and len(plan.runs) < args.repeat + args.max_extra):
                if len(plan.runs) >= args.repeat:
                    stderr_log(f"{size}: wall times spread more than {SPREAD_LIMIT:.0%}, one more run")
                plan.run_once()
        return done
    for size in sizes:
        done[size] = SizeRuns(size, args, rundir, src)
    rounds = 0
    while rounds < args.repeat or (any(p.spread_too_wide() for p in done.values()) and rounds < args.repeat + args.max_extra):
        if rounds >= args.repeat:
            stderr_log(f"wall times spread more than {SPREAD_LIMIT:.0%}, one more round")
        for plan in done.values():
            plan.run_once()
        rounds += 1
    return done


def paired_ratios(done: dict[int, SizeRuns], small: int = 10_000, big: int = 100_000) -> dict[str, Any] | None:
    """Per-round throughput ratio big/small (interleaved runs only): each pair met similar load."""
    if small not in done or big not in done:
        return None
    pairs = [round(b["sims_per_s"] / a["sims_per_s"], 3) for a, b in zip(done[small].runs, done[big].runs, strict=False)]
    return {"samples": pairs, "median": _median(pairs)} if pairs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="comma-separated simulation counts")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size (default 3)")
    parser.add_argument("--max-extra", type=int, default=2, help="extra runs allowed when wall times spread >15%% (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    parser.add_argument("--keep", action="store_true", help="keep campaigns over 10,000 simulations (default: delete at the end)")
    parser.add_argument("--keep-db", action="store_true", help="keep every run's SQLite catalog")
    parser.add_argument(
        "--src", type=Path, help="run mdbatch from this source tree (PYTHONPATH), e.g. a `git archive` of a commit, not the installed one"
    )
    parser.add_argument(
        "--interleave", action="store_true", help="run the sizes in rounds (one run of each per round) and report per-round 100k/10k ratios"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run each audit at this niceness (negative, as root, approximates a dedicated machine when others load it)",
    )
    parser.add_argument("--cprofile", action="store_true", help="one extra untimed run of the largest size with the client under cProfile")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    rundir = args.workdir / "runs"
    rundir.mkdir(parents=True, exist_ok=True)
    need_gb = sum(s * 145e3 for s in sizes) / 1e9
    free_gb = shutil.disk_usage(args.workdir).free / 1e9
    if need_gb > free_gb * 0.9:
        parser.error(f"campaigns need ~{need_gb:.0f} GB, {free_gb:.0f} GB free under {args.workdir}")

    src = MdbatchSource.resolve(args.src, args.nice)
    doc: dict[str, Any] = {"benchmark": "scale", "machine": machine_info(), "mdbatch_source": src.describe(), "sizes": {}}
    done: dict[int, SizeRuns] = {}
    try:
        done = measure(sizes, args, rundir, src)
        doc["sizes"] = {str(size): plan.report() for size, plan in done.items()}
        if args.cprofile:
            stderr_log(f"{sizes[-1]}: one run under cProfile")
            doc["client_profile"] = cprofile_run(done[sizes[-1]].root, rundir, sizes[-1], src)
    finally:
        if not args.keep:
            for size in sizes:
                root = args.workdir / "campaigns" / CampaignSpec("metadata", size, seed=args.seed).key
                if size > KEEP_BY_DEFAULT and root.exists():
                    stderr_log(f"deleting {root}")
                    shutil.rmtree(root, ignore_errors=True)
    doc["targets"] = targets(doc["sizes"], paired_ratios(done) if args.interleave else None)
    doc["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    emit_json(doc, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
