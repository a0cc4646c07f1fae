"""Pieces every subcommand shares: the parser class, argument types, cluster options, rendering."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}")
    return x


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """The cluster options every fan-out command shares (audit, push, dedupe)."""
    g = p.add_argument_group("cluster")
    g.add_argument(
        "--cluster", choices=("local", "slurm"), default="local", help="local processes (default) or Slurm jobs via dask-jobqueue"
    )
    g.add_argument(
        "--workers", type=positive, help="worker processes for the local cluster (default: one per core, fewer for small campaigns)"
    )
    target = g.add_mutually_exclusive_group()
    target.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://host:port)")
    target.add_argument(
        "--scheduler-file", metavar="PATH", help="use the scheduler described by a Dask scheduler file (e.g. one started with srun)"
    )
    dash = g.add_mutually_exclusive_group()
    dash.add_argument(
        "--dashboard",
        dest="dashboard",
        action="store_true",
        default=None,
        help="always start the Dask dashboard (default: only for campaigns over 10,000 simulations)",
    )
    dash.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="never start the Dask dashboard")
    g.add_argument("--performance-report", metavar="PATH", help="save Dask's HTML performance report of the run")
    s = p.add_argument_group("slurm (with --cluster slurm; defaults from the jobqueue YAML)")
    jobs = s.add_mutually_exclusive_group()
    jobs.add_argument("--jobs", type=positive, help="number of worker jobs (default 1)")
    jobs.add_argument("--min-jobs", type=positive, help="adaptive scaling: at least this many jobs")
    s.add_argument("--max-jobs", type=positive, help="adaptive scaling: at most this many jobs")
    s.add_argument("--cores", type=positive, help="cores per job")
    s.add_argument("--processes", type=positive, help="worker processes per job")
    s.add_argument("--memory", help="memory per job, e.g. 8GB")
    s.add_argument("--walltime", help="walltime per job, e.g. 01:00:00")
    s.add_argument("--partition", help="Slurm partition (queue)")
    s.add_argument("--account", help="Slurm account")
    s.add_argument(
        "--job-extra",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="extra #SBATCH directive, e.g. --job-extra='--qos=normal' (repeatable)",
    )
    s.add_argument("--interface", help="network interface workers and scheduler use (e.g. ib0, lo)")
    s.add_argument("--jobqueue-config", metavar="YAML", help="jobqueue-style YAML with Slurm defaults (default: $MDBATCH_JOBQUEUE_CONFIG)")


def cluster_options(args: argparse.Namespace) -> Any:
    """ClusterOptions from the shared cluster arguments."""
    from ..engine import ClusterOptions

    if args.cluster == "slurm" and (args.scheduler or args.scheduler_file):
        raise UsageError("--cluster slurm starts its own scheduler; do not combine it with --scheduler/--scheduler-file")
    if args.max_jobs is not None and args.min_jobs is None:
        args.min_jobs = 1
    return ClusterOptions(
        kind=args.cluster,
        workers=args.workers,
        scheduler=args.scheduler,
        scheduler_file=args.scheduler_file,
        dashboard=args.dashboard,
        jobs=args.jobs,
        min_jobs=args.min_jobs,
        max_jobs=args.max_jobs,
        cores=args.cores,
        processes=args.processes,
        memory=args.memory,
        walltime=args.walltime,
        partition=args.partition,
        account=args.account,
        job_extra=tuple(args.job_extra),
        interface=args.interface,
        jobqueue_config=args.jobqueue_config,
        performance_report=args.performance_report,
    )


def write_json(target: str | None, payload: dict[str, Any]) -> None:
    """Write `payload` as JSON to a file (atomically) or to stdout for '-'."""
    if not target:
        return
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        from ..atomic import atomic_write_text

        atomic_write_text(target, text)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KB'."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def output_frame(frame: Any, output: str | None, *, max_rows: int = 50) -> None:
    """A DataFrame as a readable table on stdout, or to `output` as .csv or .json (JSON lines)."""
    if output:
        from ..atomic import atomic_write_text

        lower = output.lower()
        if lower.endswith(".json") or lower.endswith(".jsonl"):
            atomic_write_text(output, frame.to_json(orient="records", lines=True, date_format="iso", force_ascii=False))
        elif lower.endswith(".csv"):
            atomic_write_text(output, frame.to_csv(index=False))
        else:
            raise UsageError(f"--output {output!r}: use a .csv or .json file name")
        print(f"wrote {len(frame)} rows to {output}")
        return
    if frame.empty:
        print("(no rows)")
        return
    import pandas as pd

    with pd.option_context("display.max_rows", max_rows, "display.max_columns", 20, "display.width", 160, "display.max_colwidth", 60):
        print(frame.to_string(index=False, max_rows=max_rows))
    if len(frame) > max_rows:
        print(f"... {len(frame)} rows in all; use --output FILE.csv for everything")
