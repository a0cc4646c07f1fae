"""`mdbatch status` against `find`: what stat-only change detection costs next to listing the tree.

    python benchmarks/bench_status.py [--sims 5000] [--repeat 3] [--json-out F] [--quick]

One metadata campaign is audited once into a fresh SQLite catalog (not timed). Then, interleaved
per repetition, each on a warm page cache (one untimed run of each first):

- `find`: `find ROOT -printf '%p %s %T@ %C@ %i\\n'` (one readdir per directory, one lstat per
  entry: the floor for any stat-only look at the tree);
- `status_unchanged`: `mdbatch status ROOT --quiet` with nothing changed (fingerprints hold);
- `status_changed_1pct`: the same after touching 1% of the files (new mtime and ctime, same size):
  those simulations are compared file by file with their recorded inventory.

Reports the medians (of >= 3 samples), the ratios to `find` side by side, and the target: status
takes at most 5x the time of find on 5,000 simulations. Both commands are whole processes
(interpreter start-up and imports included for mdbatch).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_WORKDIR,
    MANIFEST_NAME,
    CampaignSpec,
    check_target,
    describe,
    emit_json,
    ensure_campaign,
    loadavg,
    machine_info,
    mdbatch_command,
    ratio,
    regular_files,
    remove_sqlite,
    run_timed,
    stderr_log,
)

TARGET = 5.0
FIND_FORMAT = "%p %s %T@ %C@ %i\\n"


def touch_one_percent(files: list[str], rng: random.Random) -> int:
    """New mtime (and so ctime) on 1% of the files, sizes unchanged."""
    chosen = rng.sample(files, max(1, len(files) // 100))
    now = time.time()
    for path in chosen:
        os.utime(path, (now, now + 1))
    return len(chosen)


def bench(spec: CampaignSpec, repeat: int, workdir: Path) -> dict[str, Any]:
    campaign = ensure_campaign(workdir, spec, log=stderr_log)
    files = [f for f in regular_files(campaign.root) if os.path.basename(f) != MANIFEST_NAME]  # the simulations' files
    db = workdir / "runs" / "status.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    remove_sqlite(db)
    url = f"sqlite:///{db}"
    stderr_log(f"auditing {campaign.simulations} simulations once (not timed)")
    run_timed([*mdbatch_command(), "audit", str(campaign.root), "--db", url, "--quiet"], ok_codes=(0, 1), timeout=7200)
    find = ["find", str(campaign.root), "-printf", FIND_FORMAT]
    status = [*mdbatch_command(), "status", str(campaign.root), "--db", url, "--quiet"]
    run_timed(find)  # warm the page cache and the dentry cache for both
    run_timed(status)
    samples: dict[str, list[float]] = {"find": [], "status_unchanged": []}
    for i in range(repeat):
        stderr_log(f"repetition {i + 1}/{repeat}: find, status (unchanged)")
        samples["find"].append(run_timed(find).seconds)
        samples["status_unchanged"].append(run_timed(status).seconds)
    touched = touch_one_percent(files, random.Random(5))
    changed = run_timed(status, ok_codes=(1,))  # untimed: warms the changed path
    samples["status_changed_1pct"] = []
    for i in range(repeat):
        stderr_log(f"repetition {i + 1}/{repeat}: status ({touched} files touched)")
        samples["status_changed_1pct"].append(run_timed(status, ok_codes=(1,)).seconds)
    remove_sqlite(db)
    stats = {k: describe(v) for k, v in samples.items()}
    ratios = {
        "status_unchanged_over_find": ratio(stats["status_unchanged"]["median_s"], stats["find"]["median_s"]),
        "status_changed_1pct_over_find": ratio(stats["status_changed_1pct"]["median_s"], stats["find"]["median_s"]),
    }
    return {
        "campaign": campaign.to_dict(),
        "files": len(files),
        "touched_files": touched,
        "changed_exit_code": changed.returncode,
        "contenders": stats,
        "ratios": ratios,
        "targets": {
            "status_unchanged_within_5x_find": check_target(ratios["status_unchanged_over_find"], "<=", TARGET),
            "status_changed_1pct_within_5x_find": check_target(ratios["status_changed_1pct_over_find"], "<=", TARGET),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=5000, help="simulations in the campaign (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed samples of each contender (default 3)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--quick", action="store_true", help="a tiny campaign (a smoke test of the harness)")
    args = parser.parse_args(argv)
    spec = CampaignSpec("metadata", 40 if args.quick else args.sims, seed=9)
    result = {
        "benchmark": "status vs find",
        "machine": machine_info(),
        "loadavg_before": loadavg(),
        "result": bench(spec, args.repeat, args.workdir),
        "loadavg_after": loadavg(),
    }
    emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
