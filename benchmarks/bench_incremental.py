"""Incremental audits: the first audit, an unchanged re-audit, and a re-audit after changing 1%.

    python benchmarks/bench_incremental.py [--profile bytes|metadata|all] [--repeat N] [--json-out F]

Each repetition audits one campaign three times into a fresh SQLite catalog, every run cold (the
campaign's files evicted from the page cache with posix_fadvise(DONTNEED), as a nightly audit on a
cluster filesystem finds them): (1) first audit, empty hash cache; (2) second audit, nothing
changed; (3) third audit after rewriting 1% of the files (same size, new bytes, so only ctime/mtime
betray them). It reports medians of the whole command and of the scan stage (the summed task time
of the scan on the workers, from the run summary) and the target ratios:

- byte-heavy (>= 16 GB): unchanged re-audit scan stage >= 20x faster than the first's, whole
  command >= 5x faster; the 1%-changed re-audit within 2x of the unchanged one;
- metadata-heavy: whole command >= 3x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_WORKDIR,
    CampaignSpec,
    check_target,
    describe,
    emit_json,
    ensure_campaign,
    loadavg,
    machine_info,
    make_cold,
    mdbatch_command,
    ratio,
    regular_files,
    remove_sqlite,
    run_timed,
    stderr_log,
)

PROFILES = {
    # ~16.5 GB: 400 simulations, ~330 of them with a 52 MB trajectory.
    "bytes": CampaignSpec("bytes", 400, traj_mb=52.0, seed=7),
    "metadata": CampaignSpec("metadata", 5000, seed=7),
}
QUICK = {"bytes": CampaignSpec("bytes", 20, traj_mb=2.0, seed=7), "metadata": CampaignSpec("metadata", 60, seed=7)}


def touch_one_percent(files: list[str], rng: random.Random) -> int:
    """Rewrite 1% of the files in place with new bytes of the same size; returns how many."""
    chosen = rng.sample(files, max(1, len(files) // 100))
    for path in chosen:
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            if size:
                handle.seek(size // 2)
                handle.write(bytes([rng.randrange(256)]))
    return len(chosen)


def audit(root: Path, db: Path, files: list[str]) -> dict[str, Any]:
    cold = make_cold(files)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        summary_path = handle.name
    try:
        res = run_timed(
            [*mdbatch_command(), "audit", str(root), "--db", f"sqlite:///{db}", "--quiet", "--json", summary_path],
            ok_codes=(0, 1),
            timeout=7200,
        )
        summary = json.loads(Path(summary_path).read_text())
    finally:
        os.unlink(summary_path)
    return {
        "seconds": res.seconds,
        "scan_s": summary["stages"]["scan"]["elapsed_s"],
        "cache": summary["cache"],
        "changes": {k: summary["changes"][k] for k in ("files", "simulations")},
        "cold": cold,
        "timings": summary["timings"],
    }


def bench(profile: str, spec: CampaignSpec, repeat: int, workdir: Path) -> dict[str, Any]:
    campaign = ensure_campaign(workdir, spec, log=stderr_log)
    files = regular_files(campaign.root)
    rng = random.Random(11)
    runs: dict[str, list[dict[str, Any]]] = {"first": [], "unchanged": [], "changed_1pct": []}
    for i in range(repeat):
        db = workdir / "runs" / f"incremental-{profile}.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        remove_sqlite(db)
        stderr_log(f"[{profile}] repetition {i + 1}/{repeat}: first audit")
        runs["first"].append(audit(campaign.root, db, files))
        stderr_log(f"[{profile}] repetition {i + 1}/{repeat}: unchanged re-audit")
        runs["unchanged"].append(audit(campaign.root, db, files))
        touched = touch_one_percent(files, rng)
        stderr_log(f"[{profile}] repetition {i + 1}/{repeat}: re-audit after changing {touched} files")
        changed = audit(campaign.root, db, files)
        changed["touched"] = touched
        runs["changed_1pct"].append(changed)
        remove_sqlite(db)
    whole = {k: describe([r["seconds"] for r in v]) for k, v in runs.items()}
    scan = {k: describe([r["scan_s"] for r in v]) for k, v in runs.items()}
    out: dict[str, Any] = {
        "campaign": campaign.to_dict(),
        "whole_command": whole,
        "scan_stage": scan,
        "ratios": {
            "whole_first_over_unchanged": ratio(whole["first"]["median_s"], whole["unchanged"]["median_s"]),
            "scan_first_over_unchanged": ratio(scan["first"]["median_s"], scan["unchanged"]["median_s"]),
            "whole_changed_over_unchanged": ratio(whole["changed_1pct"]["median_s"], whole["unchanged"]["median_s"]),
        },
        "last_runs": {k: v[-1] for k, v in runs.items()},
    }
    r = out["ratios"]
    if profile == "bytes":
        out["targets"] = {
            "scan_stage_speedup": check_target(r["scan_first_over_unchanged"], ">=", 20),
            "whole_command_speedup": check_target(r["whole_first_over_unchanged"], ">=", 5),
            "changed_1pct_vs_unchanged": check_target(r["whole_changed_over_unchanged"], "<=", 2),
        }
    else:
        out["targets"] = {"whole_command_speedup": check_target(r["whole_first_over_unchanged"], ">=", 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("bytes", "metadata", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--quick", action="store_true", help="tiny campaigns (a smoke test of the harness)")
    args = parser.parse_args(argv)
    specs = QUICK if args.quick else PROFILES
    chosen = ["bytes", "metadata"] if args.profile == "all" else [args.profile]
    result = {
        "benchmark": "incremental audits",
        "machine": machine_info(),
        "loadavg_before": loadavg(),
        "profiles": {p: bench(p, specs[p], args.repeat, args.workdir) for p in chosen},
        "loadavg_after": loadavg(),
    }
    emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
