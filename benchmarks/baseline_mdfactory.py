"""The serial baseline: the audit's work done the way MDFactory does it, one file at a time.

    python benchmarks/baseline_mdfactory.py ROOT DB [--max-sims N] [--sqlite-mode default|wal|fair]

Same work as `mdbatch audit`, MDFactory's way: walk the campaign with os.walk; for each simulation
read metadata.json and parse the build YAML; load the registry with json; read every registered
analysis WHOLE with pandas.read_parquet to count rows and compare columns; look for unregistered
parquet files; sha256 every artifact file in 8 KiB chunks and compare with the registry; then
sha256 every file again in 8 KiB chunks for the inventory (MDFactory hashes serially on every
check); and write to SQLite with the sqlite3 module, one commit per row (the simulation's row,
one per file, one per finding), re-reading the runs table with SELECT * to look for the hash
before inserting it, as MDFactory's push does.

`--sqlite-mode fair` is the fair serial script: the same checks, but written the way a careful
serial tool would be, so a comparison shows how much of mdbatch's gain is parallelism and how much
is not committing per row. WAL with synchronous=NORMAL, one transaction per 250 simulations and
executemany per table; the inventory digest is mdbatch's (xxh3-128), each file read once (an
artifact's sha256 comes from the same read as its xxh3); parquet row counts and columns from the
footer (pyarrow.parquet.read_metadata), as mdbatch does, instead of reading the table whole.

Prints one JSON line: simulations, files, bytes, findings (total and by kind), elapsed_s and the
seconds spent in each phase, so the harness can check both tools saw the same campaign.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sqlite3
import stat
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CHUNK = 8192
#: Simulations per transaction of the fair serial script (mdbatch's default batch size).
FAIR_BATCH = 250
REGISTRY = os.path.join(".analysis", "metadata.json")
SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS RUN_DATABASE (hash TEXT PRIMARY KEY, engine TEXT, parametrization TEXT,"
        " simulation_type TEXT, input_data TEXT, input_data_type TEXT, directory TEXT, status TEXT, timestamp_utc TEXT)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS FILES (simulation TEXT, path TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT,"
        " PRIMARY KEY (simulation, path))"
    ),
    "CREATE TABLE IF NOT EXISTS FINDINGS (id INTEGER PRIMARY KEY AUTOINCREMENT, simulation TEXT, kind TEXT, item TEXT, detail TEXT)",
)


class Phases:
    """Seconds spent per phase, accumulated with a context manager."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._name = ""
        self._t0 = 0.0

    def __call__(self, name: str) -> Phases:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] += time.perf_counter() - self._t0


def xxh3_and_sha256(path: str, sha: bool) -> tuple[str, str | None]:
    """One read of `path`: its xxh3-128 and, when asked, its sha256 (1 MiB reads, as mdbatch)."""
    import xxhash

    x = xxhash.xxh3_128()
    h = hashlib.sha256() if sha else None
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            x.update(chunk)
            if h is not None:
                h.update(chunk)
    return x.hexdigest(), h.hexdigest() if h is not None else None


