"""Time `mdbatch audit` against a serial MDFactory-style baseline and the machine's hashing limit.

    python benchmarks/bench_audit.py [--profile metadata|bytes|metadata-cold|unchanged|all|none] [--repeat N]
        [--baseline-repeat N] [--baseline-modes default,wal,fair] [--workdir DIR] [--sims N]
        [--traj-mb MB] [--json-out FILE] [--quick] [--profile-scan [--scan-sims N]]

Contenders, each run as a subprocess and timed from fork to exit, interleaved repetition by
repetition (the order rotates so no contender always runs right after another):

- mdbatch:  `mdbatch audit ROOT --db sqlite:///fresh.db --quiet --json SUMMARY.json`, the whole
            command (interpreter, imports, LocalCluster start-up and shut-down included);
- baseline: `baseline_mdfactory.py ROOT fresh.db` (see that file), serial, MDFactory's way; once per
            SQLite mode in --baseline-modes (`default`: the sqlite3 module's defaults, as MDFactory;
            `wal`: WAL + synchronous=NORMAL, the same commit per row without most of the fsyncs;
            `fair`: the fair serial script — WAL, one transaction per batch, xxh3-128, each file
            read once, footers only: what is left of the gain is parallelism and I/O overlap);
- limit:    `find ROOT -type f -print0 | xargs -0 -P <cores> xxhsum -H2`, C hashing every byte.

Profiles: `metadata` (5,000 simulations of ~15 small files, warm page cache: one untimed warm-up
of each contender first) and `bytes` (400 simulations with 13 MiB trajectories, >= 4 GB, cold:
every file of the campaign is dropped from the page cache with posix_fadvise(DONTNEED) after
os.sync() before every timed run); `metadata-cold` (the metadata campaign, evicted before every
run: latency-bound small reads, where adaptive I/O matters); `unchanged` (the metadata campaign
audited once, then re-audited warm with nothing changed, against the stat walk
`find ROOT -printf '%p %s %T@ %C@ %i\n'`, the floor of any tool that must notice a change).
Campaigns are generated once with `mdbatch generate` and cached
under WORKDIR/campaigns keyed by their parameters.

Prints one JSON document on stdout (progress goes to stderr): per profile the medians and samples
of each contender, speedup_vs_baseline = baseline / mdbatch, ratio_to_limit = mdbatch / limit,
targets with pass/fail, the counts both tools saw, and the timings breakdown of mdbatch's median
run. `--profile-scan` adds an in-process profile of `mdbatch.batch.scan_batch` over 250
simulations: where each microsecond per file goes. Exit status 1 when the tools disagree on counts.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # the benchmarks directory is not a package
    DEFAULT_WORKDIR,
    Campaign,
    CampaignSpec,
    RunResult,
    check_target,
    describe,
    emit_json,
    ensure_campaign,
    evict_page_cache,
    loadavg,
    machine_info,
    make_cold,
    mdbatch_command,
    median_index,
    ratio,
    regular_files,
    remove_sqlite,
    resident_fraction,
    run_timed,
    source_state,
    stderr_log,
)

BASELINE_SCRIPT = Path(__file__).resolve().with_name("baseline_mdfactory.py")
RUN_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class Profile:
    """One benchmark profile: campaign size, page-cache state and the targets it must meet."""

    name: str
    sims: int
    traj_mb: float | None
    cold: bool
    min_speedup_vs_baseline: float
    max_ratio_to_limit: float
    min_bytes: int = 0


PROFILES: dict[str, Profile] = {
    "metadata": Profile("metadata", 5000, None, cold=False, min_speedup_vs_baseline=10.0, max_ratio_to_limit=4.0),
    # 400 simulations: 320 have prod.xtc (completed + production), 320 x 13 MiB = 4.36 GB.
    "bytes": Profile("bytes", 400, 13.0, cold=True, min_speedup_vs_baseline=2.0, max_ratio_to_limit=1.3, min_bytes=4_000_000_000),
    # The metadata campaign with its page cache evicted before every run: small reads, latency-bound.
    "metadata-cold": Profile("metadata-cold", 5000, None, cold=True, min_speedup_vs_baseline=10.0, max_ratio_to_limit=1.0),
}
QUICK_SIZES: dict[str, tuple[int, float | None]] = {"metadata": (30, None), "bytes": (6, 2.0), "metadata-cold": (30, None)}
#: The stat-only limit of an unchanged re-audit: one readdir per directory, one lstat per entry.
FIND_STAT = ("-printf", "%p %s %T@ %C@ %i\n")
#: An unchanged re-audit may take this many times find's stat walk.
UNCHANGED_MAX_RATIO_TO_FIND = 4.0
SCAN_PROFILE_SIMS = 250


# --- contenders ---------------------------------------------------------------------------------


def run_mdbatch(campaign: Campaign, scratch: Path, tag: str) -> RunResult:
    db = scratch / f"{tag}.db"
    summary_path = scratch / f"{tag}.summary.json"
    remove_sqlite(db)
    summary_path.unlink(missing_ok=True)
    argv = [*mdbatch_command(), "audit", str(campaign.root), "--db", f"sqlite:///{db}", "--quiet", "--json", str(summary_path)]
    result = run_timed(argv, timeout=RUN_TIMEOUT_S, ok_codes=(0, 1))  # 1 = findings, still a full audit
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    result.extra = {
        "simulations": summary.get("simulations"),
        "files": summary.get("files"),
        "bytes": summary.get("bytes"),
        "findings": summary.get("findings_total"),
        "elapsed_s": summary.get("elapsed_s"),
        "workers": summary.get("workers"),
        "batch_size": summary.get("batch_size"),
        "batches": summary.get("batches"),
        "timings": summary.get("timings", {}),
        "cache": summary.get("cache"),  # a fresh catalog per run: expect no hash-cache hits
    }
    remove_sqlite(db)
    return result


def run_baseline(campaign: Campaign, scratch: Path, tag: str, mode: str, max_sims: int | None = None) -> RunResult:
    db = scratch / f"{tag}.db"
    remove_sqlite(db)
    argv = [sys.executable, str(BASELINE_SCRIPT), str(campaign.root), str(db), "--sqlite-mode", mode]
    if max_sims is not None:
        argv += ["--max-sims", str(max_sims)]
    result = run_timed(argv, timeout=RUN_TIMEOUT_S)
    result.extra = json.loads(result.stdout.strip().splitlines()[-1])
    remove_sqlite(db)
    return result


def _run_baseline_tagged(campaign: Campaign, scratch: Path, mode: str, tag: str) -> RunResult:
    return run_baseline(campaign, scratch, tag, mode)


def run_limit(campaign: Campaign, cores: int) -> RunResult:
    script = 'set -o pipefail; find "$1" -type f -print0 | xargs -0 -P "$2" xxhsum -H2 > /dev/null'
    return run_timed(["bash", "-c", script, "limit", str(campaign.root), str(cores)], timeout=RUN_TIMEOUT_S)


# --- one profile --------------------------------------------------------------------------------


def bench_profile(
    profile: Profile,
    campaign: Campaign,
    *,
    repeat: int,
    baseline_repeat: int,
    baseline_modes: list[str],
    workdir: Path,
    fair_repeat: int = 0,
) -> dict[str, Any]:
    """Run the interleaved repetitions of one profile and summarize them."""
    cores = os.cpu_count() or 1
    scratch = workdir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    files = regular_files(campaign.root)

    contenders: dict[str, tuple[int, Callable[[str], RunResult]]] = {
        "mdbatch": (repeat, lambda tag: run_mdbatch(campaign, scratch, tag)),
        "limit": (repeat, lambda tag: run_limit(campaign, cores)),
    }
    if baseline_repeat == 0:
        baseline_modes = []
    for mode in baseline_modes:
        name = "baseline" if mode == "default" else f"baseline_{mode}"
        reps = max(baseline_repeat, fair_repeat) if mode == "fair" else baseline_repeat
        contenders[name] = (reps, functools.partial(_run_baseline_tagged, campaign, scratch, mode))

    eviction: dict[str, Any] = {}
    if profile.cold:
        before = resident_fraction(files)
        done = evict_page_cache(files)
        eviction = {"resident_fraction_before": before, "resident_fraction_after": resident_fraction(files), **done}
        stderr_log(f"{profile.name}: eviction check {eviction}")
    else:
        stderr_log(f"{profile.name}: warm-up runs (untimed)")
        run_mdbatch(campaign, scratch, f"{profile.name}-warmup-mdbatch")
        run_limit(campaign, cores)
        for mode in baseline_modes:  # a few simulations: imports and code paths; the others warmed the files
            run_baseline(campaign, scratch, f"{profile.name}-warmup-baseline", mode, max_sims=5)
        eviction = {"resident_fraction_warm": resident_fraction(files)}

    runs: dict[str, list[RunResult]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(max(reps for reps, _ in contenders.values())):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            reps, run = contenders[name]
            if rep >= reps:
                continue
            evicted = make_cold(files) if profile.cold else None
            load = loadavg()
            result = run(f"{profile.name}-{name}-{rep}")
            result.extra.update(loadavg_before=load, eviction=evicted)
            runs[name].append(result)
            stderr_log(f"{profile.name} rep {rep + 1}: {name} {result.seconds:.2f} s (load {load[0] if load else '?'})")

    return summarize_profile(profile, campaign, runs, eviction)


def summarize_profile(profile: Profile, campaign: Campaign, runs: dict[str, list[RunResult]], eviction: dict[str, Any]) -> dict[str, Any]:
    seconds = {name: [r.seconds for r in results] for name, results in runs.items()}
    stats = {name: describe(samples) for name, samples in seconds.items()}
    for name, results in runs.items():
        stats[name]["cpu"] = describe([r.cpu_s for r in results])
        stats[name]["loadavg_1min_before"] = [(r.extra.get("loadavg_before") or [None])[0] for r in results]
    per_run = [r.extra["eviction"] for results in runs.values() for r in results if r.extra.get("eviction")]
    if per_run:
        eviction = {
            **eviction,
            "timed_runs_evicted": len(per_run),
            "max_resident_fraction_at_start_of_timed_runs": max(e["resident_fraction_after"] or 0.0 for e in per_run),
            "timed_runs_needing_sync": sum(1 for e in per_run if e["synced"]),
        }
    med = {name: s["median_s"] for name, s in stats.items()}

    md_runs = runs["mdbatch"]
    md_median = md_runs[median_index(seconds["mdbatch"])] if md_runs else None
    speedup = ratio(med.get("baseline"), med.get("mdbatch"))
    to_limit = ratio(med.get("mdbatch"), med.get("limit"))
    ratios: dict[str, Any] = {"speedup_vs_baseline": speedup, "ratio_to_limit": to_limit}
    for name, value in med.items():
        if name.startswith("baseline_"):
            ratios[f"speedup_vs_{name}"] = ratio(value, med.get("mdbatch"))
    ratios["baseline_to_limit"] = ratio(med.get("baseline"), med.get("limit"), 1)
    cpu = {name: s["cpu"]["median_s"] for name, s in stats.items()}
    ratios["cpu_ratio_to_limit"] = ratio(cpu.get("mdbatch"), cpu.get("limit"))
    ratios["cpu_speedup_vs_baseline"] = ratio(cpu.get("baseline"), cpu.get("mdbatch"))

    counts: dict[str, Any] = {"generated": {"simulations": campaign.simulations, "files": campaign.files, "bytes": campaign.bytes}}
    agree = True
    for name, results in runs.items():
        if name == "limit" or not results:
            continue
        seen = {(r.extra.get("simulations"), r.extra.get("files"), r.extra.get("findings")) for r in results}
        counts[name] = [{"simulations": s, "files": f, "findings": k} for s, f, k in sorted(seen, key=str)]
        agree &= len(seen) == 1
    reference = counts.get("mdbatch", [{}])[0]
    for name in counts:
        if name.startswith("baseline"):
            other = counts[name][0]
            agree &= all(other.get(k) == reference.get(k) for k in ("simulations", "files"))
    counts["match"] = agree
    counts["findings_match"] = len({c[0].get("findings") for n, c in counts.items() if isinstance(c, list)}) <= 1

    mdbatch_details: dict[str, Any] = {}
    if md_median is not None:
        extra = md_median.extra
        mdbatch_details = {
            "wall_s": round(md_median.seconds, 3),
            "elapsed_s": extra.get("elapsed_s"),
            "outside_audit_s": round(md_median.seconds - extra["elapsed_s"], 3) if extra.get("elapsed_s") is not None else None,
            "workers": extra.get("workers"),
            "batch_size": extra.get("batch_size"),
            "batches": extra.get("batches"),
            "timings": extra.get("timings"),
            "cache": extra.get("cache"),
            "scan_task_us_per_file": _us_per_file((extra.get("timings") or {}).get("scan_task_s"), extra.get("files")),
            "catalog_write_us_per_file_row": _us_per_file((extra.get("timings") or {}).get("catalog_write_s"), extra.get("files")),
        }
    baseline_phases = {
        name: {
            "elapsed_s": results[median_index([r.seconds for r in results])].extra.get("elapsed_s"),
            "phases_s": results[median_index([r.seconds for r in results])].extra.get("phases_s"),
        }
        for name, results in runs.items()
        if name.startswith("baseline") and results
    }
    return {
        "campaign": campaign.to_dict(),
        "page_cache": "cold (posix_fadvise DONTNEED before every timed run)" if profile.cold else "warm",
        "eviction": eviction,
        "contenders": stats,
        "ratios": ratios,
        "targets": {
            "speedup_vs_baseline": check_target(speedup, ">=", profile.min_speedup_vs_baseline),
            "ratio_to_limit": check_target(to_limit, "<=", profile.max_ratio_to_limit),
            **({"campaign_bytes": check_target(campaign.bytes, ">=", profile.min_bytes)} if profile.min_bytes else {}),
        },
        "counts": counts,
        "mdbatch_median_run": mdbatch_details,
        "baseline_median_run": baseline_phases,
    }


def bench_unchanged(campaign: Campaign, *, repeat: int, workdir: Path) -> dict[str, Any]:
    """An unchanged re-audit (warm) against `find -printf` of the same stats, interleaved.

    The catalog is audited once first; every timed re-audit then finds the campaign unchanged and
    records a run of its own (as a nightly audit does), so the catalog grows by one run per sample.
    """
    scratch = workdir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    db = scratch / "unchanged.db"
    remove_sqlite(db)
    audit = [*mdbatch_command(), "audit", str(campaign.root), "--db", f"sqlite:///{db}", "--quiet"]
    find = ["find", str(campaign.root), *FIND_STAT]
    stderr_log("unchanged: first audit (untimed), then a warm-up of each")
    run_timed(audit, timeout=RUN_TIMEOUT_S, ok_codes=(0, 1))
    run_timed(audit, timeout=RUN_TIMEOUT_S, ok_codes=(0, 1))
    run_timed(find, timeout=RUN_TIMEOUT_S)
    samples: dict[str, list[RunResult]] = {"mdbatch_unchanged": [], "find_stat": []}
    for rep in range(repeat):
        summary = scratch / f"unchanged-{rep}.json"
        order = [("mdbatch_unchanged", [*audit, "--json", str(summary)]), ("find_stat", find)]
        for name, argv in order if rep % 2 == 0 else order[::-1]:
            samples[name].append(run_timed(argv, timeout=RUN_TIMEOUT_S, ok_codes=(0, 1)))
        stderr_log(f"unchanged rep {rep + 1}: " + ", ".join(f"{n} {r[-1].seconds:.2f} s" for n, r in samples.items()))
    last = json.loads((scratch / f"unchanged-{repeat - 1}.json").read_text(encoding="utf-8"))
    remove_sqlite(db)
    stats = {name: describe([r.seconds for r in runs]) for name, runs in samples.items()}
    to_find = ratio(stats["mdbatch_unchanged"]["median_s"], stats["find_stat"]["median_s"])
    return {
        "campaign": campaign.to_dict(),
        "page_cache": "warm",
        "find_command": f"find ROOT -printf '{FIND_STAT[1]}'",
        "contenders": stats,
        "ratios": {"ratio_to_find": to_find},
        "targets": {"ratio_to_find": check_target(to_find, "<=", UNCHANGED_MAX_RATIO_TO_FIND)},
        "mdbatch_last_run": {k: last.get(k) for k in ("elapsed_s", "workers", "in_process", "cache", "timings", "simulations", "files")},
    }


def _us_per_file(seconds: float | None, files: int | None) -> float | None:
    return round(seconds / files * 1e6, 1) if seconds is not None and files else None


def fixed_costs(workdir: Path, repeat: int) -> dict[str, Any]:
    """What every audit pays whatever the campaign: the CLI's start-up, and a one-simulation audit."""
    tiny = ensure_campaign(workdir, CampaignSpec("metadata", 1), log=stderr_log)
    scratch = workdir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    version = [run_timed([*mdbatch_command(), "--version"]) for _ in range(repeat)]
    imports = [run_timed([sys.executable, "-c", "import mdbatch.auditing, mdbatch.cli, distributed"]) for _ in range(repeat)]
    one = [run_mdbatch(tiny, scratch, f"fixed-{i}") for i in range(repeat)]
    median_one = one[median_index([r.seconds for r in one])]

    def wall_and_cpu(runs: list[RunResult]) -> dict[str, Any]:
        return {**describe([r.seconds for r in runs]), "cpu": describe([r.cpu_s for r in runs])}

    return {
        "cli_version_s": wall_and_cpu(version),
        "python_import_audit_stack_s": wall_and_cpu(imports),
        "audit_1_simulation_s": wall_and_cpu(one),
        "audit_1_simulation_timings": {"elapsed_s": median_one.extra.get("elapsed_s"), **(median_one.extra.get("timings") or {})},
    }


