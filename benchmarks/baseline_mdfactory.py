"""The serial baseline: the audit's work done the way MDFactory does it, one file at a time.

    python benchmarks/baseline_mdfactory.py ROOT DB [--max-sims N] [--sqlite-mode default|wal]

Same work as `mdbatch audit`, MDFactory's way: walk the campaign with os.walk; for each simulation
read metadata.json and parse the build YAML; load the registry with json; read every registered
analysis WHOLE with pandas.read_parquet to count rows and compare columns; look for unregistered
parquet files; sha256 every artifact file in 8 KiB chunks and compare with the registry; then
sha256 every file again in 8 KiB chunks for the inventory (MDFactory hashes serially on every
check); and write to SQLite with the sqlite3 module, one commit per row (the simulation's row,
one per file, one per finding), re-reading the runs table with SELECT * to look for the hash
before inserting it, as MDFactory's push does.

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
from datetime import UTC, datetime
from typing import Any

CHUNK = 8192
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


def audit_simulation(sim: str, root: str, conn: sqlite3.Connection, phases: Phases, totals: Counter[str]) -> None:
    import pandas as pd
    import yaml

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
        meta: dict[str, Any] = {}
        meta_path = os.path.join(sim, "metadata.json")
        if os.path.exists(meta_path):
            try:
                with open(meta_path, encoding="utf-8") as handle:
                    meta = json.load(handle)
            except (OSError, ValueError):
                meta = {}
        input_text = None
        for candidate in (f"{base}.yaml", "build.yaml"):
            path = os.path.join(sim, candidate)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    input_text = handle.read()
                build = yaml.safe_load(input_text) or {}
                for key in ("simulation_type", "engine", "parametrization"):
                    meta.setdefault(key, build.get(key))
                break

    registry: dict[str, Any] | None = None
    with phases("registry"):
        reg_path = os.path.join(sim, REGISTRY)
        if os.path.exists(reg_path):
            try:
                with open(reg_path, encoding="utf-8") as handle:
                    registry = json.load(handle)
            except (OSError, ValueError) as exc:
                findings.append(("registry_corrupt", ".analysis/metadata.json", str(exc)))

    if registry is not None:
        analysis_dir = os.path.join(sim, ".analysis")
        with phases("parquet_full_read"):
            registered = set()
            for name, entry in registry.get("analyses", {}).items():
                path = os.path.join(analysis_dir, entry["filename"])
                registered.add(os.path.normpath(path))
                if not os.path.exists(path):
                    findings.append(("missing_file", name, path))
                    continue
                try:
                    df = pd.read_parquet(path)
                except Exception as exc:  # noqa: BLE001 - any unreadable parquet is a finding
                    findings.append(("parquet_unreadable", name, str(exc)[:200]))
                    continue
                if len(df) != entry["row_count"]:
                    findings.append(("row_count_mismatch", name, f"{entry['row_count']} != {len(df)}"))
                if list(df.columns) != list(entry["columns"]):
                    findings.append(("columns_mismatch", name, str(list(df.columns))))
            for path in sorted(glob.glob(os.path.join(analysis_dir, "*.parquet"))):
                if os.path.normpath(path) not in registered:
                    findings.append(("extra_file", os.path.relpath(path, sim), "not in the registry"))
        with phases("sha256_artifacts"):
            for name, entry in registry.get("artifacts", {}).items():
                for rel in entry.get("files", []):
                    path = os.path.join(analysis_dir, rel)
                    if not os.path.exists(path):
                        findings.append(("artifact_missing_file", f"{name}:{rel}", path))
                    elif sha256_chunks(path) != entry.get("checksums", {}).get(rel):
                        findings.append(("artifact_checksum_mismatch", f"{name}:{rel}", path))

    inventory: list[tuple[str, str, int, int, str | None]] = []
    with phases("sha256_inventory"):
        for path in files:
            info = os.lstat(path)
            try:
                digest: str | None = sha256_chunks(path)
            except OSError as exc:
                digest = None
                findings.append(("unreadable", os.path.relpath(path, sim), exc.strerror or str(exc)))
            inventory.append((rel_sim, os.path.relpath(path, sim), info.st_size, info.st_mtime_ns, digest))
            totals["bytes"] += info.st_size

    with phases("sqlite_commit_per_row"):
        sim_hash = meta.get("hash") or base
        existing = conn.execute("SELECT * FROM RUN_DATABASE").fetchall()
        if any(row[0] == sim_hash for row in existing):
            conn.execute("DELETE FROM RUN_DATABASE WHERE hash = ?", (sim_hash,))
        conn.execute(
            "INSERT INTO RUN_DATABASE VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sim_hash,
                meta.get("engine"),
                meta.get("parametrization"),
                meta.get("simulation_type"),
                input_text,
                "yaml" if input_text is not None else None,
                sim,
                status_of(top_names),
                datetime.now(UTC).isoformat(),
            ),
        )
        conn.commit()
        for row in inventory:
            conn.execute("INSERT OR REPLACE INTO FILES VALUES (?, ?, ?, ?, ?)", row)
            conn.commit()
        for kind, item, detail in findings:
            conn.execute("INSERT INTO FINDINGS (simulation, kind, item, detail) VALUES (?, ?, ?, ?)", (rel_sim, kind, item, detail))
            conn.commit()

    totals["simulations"] += 1
    totals["files"] += len(inventory)
    totals.update(f"finding:{kind}" for kind, _, _ in findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="campaign root")
    parser.add_argument("db", help="SQLite database file to write (created)")
    parser.add_argument("--max-sims", type=int, help="stop after N simulations (warm-up runs)")
    parser.add_argument(
        "--sqlite-mode",
        choices=("default", "wal"),
        default="default",
        help="default: the sqlite3 module's defaults (rollback journal, synchronous=FULL), as MDFactory; "
        "wal: journal_mode=WAL, synchronous=NORMAL (a cheaper commit, to isolate the fsync cost)",
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
    if args.sqlite_mode == "wal":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.commit()
    totals: Counter[str] = Counter()
    for sim in sims:
        audit_simulation(sim, root, conn, phases, totals)
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
