"""`mdbatch push|pull|clear|init-db|config`: the catalog commands (MDFactory's `sync`, in bulk)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import CatalogError, DuplicateKeysError, UsageError
from .common import DB_HELP, add_cluster_args, cluster_options, positive, recorded_arguments, say, write_json


def non_negative(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return n


def register(sub: Any) -> None:
    """Add push, pull, clear, init-db and config."""
    _register_push(sub)
    _register_pull(sub)
    _register_clear(sub)
    i = sub.add_parser("init-db", help="create the catalog's tables (records the schema version)")
    i.add_argument("--db", help=DB_HELP)
    i.add_argument("--force", action="store_true", help="drop every mdbatch table first (asks for confirmation)")
    i.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    i.set_defaults(func=_cmd_init_db)
    c = sub.add_parser("config", help="the config file: init, show, path")
    csub = c.add_subparsers(dest="config_command", required=True, parser_class=type(c))
    ci = csub.add_parser("init", help="write a config file")
    ci.add_argument("--db", help="default catalog URL to store (default: sqlite:///mdbatch.db)")
    ci.add_argument("--max-csv-bytes", type=non_negative, help="data_csv size cap to store")
    ci.add_argument("--force", action="store_true", help="overwrite an existing config file")
    ci.set_defaults(func=_cmd_config_init)
    cs = csub.add_parser("show", help="the settings in effect and where each comes from (passwords hidden)")
    cs.add_argument("--db", help=argparse.SUPPRESS)
    cs.set_defaults(func=_cmd_config_show)
    cp = csub.add_parser("path", help="where the config file is")
    cp.set_defaults(func=_cmd_config_path)


def _register_push(sub: Any) -> None:
    p = sub.add_parser("push", help="push systems, analyses or artifacts of a campaign into the catalog")
    p.add_argument("what", choices=("systems", "analysis", "artifacts"), help="which records")
    p.add_argument("source", nargs="?", help="campaign root directory or summary YAML (system_directory: [...])")
    p.add_argument("--csv", metavar="FILE", help="a CSV with a 'directory' column instead of SOURCE")
    p.add_argument("--csv-root", metavar="DIR", help="directory that relative paths in the CSV/YAML are resolved against")
    p.add_argument("--db", help=DB_HELP)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--diff", action="store_true", help="skip records whose key is already in the catalog")
    mode.add_argument("--force", action="store_true", help="overwrite records whose key is already in the catalog")
    p.add_argument("--analysis-name", metavar="NAME", help="push only this analysis (push analysis)")
    p.add_argument("--artifact-name", metavar="NAME", help="push only this artifact (push artifacts)")
    p.add_argument("--max-csv-bytes", type=non_negative, help="largest frame kept in data_csv (default 16 MiB or the config file's)")
    p.add_argument("--batch-size", type=positive, help="simulations per task (default: 250, smaller for small campaigns)")
    p.add_argument("--json", metavar="SUMMARY.json", help="write the push summary as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress and no human summary")
    add_cluster_args(p)
    p.set_defaults(func=_cmd_push)


def _register_pull(sub: Any) -> None:
    p = sub.add_parser("pull", help="read systems, analyses or artifacts back from the catalog")
    psub = p.add_subparsers(dest="what", required=True, parser_class=type(p))

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", help=DB_HELP)
        q.add_argument("--hash", help="only this simulation")
        q.add_argument("--full", action="store_true", help="every column on the terminal (files always get every column)")
        q.add_argument("-o", "--output", metavar="PATH", help="write to PATH: .csv, .json (JSON lines) or .parquet; '-' for stdout")
        q.add_argument(
            "--format", choices=("table", "jsonl", "csv", "parquet"), help="output format (default: a table, or from the --output name)"
        )
        q.add_argument("--limit", type=positive, help="print at most N rows on the terminal")

    s = psub.add_parser("systems", help="RUN_DATABASE")
    common(s)
    s.add_argument("--status", help="completed, production, equilibrated or build")
    s.add_argument("--simulation-type", help="e.g. bilayer")
    s.set_defaults(func=_cmd_pull)
    for kind, item in (("analysis", "analysis"), ("artifacts", "artifact")):
        q = psub.add_parser(kind, help=f"ANALYSIS_OVERVIEW or {item.upper()}_<name>")
        common(q)
        g = q.add_mutually_exclusive_group(required=True)
        g.add_argument("--overview", action="store_true", help=f"completion status of every {item} per simulation")
        g.add_argument(f"--{item}-name", metavar="NAME", help=f"the rows of {item.upper()}_NAME")
        q.set_defaults(func=_cmd_pull)


def _register_clear(sub: Any) -> None:
    p = sub.add_parser("clear", help="delete rows from the sync tables (asks for confirmation)")
    psub = p.add_subparsers(dest="what", required=True, parser_class=type(p))
    for name, text in (("systems", "empty RUN_DATABASE"), ("all", "empty every sync table: runs, overview, analyses, artifacts")):
        q = psub.add_parser(name, help=text)
        q.add_argument("--db", help=DB_HELP)
        q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        q.set_defaults(func=_cmd_clear)
    a = psub.add_parser("analysis", help="empty analysis/artifact tables or the overview")
    a.add_argument("--db", help=DB_HELP)
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--analysis-name", metavar="NAME", help="ANALYSIS_NAME (and its overview rows)")
    g.add_argument("--artifact-name", metavar="NAME", help="ARTIFACT_NAME (and its overview rows)")
    g.add_argument("--overview", action="store_true", help="ANALYSIS_OVERVIEW")
    g.add_argument("--analyses", action="store_true", help="every ANALYSIS_<name> (and their overview rows)")
    g.add_argument("--artifacts", action="store_true", help="every ARTIFACT_<name> (and their overview rows)")
    g.add_argument("--all", dest="everything", action="store_true", help="the overview and every analysis and artifact table")
    a.set_defaults(func=_cmd_clear)


def _cmd_push(args: argparse.Namespace) -> int:
    if (args.source is None) == (args.csv is None):
        raise UsageError("push needs exactly one of SOURCE or --csv FILE")
    if args.analysis_name is not None and args.what != "analysis":
        raise UsageError("--analysis-name goes with push analysis")
    if args.artifact_name is not None and args.what != "artifacts":
        raise UsageError("--artifact-name goes with push artifacts")
    if args.performance_report == "-":
        raise UsageError("--performance-report -: Dask writes its report to a file; give a file name")
    try:
        result = _push(args)
    except DuplicateKeysError as exc:
        hint = _audit_hint(args, exc)
        if hint is None:
            raise
        raise CatalogError(hint) from exc
    summary = result.to_dict()
    write_json(args.json, summary)
    say(args, render_push(summary), data_on_stdout=args.json == "-")
    return 0


def _push(args: argparse.Namespace) -> Any:
    from ..sync.push import push

    return push(
        args.source or args.csv,
        args.what,
        db=args.db,
        mode="diff" if args.diff else "force" if args.force else "error",
        name=args.analysis_name or args.artifact_name,
        csv_root=args.csv_root,
        cluster=cluster_options(args),
        batch_size=args.batch_size,
        max_csv=args.max_csv_bytes,
        progress=not args.quiet,
        arguments=recorded_arguments(args),
    )


def _audit_hint(args: argparse.Namespace, exc: DuplicateKeysError) -> str | None:
    """Why the records exist when an audit wrote them, and what each mode does then; None otherwise.

    An audit records RUN_DATABASE, ANALYSIS_OVERVIEW and the ARTIFACT_<name> tables itself (only
    analysis data is left to `push analysis`), so after `mdbatch audit` a plain `push systems` meets
    every key. Said when a completed audit covers the pushed directory (or, for a list, any audit).
    """
    from ..catalog import queries
    from ..lifecycle import open_catalog_for_command

    if "concurrently" in str(exc):  # another push raced this one: not the audit's rows
        return None
    source = os.path.abspath(args.source) if args.source and os.path.isdir(args.source) else None
    with open_catalog_for_command(args.db, must_exist=True) as catalog:
        audits = queries.audits_of_any_root(catalog)
    if source is not None:
        audits = [a for a in audits if a["root"] and (a["root"] == source or os.path.commonpath([a["root"], source]) == a["root"])]
    if not audits:
        return None
    last = audits[-1]
    where = ", ".join(f"{n} in {t}" for t, n in sorted(exc.tables.items()))
    return (
        f"{exc.count} record{'s' if exc.count != 1 else ''} already exist in the catalog ({where}): audit {last['run_id']} of "
        f"{last['root']} wrote them (an audit records RUN_DATABASE, ANALYSIS_OVERVIEW and the artifact tables itself; after "
        f"an audit only `push analysis` has data to add); `push {args.what} --diff` skips them and writes only records the "
        "catalog lacks, --force rewrites them from the files"
    )


def render_push(s: dict[str, Any]) -> str:
    """The human summary of a push."""
    written = s["written"]
    lines = [_push_headline(s)]
    lines.append("  wrote " + (", ".join(f"{n} rows to {t}" for t, n in written.items()) if any(written.values()) else "nothing new"))
    if any(s["skipped_existing"].values()):
        lines.append("  skipped (already in the catalog): " + ", ".join(f"{n} in {t}" for t, n in s["skipped_existing"].items() if n))
    if s["data_csv_over_cap"]:
        lines.append(
            f"  {s['data_csv_over_cap']} frames over the data_csv cap: stored without data_csv (data_path and data_csv_bytes only)"
        )
    if s["data_csv_unreadable"]:
        lines.append(f"  {s['data_csv_unreadable']} parquet files could not be read for data_csv")
    if s["invalid_names"]:
        lines.append(f"  {s['invalid_names']} items have names that cannot be table names: recorded in ANALYSIS_OVERVIEW only")
    if s["scan_findings"]:
        lines.append(f"  {s['scan_findings']} integrity findings in these simulations: run `mdbatch audit` for the list")
    return "\n".join(lines)


def _push_headline(s: dict[str, Any]) -> str:
    """`push analysis --diff: 12 rows written, 40 already in the catalog, for 16 simulations into URL in 1.2s`."""
    flag = {"diff": " --diff", "force": " --force"}.get(s["mode"], "")
    written = sum(s["written"].values())
    what = _plural(written, "row") + " written"
    if s["mode"] == "diff":
        what += f", {sum(s['skipped_existing'].values())} already in the catalog,"
    elif s["mode"] == "force" and written:
        what += " (existing keys overwritten)"
    return f"{s['command']}{flag}: {what} for {_plural(s['simulations'], 'simulation')} into {s['catalog']} in {s['elapsed_s']:.1f}s"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cmd_pull(args: argparse.Namespace) -> int:
    from ..sync import pull

    if args.what == "systems":
        query = pull.systems_query(args.status, args.simulation_type, args.hash)
    else:
        item = "analysis" if args.what == "analysis" else "artifact"
        name = getattr(args, f"{item}_name")
        query = pull.overview_query(item, args.hash) if args.overview else pull.item_query(item, name, args.hash)
    fmt = None if args.format == "table" else args.format
    if args.format == "table" and args.output:
        raise UsageError("--format table is for the terminal; write a file as csv, jsonl or parquet")
    target = args.output or ("-" if fmt else None)
    if target:
        fmt = pull.output_format(target, fmt)
        if target == "-" and fmt == "parquet" and sys.stdout.isatty():
            raise UsageError("parquet is binary: redirect stdout to a file or a pipe (or use --output FILE.parquet)")
    catalog = pull.open_for_read(args.db)
    try:
        if target and args.what == "analysis" and not args.overview and fmt == "parquet":
            built = pull.rebuild_frames(catalog, args.analysis_name, target, args.hash)
            say(
                args,
                f"rebuilt {args.analysis_name}: {built.frames} frames, {built.rows} rows -> {target}"
                + (f" ({built.from_parquet} read from data_path)" if built.from_parquet else ""),
                data_on_stdout=target == "-",
            )
            if built.missing:
                print(
                    f"  {len(built.missing)} simulations have no data_csv and no readable data_path: {', '.join(built.missing[:5])}"
                    + (" …" if len(built.missing) > 5 else ""),
                    file=sys.stderr,
                )
        elif target:
            count = pull.write_output(catalog, query, target, fmt)
            if target != "-":
                say(args, f"wrote {count} rows of {query.table} to {target}")
        else:
            _preview(catalog, query, args)
    finally:
        catalog.close()
    return 0


def _preview(catalog: Any, query: Any, args: argparse.Namespace) -> None:
    """The query's rows as the terminal table (summary columns unless --full), at most --limit of them."""
    from ..catalog import schema
    from ..sync import pull
    from .render import Table

    definition = schema.table_for(query.table)
    columns = [c.name for c in definition.columns if c.name != "data_csv"] if args.full else pull.SUMMARY_COLUMNS[query.view]
    out = Table(columns, limit=args.limit)
    for chunk in pull.rows(catalog, query, columns):
        out.write(tuple(row.values()) for row in chunk.to_pylist())
        if args.limit is not None and out.total >= args.limit:
            out.total = catalog.count_rows(query.table, query.where)
            break
    out.close(f"no rows in {query.table}" + (f" matching {query.where}" if query.where else ""))


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError("refusing to delete without confirmation on a non-interactive input: pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _cmd_clear(args: argparse.Namespace) -> int:
    from ..catalog import open_catalog
    from ..sync import clear

    catalog = open_catalog(args.db, must_exist=True)
    try:
        targets = clear.plan(
            catalog,
            args.what,
            analysis_name=getattr(args, "analysis_name", None),
            artifact_name=getattr(args, "artifact_name", None),
            overview=getattr(args, "overview", False),
            analyses=getattr(args, "analyses", False),
            artifacts=getattr(args, "artifacts", False),
            everything=getattr(args, "everything", False),
        )
        counts = clear.count(catalog, targets)
        if not sum(counts):
            print(f"nothing to delete in {catalog.display_url}")
            return 0
        print(f"about to delete from {catalog.display_url}:")
        for target, n in zip(targets, counts, strict=True):
            if n:
                print(f"  {n} rows from {target.describe()}")
        if not _confirm("delete these rows?", args.yes):
            print("nothing deleted")
            return 0
        deleted = clear.execute(catalog, targets)
        for target, n in zip(targets, deleted, strict=True):
            if n:
                print(f"deleted {n} rows from {target.describe()}")
    finally:
        catalog.close()
    return 0


def _cmd_init_db(args: argparse.Namespace) -> int:
    from ..catalog import open_catalog, schema

    catalog = open_catalog(args.db)
    try:
        if args.force:
            tables = catalog.tables()
            if tables and not _confirm(f"drop {len(tables)} tables of {catalog.display_url} and everything in them?", args.yes):
                print("nothing dropped")
                return 0
        before = catalog.schema_version()
        catalog.init_schema(force=args.force)
        if args.force:
            print(f"recreated the catalog {catalog.display_url} (schema version {schema.SCHEMA_VERSION})")
        elif before is None:
            print(f"created the catalog {catalog.display_url} (schema version {schema.SCHEMA_VERSION})")
        elif before < schema.SCHEMA_VERSION:
            print(f"migrated the catalog {catalog.display_url} from schema version {before} to {schema.SCHEMA_VERSION}")
        else:
            print(f"the catalog {catalog.display_url} is ready (schema version {schema.SCHEMA_VERSION})")
    finally:
        catalog.close()
    return 0


def _cmd_config_init(args: argparse.Namespace) -> int:
    from ..config import init_config, redact

    path = init_config(args.db, max_csv=args.max_csv_bytes, force=args.force)
    print(f"wrote {path}" + (f" (catalog {redact(args.db)})" if args.db else ""))
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from ..config import config_path, effective

    path = config_path()
    print(f"# config file: {path}{'' if path.exists() else ' (not present)'}")
    for setting in effective(args.db):
        print(f"{setting.name} = {setting.value}    # from {setting.source}")
    return 0


def _cmd_config_path(args: argparse.Namespace) -> int:
    from ..config import config_path

    print(config_path())
    return 0