# --- where a scan's microseconds go -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cost:
    """Best wall and best CPU seconds (user+system of this process) over a few runs of the same work.

    CPU time is what to compare across runs on a shared machine: wall time also counts the time
    this process waited for a core while other jobs ran.
    """

    wall_s: float
    cpu_s: float

    def per(self, count: int) -> dict[str, float | None]:
        if not count:
            return {"wall": None, "cpu": None}
        return {"wall": round(self.wall_s / count * 1e6, 2), "cpu": round(self.cpu_s / count * 1e6, 2)}


def _best_of(fn: Callable[[], Any], n: int = 3) -> Cost:
    wall = cpu = float("inf")
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return Cost(wall, cpu)


def _walk_files(sim_dirs: list[str]) -> list[str]:
    """What a per-simulation walk does: scandir, DirEntry type checks, sorted listing."""
    out: list[str] = []
    for sim in sim_dirs:
        out.extend(sorted(regular_files(sim)))
    return out


def _profile_categories(stats: Any, files: int) -> dict[str, Any]:
    """cProfile's view of scan_batch as disjoint categories: share of the total, and µs per file
    (wall clock under the profiler, so inflated by its per-call overhead; use the shares)."""
    entries = stats.stats  # {(file, line, func): (cc, nc, tottime, cumtime, callers)}

    def cum(module_suffix: str, func: str) -> float:
        return sum(v[3] for k, v in entries.items() if k[0].endswith(module_suffix) and k[2] == func)

    digest_keys = {k for k in entries if k[0].endswith("hashing.py") and k[2] in ("digest_file", "_read_cached")}

    def under_digest(match: Callable[[str], bool]) -> float:
        return sum(c[2] for key, value in entries.items() if match(key[2]) for caller, c in value[4].items() if caller in digest_keys)

    total = cum("batch.py", "scan_batch")
    cats = {
        "walk (scandir, DirEntry checks, sort)": cum("inventory.py", "walk"),
        "open + fstat x2 + close": under_digest(lambda f: any(s in f for s in ("posix.open", "posix.fstat", "posix.close"))),
        "os.read": under_digest(lambda f: "posix.read" in f or "posix.preadv" in f),
        "xxh3-128": under_digest(lambda f: "xxh" in f),
        "sha256 (artifacts)": under_digest(lambda f: "sha256" in f or "_hashlib" in f),
        "parquet footer (_footer)": cum("scan.py", "_footer"),
        "registry JSON (parse_registry)": cum("format.py", "parse_registry"),
        "identity (metadata.json, yaml)": cum("identity.py", "identity"),
        "arrow conversion (to_tables)": cum("batch.py", "to_tables"),
    }
    digest_total = sum(entries[k][3] for k in digest_keys if k[2] == "digest_file")
    io_parts = sum(cats[k] for k in ("open + fstat x2 + close", "os.read", "xxh3-128", "sha256 (artifacts)"))
    cats["digest_file Python overhead"] = max(0.0, digest_total - io_parts)
    cats["bookkeeping (records, paths, checks)"] = max(0.0, total - sum(cats.values()))
    return {
        "total_us_per_file": round(total / files * 1e6, 2) if files else None,
        "share": {k: round(v / total, 3) for k, v in cats.items()} if total else {},
        "us_per_file_profiled": {k: round(v / files * 1e6, 2) for k, v in cats.items()},
        "top_functions_by_tottime": [
            {"function": f"{os.path.basename(k[0])}:{k[2]}", "calls": v[1], "tottime_us_per_file": round(v[2] / files * 1e6, 2)}
            for k, v in sorted(entries.items(), key=lambda kv: -kv[1][2])[:15]
        ],
    }