def footer_rows_columns(path: str) -> tuple[int, list[str]]:
    """Row count and data columns from a parquet footer (what mdbatch reads instead of the table)."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    names = meta.schema.names
    pandas_meta = json.loads((meta.metadata or {}).get(b"pandas", b"{}"))
    index = {c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)}
    return meta.num_rows, [n for n in names if n not in index and not n.startswith("__index_level_")]


def sha256_chunks(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_simulation_dir(path: str, names: list[str]) -> bool:
    base = os.path.basename(os.path.normpath(path))
    if f"{base}.yaml" in names or "build.yaml" in names:
        return True
    if os.path.isfile(os.path.join(path, REGISTRY)):
        return True
    if "metadata.json" in names:
        try:
            with open(os.path.join(path, "metadata.json"), encoding="utf-8") as handle:
                return bool(json.load(handle).get("hash"))
        except (OSError, ValueError, AttributeError):
            return False
    return False


def find_simulations(root: str) -> list[str]:
    """Simulation directories below `root` (os.walk, not descending into a simulation)."""
    sims: list[str] = []
    for top, dirs, names in os.walk(root):
        if is_simulation_dir(top, names):
            sims.append(top)
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if d != ".analysis")
    return sims


def status_of(names: set[str]) -> str:
    if "prod.gro" in names:
        return "completed"
    if "prod.xtc" in names:
        return "production"
    if {"min.gro", "nvt.gro", "npt.gro"} <= names:
        return "equilibrated"
    return "build"


@dataclass
class Rows:
    """What one or more simulations write: RUN_DATABASE, FILES and FINDINGS rows."""

    runs: list[tuple[Any, ...]] = field(default_factory=list)
    files: list[tuple[Any, ...]] = field(default_factory=list)
    findings: list[tuple[str, str, str, str]] = field(default_factory=list)


def audit_simulation(sim: str, root: str, phases: Phases, totals: Counter[str], fair: bool) -> Rows:
    """Check one simulation; the rows it writes (MDFactory's way, or the fair serial way)."""
    rel_sim = os.path.relpath(sim, root)
    base = os.path.basename(os.path.normpath(sim))
    findings: list[tuple[str, str, str]] = []
    with phases("walk"):
        files: list[str] = []
        for top, dirs, names in os.walk(sim):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(top, name)
                if stat.S_ISREG(os.lstat(path).st_mode):
                    files.append(path)
        top_names = set(os.listdir(sim))
    with phases("metadata"):
        meta, input_text = read_metadata(sim, base)
    registry: dict[str, Any] | None = None
    with phases("registry"):
        reg_path = os.path.join(sim, REGISTRY)
        if os.path.exists(reg_path):
            try:
                with open(reg_path, encoding="utf-8") as handle:
                    registry = json.load(handle)
            except (OSError, ValueError) as exc:
                findings.append(("registry_corrupt", ".analysis/metadata.json", str(exc)))
    artifact_sums: dict[str, str] = {}
    if registry is not None:
        with phases("parquet_footer" if fair else "parquet_full_read"):
            check_analyses(sim, registry, findings, fair)
        if fair:  # each artifact is hashed once, in the inventory's read below
            artifact_sums = artifact_checksums(sim, registry, findings)
        else:
            with phases("sha256_artifacts"):
                check_artifacts(sim, registry, findings)
    rows = Rows()
    with phases("xxh3_inventory_one_read" if fair else "sha256_inventory"):
        seen: dict[str, str] = {}
        for path in files:
            info = os.lstat(path)
            digest: str | None
            try:
                if fair:
                    digest, sha = xxh3_and_sha256(path, path in artifact_sums)
                    if sha is not None:
                        seen[path] = sha
                else:
                    digest = sha256_chunks(path)
            except OSError as exc:
                digest = None
                findings.append(("unreadable", os.path.relpath(path, sim), exc.strerror or str(exc)))
            rows.files.append((rel_sim, os.path.relpath(path, sim), info.st_size, info.st_mtime_ns, digest))
            totals["bytes"] += info.st_size
        for path, (name, rel) in artifact_names(sim, registry).items() if fair else ():
            if path not in artifact_sums:
                continue  # missing: already a finding
            sha = seen.get(path) or sha256_chunks(path)  # read here only when outside the walked tree
            if sha != artifact_sums[path]:
                findings.append(("artifact_checksum_mismatch", f"{name}:{rel}", path))
    rows.runs.append(
        (
            meta.get("hash") or base,
            meta.get("engine"),
            meta.get("parametrization"),
            meta.get("simulation_type"),
            input_text,
            "yaml" if input_text is not None else None,
            sim,
            status_of(top_names),
            datetime.now(UTC).isoformat(),
        )
    )
    rows.findings.extend((rel_sim, kind, item, detail) for kind, item, detail in findings)
    totals["simulations"] += 1
    totals["files"] += len(rows.files)
    totals.update(f"finding:{kind}" for kind, _, _ in findings)
    return rows


def read_metadata(sim: str, base: str) -> tuple[dict[str, Any], str | None]:
    """metadata.json and the build YAML's type, engine and parametrization; the YAML's text."""
    import yaml

    meta: dict[str, Any] = {}
    meta_path = os.path.join(sim, "metadata.json")
    if os.path.exists(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, ValueError):
            meta = {}
    for candidate in (f"{base}.yaml", "build.yaml"):
        path = os.path.join(sim, candidate)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                input_text = handle.read()
            build = yaml.safe_load(input_text) or {}
            for key in ("simulation_type", "engine", "parametrization"):
                meta.setdefault(key, build.get(key))
            return meta, input_text
    return meta, None


def check_analyses(sim: str, registry: dict[str, Any], findings: list[tuple[str, str, str]], fair: bool) -> None:
    """Registered analyses against their files (whole read with pandas, or the footer when fair); strays."""
    import pandas as pd

    analysis_dir = os.path.join(sim, ".analysis")
    registered = set()
    for name, entry in registry.get("analyses", {}).items():
        path = os.path.join(analysis_dir, entry["filename"])
        registered.add(os.path.normpath(path))
        if not os.path.exists(path):
            findings.append(("missing_file", name, path))
            continue
        try:
            if fair:
                rows, columns = footer_rows_columns(path)
            else:
                df = pd.read_parquet(path)
                rows, columns = len(df), list(df.columns)
        except Exception as exc:  # noqa: BLE001 - any unreadable parquet is a finding
            findings.append(("parquet_unreadable", name, str(exc)[:200]))
            continue
        if rows != entry["row_count"]:
            findings.append(("row_count_mismatch", name, f"{entry['row_count']} != {rows}"))
        if list(columns) != list(entry["columns"]):
            findings.append(("columns_mismatch", name, str(list(columns))))
    for path in sorted(glob.glob(os.path.join(analysis_dir, "*.parquet"))):
        if os.path.normpath(path) not in registered:
            findings.append(("extra_file", os.path.relpath(path, sim), "not in the registry"))


def artifact_names(sim: str, registry: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """Absolute path -> (artifact name, registered relative path) of every registered artifact file."""
    analysis_dir = os.path.join(sim, ".analysis")
    return {
        os.path.join(analysis_dir, rel): (name, rel)
        for name, entry in (registry or {}).get("artifacts", {}).items()
        for rel in entry.get("files", [])
    }


def artifact_checksums(sim: str, registry: dict[str, Any], findings: list[tuple[str, str, str]]) -> dict[str, str]:
    """Registered sha256 of every present artifact file (missing ones are findings)."""
    sums: dict[str, str] = {}
    for path, (name, rel) in artifact_names(sim, registry).items():
        if not os.path.exists(path):
            findings.append(("artifact_missing_file", f"{name}:{rel}", path))
        else:
            sums[path] = registry["artifacts"][name].get("checksums", {}).get(rel)
    return sums


def check_artifacts(sim: str, registry: dict[str, Any], findings: list[tuple[str, str, str]]) -> None:
    """sha256 of every artifact file, read on its own (MDFactory's way), against the registry."""
    for path, (name, rel) in artifact_names(sim, registry).items():
        if not os.path.exists(path):
            findings.append(("artifact_missing_file", f"{name}:{rel}", path))
        elif sha256_chunks(path) != registry["artifacts"][name].get("checksums", {}).get(rel):
            findings.append(("artifact_checksum_mismatch", f"{name}:{rel}", path))


def write_per_row(conn: sqlite3.Connection, rows: Rows) -> None:
    """MDFactory's push: re-read the runs table to find the hash, then one commit per row."""
    for run in rows.runs:
        existing = conn.execute("SELECT * FROM RUN_DATABASE").fetchall()
        if any(row[0] == run[0] for row in existing):
            conn.execute("DELETE FROM RUN_DATABASE WHERE hash = ?", (run[0],))
        conn.execute("INSERT INTO RUN_DATABASE VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", run)
        conn.commit()
    for row in rows.files:
        conn.execute("INSERT OR REPLACE INTO FILES VALUES (?, ?, ?, ?, ?)", row)
        conn.commit()
    for finding in rows.findings:
        conn.execute("INSERT INTO FINDINGS (simulation, kind, item, detail) VALUES (?, ?, ?, ?)", finding)
        conn.commit()


def write_batch(conn: sqlite3.Connection, rows: Rows) -> None:
    """The fair way: one transaction for a batch of simulations, executemany per table."""
    with conn:
        conn.executemany("INSERT OR REPLACE INTO RUN_DATABASE VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows.runs)
        conn.executemany("INSERT OR REPLACE INTO FILES VALUES (?, ?, ?, ?, ?)", rows.files)
        conn.executemany("INSERT INTO FINDINGS (simulation, kind, item, detail) VALUES (?, ?, ?, ?)", rows.findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="campaign root")
    parser.add_argument("db", help="SQLite database file to write (created)")
    parser.add_argument("--max-sims", type=int, help="stop after N simulations (warm-up runs)")
    parser.add_argument(
        "--sqlite-mode",
        choices=("default", "wal", "fair"),
        default="default",
        help="default: the sqlite3 module's defaults (rollback journal, synchronous=FULL), as MDFactory; "
        "wal: journal_mode=WAL, synchronous=NORMAL (a cheaper commit, to isolate the fsync cost); "
        "fair: the fair serial script (WAL, one transaction per 250 simulations, xxh3-128, each file read once, footers)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    phases = Phases()
    with phases("imports"):
        import pandas  # noqa: F401 - MDFactory imports pandas and pyarrow up front
        import yaml  # noqa: F401

    root = os.path.abspath(args.root)
    with phases("discovery"):
        sims = find_simulations(root)
    if args.max_sims is not None:
        sims = sims[: args.max_sims]
    conn = sqlite3.connect(args.db)
    fair = args.sqlite_mode == "fair"
    if args.sqlite_mode in ("wal", "fair"):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.commit()
    totals: Counter[str] = Counter()
    pending = Rows()
    for k, sim in enumerate(sims, 1):
        rows = audit_simulation(sim, root, phases, totals, fair)
        if not fair:
            with phases("sqlite_commit_per_row"):
                write_per_row(conn, rows)
            continue
        pending.runs += rows.runs
        pending.files += rows.files
        pending.findings += rows.findings
        if k % FAIR_BATCH == 0 or k == len(sims):
            with phases("sqlite_batch_transaction"):
                write_batch(conn, pending)
            pending = Rows()
    conn.close()

    by_kind = {k.split(":", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("finding:")}
    print(
        json.dumps(
            {
                "simulations": totals["simulations"],
                "files": totals["files"],
                "bytes": totals["bytes"],
                "findings": sum(by_kind.values()),
                "findings_by_kind": by_kind,
                "sqlite_mode": args.sqlite_mode,
                "elapsed_s": round(time.perf_counter() - started, 3),
                "phases_s": {k: round(v, 3) for k, v in sorted(phases.seconds.items())},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
