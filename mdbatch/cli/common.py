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


DB_HELP = (
    "catalog URL: sqlite:///PATH, postgresql+psycopg://USER@HOST:PORT/DB or csv:///DIR "
    "(default: $MDBATCH_DB, the config file, else sqlite:///mdbatch.db)"
)
#: Arguments that say how mdbatch ran, not what the command did: not recorded with a run.
NOT_RECORDED = frozenset({"func", "command", "debug", "quiet", "runs_command", "store_command", "config_command"})


def recorded_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The options a run records (MDBATCH_RUNS.arguments): the command's own, without argparse's plumbing."""
    return {k: v for k, v in vars(args).items() if k not in NOT_RECORDED}


def add_output_args(p: argparse.ArgumentParser, *, formats: tuple[str, ...], default_help: str) -> None:
    """--output PATH|- and --format, as every listing command takes them."""
    p.add_argument(
        "-o", "--output", metavar="PATH", help="write to PATH (.csv or .json/.jsonl; format from the name) or '-' for stdout (JSON lines)"
    )
    p.add_argument("--format", choices=formats, help=f"output format (default: {default_help})")


def stdout_outputs(args: argparse.Namespace, *names: str) -> list[str]:
    """The options among `names` that write to stdout ('-'); more than one is a UsageError."""
    claimed = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) == "-"]
    if len(claimed) > 1:
        raise UsageError(f"only one output can go to stdout, got {' and '.join(claimed)} -")
    return claimed


def say(args: argparse.Namespace, message: str, *, data_on_stdout: bool = False) -> None:
    """Print a human message unless --quiet; to stderr when stdout carries data ('-' outputs)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr if data_on_stdout else sys.stdout)


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """--debug and --quiet on `parser` and every subcommand below it, so either goes before or after
    the subcommand. Below the top, they default to SUPPRESS: a subcommand's default never overrides
    the flag given before it."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk of subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in action.choices.values():
                _add_flags(child)
                add_global_flags(child)


def _add_flags(p: argparse.ArgumentParser) -> None:
    have = {s for a in p._actions for s in a.option_strings}  # noqa: SLF001
    if "--debug" not in have:
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    if "--quiet" not in have:
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="print nothing but the data asked for")