def _catalog_write_cost(batch: Any, root: Path, files: int) -> dict[str, Any]:
    """One batch written to a fresh SQLite catalog in-process, with no scan competing for the cores.

    Writes what an audit writes for a batch (`catalog.writes.batch_ops`, one transaction); that
    API is still moving, so a mismatch is reported rather than fatal.
    """
    import tempfile

    try:
        from mdbatch.catalog import open_catalog
        from mdbatch.catalog.writes import batch_ops, run_row

        walls, cpus = [], []
        for attempt in range(3):
            with tempfile.TemporaryDirectory(prefix="mdbatch-bench-") as tmp:
                catalog = open_catalog(f"sqlite:///{tmp}/catalog.db")
                run_id = f"bench-{attempt}"
                catalog.apply([run_row(run_id, "audit", str(root), host="bench")])
                w0, c0 = time.perf_counter(), time.process_time()
                catalog.apply(batch_ops(run_id, str(root), batch))
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                catalog.close()
    except Exception as exc:  # noqa: BLE001 - report the API drift, keep the rest of the profile
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"file_rows": files, "us_per_file_row": Cost(min(walls), min(cpus)).per(files), "samples_wall_s": [round(x, 4) for x in walls]}


def profile_scan(root: Path, sims: int) -> dict[str, Any]:
    """Profile one worker's job in-process: `scan_batch` over `sims` simulations, warm page cache.

    Three views, in µs per file: the whole batch unprofiled (wall and CPU time); cProfile's split by
    cost (shares); and each cost timed alone on the same files (walk, open/fstat/close, one read,
    xxh3, footers, registry JSON, arrow conversion, catalog write), free of profiler overhead.
    """
    import cProfile
    import pstats

    import pyarrow as pa
    import pyarrow.parquet as pq
    import xxhash

    from mdbatch.batch import scan_batch, to_tables
    from mdbatch.discover import walk_root
    from mdbatch.hashing import digest_file
    from mdbatch.registry import parse_registry
    from mdbatch.scan import scan_simulation

    load_before = loadavg()
    sim_dirs = sorted(walk_root(str(root)))[:sims]
    batch = scan_batch(sim_dirs, str(root))  # warms the page cache and the imports
    files = _walk_files(sim_dirs)
    n = len(files)
    contents: dict[str, bytes] = {}
    for path in files:
        with open(path, "rb") as handle:
            contents[path] = handle.read()
    parquet_paths = [p for p in files if p.endswith(".parquet")]
    parquet = [contents[p] for p in parquet_paths]
    registries = [contents[p] for p in files if p.endswith(os.path.join(".analysis", "metadata.json"))]

    whole = _best_of(lambda: scan_batch(sim_dirs, str(root)), 5)
    scans = [scan_simulation(d, str(root)) for d in sim_dirs]
    sims_only = _best_of(lambda: [scan_simulation(d, str(root)) for d in sim_dirs])
    tables = _best_of(lambda: to_tables(scans))

    profiler = cProfile.Profile()
    profiler.enable()
    scan_batch(sim_dirs, str(root))
    profiler.disable()
    categories = _profile_categories(pstats.Stats(profiler), n)

    def open_close() -> None:
        for path in files:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            os.fstat(fd)
            os.fstat(fd)
            os.close(fd)

    def open_read_close() -> None:
        for path in files:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            os.read(fd, os.fstat(fd).st_size + 1)
            os.fstat(fd)
            os.close(fd)

    opened = _best_of(open_close)
    read = _best_of(open_read_close)
    footers = _best_of(lambda: [pq.read_metadata(pa.BufferReader(b)) for b in parquet])
    footers_path = _best_of(lambda: [pq.read_metadata(p) for p in parquet_paths])
    registry = _best_of(lambda: [parse_registry(b) for b in registries])
    isolated = {
        "walk": _best_of(lambda: _walk_files(sim_dirs)).per(n),
        "open + fstat x2 + close": opened.per(n),
        "one os.read": Cost(max(0.0, read.wall_s - opened.wall_s), max(0.0, read.cpu_s - opened.cpu_s)).per(n),
        "xxh3-128 (bytes in memory)": _best_of(lambda: [xxhash.xxh3_128(b).hexdigest() for b in contents.values()]).per(n),
        "parquet footers from bytes": footers.per(n),
        "registry parse_registry": registry.per(n),
        "arrow conversion (to_tables)": tables.per(n),
    }
    per_item = {
        "digest_file (open, read, xxh3, close), per file": _best_of(lambda: [digest_file(p) for p in files]).per(n),
        "parquet footer from bytes, per footer": footers.per(len(parquet)),
        "pq.read_metadata(path), per footer": footers_path.per(len(parquet)),
        "parse_registry, per registry": registry.per(len(registries)),
        "scan_simulation, per simulation": sims_only.per(len(sim_dirs)),
    }
    try:
        import pandas as pd

        sample = parquet_paths[:50]
        per_item["pandas.read_parquet, per file (the baseline's way)"] = _best_of(lambda: [pd.read_parquet(p) for p in sample], 2).per(
            len(sample)
        )
    except ImportError:
        pass
    cpu_total = whole.per(n)["cpu"]
    return {
        "root": str(root),
        "simulations": len(sim_dirs),
        "files": n,
        "parquet_files": len(parquet),
        "registries": len(registries),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "scan_batch_us_per_file": whole.per(n),
        "scan_simulation_loop_us_per_file": sims_only.per(n),
        "isolated_us_per_file": isolated,
        "isolated_cpu_sum_us_per_file": round(sum(v["cpu"] or 0.0 for v in isolated.values()), 2),
        "per_item_us": per_item,
        "cprofile": categories,
        "cprofile_share_times_cpu_us_per_file": {k: round(share * cpu_total, 2) for k, share in categories["share"].items()}
        if cpu_total
        else {},
        "catalog_write": _catalog_write_cost(batch, root, batch.file_count),
        "reference": "PERFORMANCE-NOTES: ~13 µs/file for a tight per-simulation scan on one core",
    }


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=(*PROFILES, "unchanged", "all", "none"), default="all")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of mdbatch and of the limit (default 5)")
    p.add_argument("--baseline-repeat", type=int, default=1, help="timed runs of each baseline (default 1; 0 skips them)")
    p.add_argument("--fair-repeat", type=int, default=3, help="timed runs of the fair serial baseline (default 3)")
    p.add_argument("--baseline-modes", default="default,wal,fair", help="comma list of baseline modes (default, wal, fair)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"campaign cache and scratch (default {DEFAULT_WORKDIR})")
    p.add_argument("--sims", type=int, help="simulations in the campaign of every selected profile")
    p.add_argument("--traj-mb", type=float, help="trajectory size (MiB) of the bytes profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, help="also write the JSON document here")
    p.add_argument("--quick", action="store_true", help="tiny campaigns (30 sims; 6 sims with 2 MiB trajectories): smoke test")
    p.add_argument("--no-fixed-costs", action="store_true", help="skip the CLI start-up and one-simulation audit timings")
    p.add_argument("--profile-scan", action="store_true", help="profile scan_batch in-process (µs per file by cost)")
    p.add_argument("--scan-sims", type=int, default=SCAN_PROFILE_SIMS, help="simulations for --profile-scan (default 250)")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.baseline_modes.split(",") if m.strip()]
    if not modes or any(m not in ("default", "wal", "fair") for m in modes):
        p.error("--baseline-modes takes a comma list of: default, wal, fair")
    if "default" not in modes:
        p.error("--baseline-modes must include 'default' (the baseline the targets are defined against)")
    args.baseline_modes = modes
    if args.repeat < 1 or args.baseline_repeat < 0:
        p.error("--repeat must be at least 1 and --baseline-repeat at least 0 (0: no baseline runs, no speedups)")
    return args


def spec_for(name: str, args: argparse.Namespace) -> CampaignSpec:
    name = "metadata" if name in ("metadata-cold", "unchanged") else name  # one campaign, several profiles
    profile = PROFILES[name]
    sims, traj = QUICK_SIZES[name] if args.quick else (profile.sims, profile.traj_mb)
    if args.sims is not None:
        sims = args.sims
    if args.traj_mb is not None and name == "bytes":
        traj = args.traj_mb
    return CampaignSpec(name, sims, traj, args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    every = [*PROFILES, "unchanged"]
    selected = [] if args.profile == "none" else every if args.profile == "all" else [args.profile]
    doc: dict[str, Any] = {
        "benchmark": "mdbatch audit vs serial MDFactory-style baseline vs find|xargs xxhsum limit",
        "machine": {**machine_info(), "source": source_state(Path(__file__).resolve().parents[1])},
        "settings": {
            "profiles": selected,
            "repeat": args.repeat,
            "baseline_repeat": args.baseline_repeat,
            "fair_repeat": args.fair_repeat,
            "baseline_modes": args.baseline_modes,
            "quick": args.quick,
            "workdir": str(args.workdir),
            "limit_command": f"find ROOT -type f -print0 | xargs -0 -P {os.cpu_count() or 1} xxhsum -H2",
            "stat_limit_command": f"find ROOT -printf '{FIND_STAT[1]}'",
        },
        "profiles": {},
    }
    ok = True
    for name in selected:
        campaign = ensure_campaign(args.workdir, spec_for(name, args), log=stderr_log)
        stderr_log(f"{name}: {campaign.simulations} simulations, {campaign.files} files, {campaign.bytes / 1e9:.2f} GB in {campaign.root}")
        if name == "unchanged":
            doc["profiles"][name] = bench_unchanged(campaign, repeat=args.repeat, workdir=args.workdir)
            continue
        result = bench_profile(
            PROFILES[name],
            campaign,
            repeat=args.repeat,
            baseline_repeat=args.baseline_repeat,
            baseline_modes=args.baseline_modes,
            workdir=args.workdir,
            fair_repeat=args.fair_repeat,
        )
        doc["profiles"][name] = result
        ok &= bool(result["counts"]["match"])
    if not args.no_fixed_costs:
        stderr_log("fixed costs: CLI start-up and a one-simulation audit")
        doc["fixed_costs"] = fixed_costs(args.workdir, min(3, args.repeat))
    if args.profile_scan:
        campaign = ensure_campaign(args.workdir, spec_for("metadata", args), log=stderr_log)
        stderr_log(f"profiling scan_batch over {args.scan_sims} simulations of {campaign.root}")
        doc["profile_scan"] = profile_scan(campaign.root, args.scan_sims)
    doc["machine"]["loadavg_at_end"] = loadavg()
    doc["total_s"] = round(time.perf_counter() - started, 1)
    emit_json(doc, args.json_out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
