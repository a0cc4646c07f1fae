"""Time `mdbatch dedupe` against rmlint and jdupes on the same campaign, cold and warm; time the apply.

    python benchmarks/bench_dedupe.py [--profile metadata|bytes|all|none] [--repeat N] [--workdir DIR]
        [--sims N] [--traj-mb MB] [--apply-links N] [--apply-repeat N] [--no-cluster] [--json-out FILE] [--quick]

Finding, per profile, each contender run as a subprocess and timed from fork to exit (start-up
included), interleaved repetition by repetition with the order rotating:

- mdbatch:          `mdbatch dedupe ROOT --quiet --json S --groups G` (auto: in-process for small
                    stages, the Dask cluster once a stage is worth it);
- mdbatch-cluster:  the same with `--workers <cores>`: every stage on a LocalCluster (skip: --no-cluster);
- rmlint:           `rmlint -T df --hidden -F -o json:R ROOT` (duplicate files only, hidden files
                    included, symlinks ignored, empty files excluded: the same scope as mdbatch);
- jdupes:           `jdupes -r -q ROOT` (byte-verified; hard links are not duplicates by default);
- mdbatch-db:       `mdbatch dedupe ROOT --db CATALOG --listing catalog` after an (untimed) audit into
                    CATALOG: the audited files listed from the catalog, only candidates re-stat'ed;
- mdbatch-db-walk:  the same catalog as a digest source only (`--listing walk`): the tree is listed.

`warm`: one untimed run of each contender first, then the timed runs. `cold`: every regular file of
the campaign is dropped from the page cache (posix_fadvise DONTNEED, checked with mincore) before
every timed run. Groups are compared as sets of path sets: mdbatch must equal rmlint exactly.

Apply: a tree of `--apply-links` duplicates (2,001 simulations x 50 identical small files) is built
fresh for each repetition (under WORKDIR, or `--apply-dir`) and `mdbatch dedupe ROOT --apply --status
all` is timed; the apply phase (re-stat, byte comparison, fsync'd journal, link + rename per path) is
reported as links/s from the run summary, with the whole command's wall time, the filesystem's mount
options, and the filesystem's own rate for the same link + rename with no checks and no journal
(`filesystem_limit`): on a filesystem mounted with online `discard`, freeing each replaced inode
costs milliseconds and bounds any dedupe tool.

Prints one JSON document on stdout (progress on stderr). Exit status 1 when groups differ from rmlint's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - the benchmarks directory is not a package
    DEFAULT_WORKDIR,
    Campaign,
    CampaignSpec,
    RunResult,
    check_target,
    describe,
    emit_json,
    ensure_campaign,
    loadavg,
    machine_info,
    make_cold,
    mdbatch_command,
    median_index,
    ratio,
    regular_files,
    remove_sqlite,
    run_timed,
    stderr_log,
)

RUN_TIMEOUT_S = 3600
PROFILES = {"metadata": CampaignSpec("metadata", 5000), "bytes": CampaignSpec("bytes", 400, traj_mb=13.0)}
QUICK = {"metadata": CampaignSpec("metadata", 30), "bytes": CampaignSpec("bytes", 6, traj_mb=2.0)}
APPLY_FILES_PER_SIM = 50
APPLY_TARGET_LINKS_PER_S = 10_000


# --- contenders ---------------------------------------------------------------------------------


def run_mdbatch(root: Path, scratch: Path, tag: str, extra: list[str]) -> RunResult:
    summary, groups = scratch / f"{tag}.json", scratch / f"{tag}.groups.jsonl"
    argv = [*mdbatch_command(), "dedupe", str(root), "--quiet", "--json", str(summary), "--groups", str(groups), *extra]
    result = run_timed(argv, timeout=RUN_TIMEOUT_S)
    doc = json.loads(summary.read_text(encoding="utf-8"))
    result.extra = {
        "groups": doc["groups"],
        "duplicate_files": doc["duplicate_files"],
        "reclaimable_bytes": doc["reclaimable_bytes"],
        "dedup_ratio": doc["dedup_ratio"],
        "elapsed_s": doc["elapsed_s"],
        "workers": doc["workers"],
        "stages": doc["stages"],
        "timings": doc["timings"],
        "path_sets": sorted(sorted(g["paths"]) for g in map(json.loads, groups.read_text(encoding="utf-8").splitlines())),
    }
    return result


def run_rmlint(root: Path, scratch: Path, tag: str) -> RunResult:
    report = scratch / f"{tag}.rmlint.json"
    result = run_timed(["rmlint", "-T", "df", "--hidden", "-F", "-o", f"json:{report}", str(root)], timeout=RUN_TIMEOUT_S)
    by_digest: dict[str, list[str]] = defaultdict(list)
    for rec in json.loads(report.read_bytes().decode("utf-8", "surrogateescape")):
        if rec.get("type") == "duplicate_file":
            rel = os.fsencode(os.path.relpath(rec["path"], root)).decode("utf-8", "backslashreplace")
            by_digest[rec["checksum"]].append(rel)
    sets = sorted(sorted(v) for v in by_digest.values())
    result.extra = {"groups": len(sets), "duplicate_files": sum(len(s) for s in sets), "path_sets": sets}
    report.unlink()
    return result


def run_jdupes(root: Path, scratch: Path, tag: str) -> RunResult:
    result = run_timed(["jdupes", "-r", "-q", str(root)], timeout=RUN_TIMEOUT_S)
    sets: list[list[str]] = []
    for block in result.stdout.split("\n\n"):
        paths = [os.path.relpath(p, root) for p in block.splitlines() if p.strip()]
        if len(paths) > 1:
            sets.append(sorted(paths))
    sets.sort()
    result.extra = {"groups": len(sets), "duplicate_files": sum(len(s) for s in sets), "path_sets": sets}
    result.stdout = ""
    return result


# --- finding: one profile ------------------------------------------------------------------------


def bench_find(campaign: Campaign, *, repeat: int, scratch: Path, cluster: bool) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    contenders: dict[str, Callable[[str], RunResult]] = {
        "mdbatch": lambda tag: run_mdbatch(campaign.root, scratch, tag, []),
        "rmlint": lambda tag: run_rmlint(campaign.root, scratch, tag),
        "jdupes": lambda tag: run_jdupes(campaign.root, scratch, tag),
    }
    if cluster:
        contenders["mdbatch-cluster"] = lambda tag: run_mdbatch(campaign.root, scratch, tag, ["--workers", str(cores)])
    # After an audit: the catalog as the listing (only candidates re-stat'ed), and as a digest source for a walk.
    catalog = scratch / "audited.db"
    remove_sqlite(catalog)
    stderr_log("auditing the campaign into a catalog for the --db contenders (untimed)")
    audit = [*mdbatch_command(), "audit", str(campaign.root), "--db", f"sqlite:///{catalog}", "--quiet"]
    run_timed(audit, timeout=RUN_TIMEOUT_S, ok_codes=(0, 1))
    db = ["--db", f"sqlite:///{catalog}"]
    contenders["mdbatch-db"] = lambda tag: run_mdbatch(campaign.root, scratch, tag, [*db, "--listing", "catalog"])
    contenders["mdbatch-db-walk"] = lambda tag: run_mdbatch(campaign.root, scratch, tag, [*db, "--listing", "walk"])
    files = regular_files(campaign.root)
    out: dict[str, Any] = {}
    last: dict[str, RunResult] = {}
    for temperature in ("warm", "cold"):
        runs: dict[str, list[RunResult]] = {name: [] for name in contenders}
        evictions: list[dict[str, Any]] = []
        if temperature == "warm":
            for name, fn in contenders.items():
                stderr_log(f"warm-up {name}")
                last[name] = fn(f"warmup-{name}")
        names = list(contenders)
        for rep in range(repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                if temperature == "cold":
                    evictions.append(make_cold(files))
                res = contenders[name](f"{temperature}-{name}-{rep}")
                stderr_log(f"{temperature} {name} #{rep + 1}: {res.seconds:.2f} s")
                runs[name].append(res)
                last[name] = res
        out[temperature] = _summarize_runs(runs)
        if temperature == "cold":
            out[temperature]["eviction"] = {
                "runs": len(evictions),
                "max_resident_fraction_after": max((e["resident_fraction_after"] or 0.0) for e in evictions) if evictions else None,
                "synced_runs": sum(1 for e in evictions if e["synced"]),
            }
    ours, theirs = last["mdbatch"].extra["path_sets"], last["rmlint"].extra["path_sets"]
    groups = {name: {"groups": r.extra["groups"], "duplicate_files": r.extra["duplicate_files"]} for name, r in last.items()}
    groups["identical_to_rmlint"] = ours == theirs  # type: ignore[assignment]
    groups["identical_to_jdupes"] = ours == last["jdupes"].extra["path_sets"]  # type: ignore[assignment]
    if ours != theirs:
        only_ours = [s for s in ours if s not in theirs][:5]
        only_theirs = [s for s in theirs if s not in ours][:5]
        groups["differences"] = {"only_mdbatch": only_ours, "only_rmlint": only_theirs}  # type: ignore[assignment]
    if "mdbatch-cluster" in last:
        groups["cluster_identical"] = last["mdbatch-cluster"].extra["path_sets"] == ours  # type: ignore[assignment]
    for name in ("mdbatch-db", "mdbatch-db-walk"):
        groups[f"{name}_identical"] = last[name].extra["path_sets"] == ours  # type: ignore[assignment]
    targets = {
        "groups_identical_to_rmlint": {"value": ours == theirs, "target": "== rmlint", "pass": ours == theirs},
        "warm_time_vs_rmlint": check_target(ratio(out["warm"]["mdbatch"]["median_s"], out["warm"]["rmlint"]["median_s"]), "<=", 1.0),
        "cold_time_vs_rmlint": check_target(ratio(out["cold"]["mdbatch"]["median_s"], out["cold"]["rmlint"]["median_s"]), "<=", 1.0),
        "warm_db_time_vs_jdupes": check_target(ratio(out["warm"]["mdbatch-db"]["median_s"], out["warm"]["jdupes"]["median_s"]), "<=", 0.25),
    }
    return {"campaign": campaign.to_dict(), **out, "groups": groups, "targets": targets}


def _summarize_runs(runs: dict[str, list[RunResult]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        samples = [r.seconds for r in results]
        entry = describe(samples)
        if results and name.startswith("mdbatch"):
            median = results[median_index(samples)]
            entry["median_run"] = {k: v for k, v in median.extra.items() if k != "path_sets"}
        summary[name] = entry
    if runs.get("rmlint") and runs.get("mdbatch"):
        summary["speedup_vs_rmlint"] = ratio(summary["rmlint"]["median_s"], summary["mdbatch"]["median_s"])
        summary["speedup_vs_jdupes"] = ratio(summary["jdupes"]["median_s"], summary["mdbatch"]["median_s"])
    for name in ("mdbatch-db", "mdbatch-db-walk"):
        if runs.get(name) and runs.get("jdupes"):
            summary[f"{name}_ratio_to_jdupes"] = ratio(summary[name]["median_s"], summary["jdupes"]["median_s"])
    return summary


# --- apply --------------------------------------------------------------------------------------


def build_apply_tree(root: Path, links: int) -> dict[str, int]:
    """Simulations x APPLY_FILES_PER_SIM small files, identical across simulations: `links` duplicates."""
    sims = links // APPLY_FILES_PER_SIM + 1
    contents = [(f"; shared input {j}\n".encode() * (40 + 7 * j)) for j in range(APPLY_FILES_PER_SIM)]
    for i in range(sims):
        sim = root / f"sim{i:06d}"
        sim.mkdir(parents=True)
        (sim / "build.yaml").write_bytes(f"simulation: {i}\n".encode())
        (sim / "prod.gro").write_bytes(f"final frame of {i}\n".encode())
        for j, data in enumerate(contents):
            (sim / f"input{j:02d}.itp").write_bytes(data)
    return {"simulations": sims, "files": sims * (APPLY_FILES_PER_SIM + 2), "expected_links": (sims - 1) * APPLY_FILES_PER_SIM}


def filesystem_limit(root: Path, threads: int = 4) -> dict[str, Any]:
    """What the filesystem itself allows: link + rename of every duplicate over its path, no checks,
    no journal (the floor under any safe dedupe), best of 1 and `threads` threads."""
    jobs: list[tuple[str, str]] = []
    for j in range(APPLY_FILES_PER_SIM):
        keep = str(root / "sim000000" / f"input{j:02d}.itp")
        jobs.extend((keep, str(sim / f"input{j:02d}.itp")) for sim in sorted(root.iterdir()) if sim.name != "sim000000")

    def work(part: list[tuple[str, str]]) -> None:
        for keep, path in part:
            tmp = path + ".limit-tmp"
            os.link(keep, tmp)
            os.replace(tmp, path)

    from concurrent.futures import ThreadPoolExecutor

    half = len(jobs) // 2
    started = time.perf_counter()
    work(jobs[:half])
    serial = half / (time.perf_counter() - started)
    rest = jobs[half:]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [rest[k::threads] for k in range(threads)]))
    parallel = len(rest) / (time.perf_counter() - started)
    return {
        "links_per_s_1_thread": round(serial, 1),
        f"links_per_s_{threads}_threads": round(parallel, 1),
        "best_links_per_s": round(max(serial, parallel), 1),
    }


def mount_of(path: Path) -> dict[str, str] | None:
    """Filesystem type and mount options of the mount holding `path` (from /proc/mounts)."""
    best: tuple[int, dict[str, str]] | None = None
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            for line in handle:
                dev, mnt, fstype, opts = line.split()[:4]
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and (best is None or len(mnt) > best[0]):
                    best = (len(mnt), {"mount": mnt, "device": dev, "type": fstype, "options": opts})
    except OSError:
        return None
    return best[1] if best else None


def bench_apply(workdir: Path, links: int, repeat: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    tree: dict[str, int] = {}
    root = workdir / "apply-tree"
    for rep in range(repeat):
        if root.exists():
            subprocess.run(["rm", "-rf", str(root)], check=True)
        stderr_log(f"apply #{rep + 1}: building a tree of {links} duplicates in {workdir}")
        tree = build_apply_tree(root, links)
        os.sync()
        summary = workdir / "apply-summary.json"
        res = run_timed(
            [*mdbatch_command(), "dedupe", str(root), "--apply", "--status", "all", "--quiet", "--json", str(summary)],
            timeout=RUN_TIMEOUT_S,
        )
        doc = json.loads(summary.read_text(encoding="utf-8"))
        applied = doc["apply"]
        runs.append(
            {
                "command_s": round(res.seconds, 3),
                "find_s": doc["timings"].get("find_s"),
                "apply_s": applied["elapsed_s"],
                "links": applied["links"],
                "links_per_s": applied["links_per_s"],
                "skipped_groups": applied["skipped_groups"],
                "threads": applied.get("threads"),
                "link_us_one_thread": applied.get("link_us_one_thread"),
                "journal_bytes": os.path.getsize(applied["journal"]) if applied["journal"] else None,
                "loadavg": loadavg(),
            }
        )
        stderr_log(
            f"apply #{rep + 1}: {applied['links']} links in {applied['elapsed_s']:.2f} s ({applied['links_per_s']} links/s), "
            f"command {res.seconds:.2f} s"
        )
    subprocess.run(["rm", "-rf", str(root)], check=True)
    stderr_log("apply: the filesystem's own link + rename rate on the same tree")
    build_apply_tree(root, links)
    os.sync()
    limit = filesystem_limit(root)
    subprocess.run(["rm", "-rf", str(root)], check=True)
    rates = [r["links_per_s"] or 0.0 for r in runs]
    best = runs[median_index([-r for r in rates])]
    return {
        "tree": tree,
        "filesystem": mount_of(workdir),
        "runs": runs,
        "apply_s": describe([r["apply_s"] for r in runs]),
        "command_s": describe([r["command_s"] for r in runs]),
        "median_links_per_s": best["links_per_s"],
        "filesystem_limit": limit,
        "ratio_to_filesystem_limit": ratio(best["links_per_s"], limit["best_links_per_s"]),
        "targets": {
            "links_per_s_including_journal": check_target(best["links_per_s"], ">=", APPLY_TARGET_LINKS_PER_S),
            "all_links_made": {
                "value": best["links"],
                "target": f"== {tree['expected_links']}",
                "pass": best["links"] == tree["expected_links"],
            },
        },
    }


# --- driver -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=("metadata", "bytes", "all", "none"), default="all")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per contender and temperature (default 3)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"campaign cache and scratch (default {DEFAULT_WORKDIR})")
    p.add_argument("--sims", type=int, help="simulations in the campaign of every selected profile")
    p.add_argument("--traj-mb", type=float, help="trajectory size (MiB) of the bytes profile")
    p.add_argument("--apply-links", type=int, default=100_000, help="duplicates to link in the apply benchmark (0: skip)")
    p.add_argument("--apply-repeat", type=int, default=3)
    p.add_argument("--apply-dir", type=Path, help="where to build the apply tree (default: WORKDIR; e.g. another filesystem)")
    p.add_argument("--no-cluster", action="store_true", help="do not time the forced-cluster mdbatch run")
    p.add_argument("--json-out", type=Path, help="also write the JSON document here")
    p.add_argument("--quick", action="store_true", help="tiny campaigns and 2,000 links: a smoke test")
    return p.parse_args(argv)


def spec_for(name: str, args: argparse.Namespace) -> CampaignSpec:
    base = QUICK[name] if args.quick else PROFILES[name]
    sims = args.sims or base.sims
    traj = args.traj_mb if args.traj_mb is not None and name == "bytes" else base.traj_mb
    return CampaignSpec(name, sims, traj)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    missing = [tool for tool in ("rmlint", "jdupes") if shutil.which(tool) is None]
    if missing:
        print(f"error: {', '.join(missing)} not installed (apt-get install rmlint jdupes)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    selected = [] if args.profile == "none" else list(PROFILES) if args.profile == "all" else [args.profile]
    scratch = args.workdir / "dedupe-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "benchmark": "mdbatch dedupe vs rmlint vs jdupes (finding, cold and warm) and mdbatch apply throughput",
        "machine": machine_info(),
        "tools": {"rmlint": _first_line(["rmlint", "--version"]), "jdupes": _first_line(["jdupes", "--version"])},
        "settings": {
            "profiles": selected,
            "repeat": args.repeat,
            "apply_links": args.apply_links,
            "quick": args.quick,
            "workdir": str(args.workdir),
            "cores": os.cpu_count(),
        },
        "profiles": {},
    }
    ok = True
    for name in selected:
        campaign = ensure_campaign(args.workdir, spec_for(name, args), log=stderr_log)
        stderr_log(f"{name}: {campaign.simulations} simulations, {campaign.files} files, {campaign.bytes / 1e9:.2f} GB")
        result = bench_find(campaign, repeat=args.repeat, scratch=scratch, cluster=not args.no_cluster)
        doc["profiles"][name] = result
        ok &= bool(result["groups"]["identical_to_rmlint"])
    links = 2000 if args.quick and args.apply_links == 100_000 else args.apply_links
    if links > 0:
        apply_dir = args.apply_dir or args.workdir
        apply_dir.mkdir(parents=True, exist_ok=True)
        doc["apply"] = bench_apply(apply_dir, links, args.apply_repeat)
    shutil.rmtree(scratch, ignore_errors=True)
    doc["machine"]["loadavg_at_end"] = loadavg()
    doc["total_s"] = round(time.perf_counter() - started, 1)
    emit_json(doc, args.json_out)
    return 0 if ok else 1


def _first_line(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


if __name__ == "__main__":
    sys.exit(main())
