"""`push` through the library, against every backend, on a real Dask cluster shared by the module."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sqlite3
import sys
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mdbatch.auditing import audit
from mdbatch.catalog import open_catalog, schema
from mdbatch.catalog.writes import PARQUET_BYTES
from mdbatch.engine import ClusterOptions
from mdbatch.errors import DuplicateKeysError, InvalidNameError, UsageError
from mdbatch.sync.collect import collect, frame_csv, split_for_serialization
from mdbatch.sync.push import push

from ..conftest import expected

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
    ) as c:
        yield ClusterOptions(scheduler=c.scheduler_address)


def registered(dest: Path) -> tuple[Counter[str], Counter[str]]:
    """How many simulations register each analysis and each artifact."""
    analyses: Counter[str] = Counter()
    artifacts: Counter[str] = Counter()
    for reg in dest.rglob(".analysis/metadata.json"):
        doc = json.loads(reg.read_text())
        analyses.update(list(doc["analyses"]))
        artifacts.update(list(doc["artifacts"]))
    return analyses, artifacts


def rows(url: str, table: str, **where: object) -> list[dict]:
    with open_catalog(url) as cat:
        return [r for t in cat.iter_rows(table, where or None) for r in t.to_pylist()]


# -- the catalog read and changed behind mdbatch's back: sqlite3, psycopg, or the CSV files -------


def raw(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` run on a SQLite or PostgreSQL catalog's database directly (committed), not through mdbatch."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.split("///", 1)[1], timeout=60)) as conn, conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "", 1)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


def csv_file(url: str, table: str) -> Path:
    return Path(url.split("://", 1)[1]) / f"{table}.csv"


def raw_tables(url: str) -> list[str]:
    """The sync tables (RUN_DATABASE, ANALYSIS_*, ARTIFACT_*) the catalog holds."""
    if url.startswith("csv"):
        names = [p.stem for p in csv_file(url, "x").parent.glob("*.csv")]
    elif url.startswith("sqlite"):
        names = [n for (n,) in raw(url, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        names = [n for (n,) in raw(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    return sorted(n for n in names if n == schema.RUN_TABLE or n.startswith(("ANALYSIS_", "ARTIFACT_")))


def raw_identities(url: str) -> set[tuple[Any, ...]]:
    """Every sync row as (table, hash, ...): overview rows with item type, name and status; analysis
    rows with whether they hold data. Read without mdbatch (a CSV catalog's files with the csv module)."""
    found: set[tuple[Any, ...]] = set()
    for table in raw_tables(url):
        overview = table == schema.OVERVIEW_TABLE
        columns = ["hash", "item_type", "item_name", "status"] if overview else ["hash"]
        if table.startswith("ANALYSIS_") and not overview:
            columns.append("data_csv")
        if url.startswith("csv"):
            csv.field_size_limit(sys.maxsize)
            with csv_file(url, table).open(newline="", encoding="utf-8") as handle:
                values = [tuple(r[c] or None for c in columns) for r in csv.DictReader(handle)]
        else:
            values = raw(url, f'SELECT {", ".join(columns)} FROM "{table}"')
        for value in values:
            found.add((table, *value[:4]) if overview or "data_csv" not in columns else (table, value[0], value[1] is not None))
    return found


def raw_delete(url: str, table: str, hashes: list[str], item_name: str | None = None) -> None:
    """Delete the rows of `hashes` (and `item_name`) from `table` behind mdbatch's back."""
    if url.startswith("csv"):
        path = csv_file(url, table)
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header, kept = reader.fieldnames, [r for r in reader if not (r["hash"] in hashes and item_name in (None, r.get("item_name")))]
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, header or [], lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
        return
    where = f"hash IN ({', '.join(repr(h) for h in hashes)})" + (f" AND item_name = '{item_name}'" if item_name else "")
    raw(url, f'DELETE FROM "{table}" WHERE {where}')


def halves(found: set[tuple[Any, ...]], clean: set[tuple[Any, ...]]) -> dict[str, set[tuple[Any, ...]]]:
    """Simulations present only in part, per `clean` (a clean push's identities): hash -> rows missing."""
    have: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    want: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for row in found:
        have[row[1]].add(row)
    for row in clean:
        want[row[1]].add(row)
    return {h: want[h] - rows for h, rows in have.items() if rows != want[h]}


def unpaired(found: set[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Item rows without their overview row, and overview rows of sound items without their item row."""
    overview = {(r[1], r[2], r[3]) for r in found if r[0] == schema.OVERVIEW_TABLE}
    items = {
        (r[1], "analysis" if r[0].startswith("ANALYSIS_") else "artifact", r[0].split("_", 1)[1])
        for r in found
        if r[0] != schema.OVERVIEW_TABLE and schema.item_kind(r[0])
    }
    sound = {(r[1], r[2], r[3]) for r in found if r[0] == schema.OVERVIEW_TABLE and r[4] in ("ok", "mismatch")}
    return (items - overview) | (sound - items)


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every sync row through mdbatch, typed, without push timestamps (whole rows, sorted, per table)."""
    with open_catalog(url) as cat:
        out = {}
        for table in cat.tables():
            if table == schema.RUN_TABLE or table.startswith(("ANALYSIS_", "ARTIFACT_")):
                chunks = [t.drop_columns([c for c in t.column_names if c == "timestamp_utc"]) for t in cat.iter_rows(table)]
                out[table] = sorted((tuple(r.values()) for t in chunks for r in t.to_pylist()), key=repr)
        return {t: r for t, r in out.items() if r}


def test_push_all_three_kinds_then_duplicates_diff_and_force(catalog_url, make_campaign, cluster):
    result = make_campaign(24, seed=31)
    analyses, artifacts = registered(result.dest)
    sims = len(result.simulations)
    first = push(result.dest, "systems", db=catalog_url, cluster=cluster, progress=False)
    assert first.simulations == sims and first.written == {"RUN_DATABASE": sims} and first.outcome == "completed"
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False)
    assert pushed.written == {"ANALYSIS_OVERVIEW": sum(analyses.values()), **{f"ANALYSIS_{n}": c for n, c in analyses.items()}}
    arts = push(result.dest, "artifacts", db=catalog_url, cluster=cluster, progress=False)
    assert arts.written == {"ANALYSIS_OVERVIEW": sum(artifacts.values()), **{f"ARTIFACT_{n}": c for n, c in artifacts.items()}}

    # Default mode: every key is checked first; nothing is written and the message names the flags.
    with pytest.raises(DuplicateKeysError, match=f"^{sims} records already exist .*--diff.*--force"):
        push(result.dest, "systems", db=catalog_url, cluster=cluster, progress=False)
    diff = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    assert sum(diff.written.values()) == 0 and sum(diff.skipped.values()) == 2 * sum(analyses.values())
    assert diff.transactions == 0
    forced = push(result.dest, "systems", db=catalog_url, cluster=cluster, progress=False, mode="force")
    assert forced.written == {"RUN_DATABASE": sims}

    run = {r["hash"]: r for r in rows(catalog_url, "RUN_DATABASE")}
    manifest = json.loads(result.manifest_path.read_text())
    assert {m["hash"]: m["status"] for m in manifest["simulations"]} == {h: r["status"] for h, r in run.items()}
    some = manifest["simulations"][0]
    assert run[some["hash"]]["directory"] == str(result.dest / some["dir"])
    assert run[some["hash"]]["input_data"].startswith("simulation_type:") and run[some["hash"]]["input_data_type"] == "yaml"
    with open_catalog(catalog_url) as cat:
        runs = cat.read_table("MDBATCH_RUNS")
    assert set(runs["command"]) == {"push systems", "push analysis", "push artifacts"}
    assert Counter(runs["status"]) == {"completed": 5, "failed": 1}


def test_data_csv_is_the_frame_and_rebuilds(catalog_url, make_campaign, cluster):
    result = make_campaign(12, seed=32)
    push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, name="area_per_lipid")
    got = rows(catalog_url, "ANALYSIS_area_per_lipid")
    assert len(got) == registered(result.dest)[0]["area_per_lipid"]
    assert {t for t in _tables(catalog_url) if t.startswith("ANALYSIS_") and t != "ANALYSIS_OVERVIEW"} == {"ANALYSIS_area_per_lipid"}
    for row in got:
        original = pq.read_table(row["data_path"]).to_pandas()
        frame = pd.read_csv(io.StringIO(row["data_csv"]))
        pd.testing.assert_frame_equal(frame, original, check_dtype=True)
        assert row["row_count"] == len(original) and row["data_csv_bytes"] == len(row["data_csv"].encode())
        assert json.loads(row["columns"]) == list(original.columns)
    overview = rows(catalog_url, "ANALYSIS_OVERVIEW")
    assert {(r["item_type"], r["item_name"]) for r in overview} == {("analysis", "area_per_lipid")}


def test_size_cap_keeps_only_path_and_size(catalog_url, make_campaign, cluster):
    result = make_campaign(10, seed=33)
    sizes = sorted(frame_csv(str(p), 10**9)[1] for p in result.dest.rglob(".analysis/*.parquet"))
    cap = sizes[len(sizes) // 2]  # the median frame: about half the frames are over the cap
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, max_csv=cap)
    stored = [r for t in _tables(catalog_url) if schema.item_kind(t) == "analysis" for r in rows(catalog_url, t)]
    over = [r for r in stored if r["data_csv"] is None]
    assert len(stored) == len(sizes) and 0 < sum(size > cap for size in sizes) < len(sizes)
    assert len(over) == pushed.over_cap == sum(size > cap for size in sizes)
    assert all(r["data_csv_bytes"] > cap and Path(r["data_path"]).is_file() for r in over)
    assert sorted(len(r["data_csv"].encode()) for r in stored if r["data_csv"] is not None) == [s for s in sizes if s <= cap]
    text, size = frame_csv(over[0]["data_path"], 10**9)
    assert size == over[0]["data_csv_bytes"] and text is not None


def test_audit_then_push_fills_in_the_data(catalog_url, make_campaign, cluster):
    result = make_campaign(10, seed=34)
    audit(result.dest, db=catalog_url, cluster=cluster, progress=False)
    before = rows(catalog_url, "ANALYSIS_area_per_lipid")
    assert len(before) == registered(result.dest)[0]["area_per_lipid"] and all(r["data_csv"] is None for r in before)
    # What an audit recorded is not "already pushed": --diff (and the default mode) fill the data in.
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    after = rows(catalog_url, "ANALYSIS_area_per_lipid")
    assert len(after) == len(before) and all(r["data_csv"] for r in after)
    assert pushed.written["ANALYSIS_area_per_lipid"] == len(before)
    again = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    assert sum(again.written.values()) == 0
    # A later audit keeps the pushed data while the analysis is unchanged.
    audit(result.dest, db=catalog_url, cluster=cluster, progress=False)
    assert [r["data_csv"] for r in rows(catalog_url, "ANALYSIS_area_per_lipid")] == [r["data_csv"] for r in after]


def test_faulty_campaign_pushes_what_is_sound(catalog_url, make_campaign, cluster):
    result = make_campaign(30, seed=35, faults=True)
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False)
    overview = rows(catalog_url, "ANALYSIS_OVERVIEW")
    statuses = Counter(r["status"] for r in overview)
    faults = Counter(f["kind"] for f in result.expected_findings)
    damaged = {
        "missing": faults["missing_file"],
        "invalid": faults["invalid_name"],
        "unreadable": faults["parquet_unreadable"],
        "mismatch": faults["row_count_mismatch"] + faults["columns_mismatch"],
    }
    corrupt = {f["simulation"] for f in result.expected_findings if f["kind"] == "registry_corrupt"}
    registries = [result.dest / s / ".analysis" / "metadata.json" for s in result.simulations if s not in corrupt]
    registered_analyses = sum(len(json.loads(r.read_text())["analyses"]) for r in registries if r.exists())
    assert statuses == {"ok": registered_analyses - sum(damaged.values()), **damaged}
    tables = _tables(catalog_url)
    assert not [t for t in tables if ";" in t or " " in t]
    assert pushed.invalid_names == faults["invalid_name"] and pushed.findings == len(expected(result))
    # Only analyses with a readable parquet get a data row.
    bad = {(r["hash"], r["item_name"]) for r in overview if r["status"] not in ("ok", "mismatch")}
    data_rows = {(r["hash"], t[len("ANALYSIS_") :]) for t in tables if schema.item_kind(t) == "analysis" for r in rows(catalog_url, t)}
    assert not bad & data_rows


def test_sources_summary_yaml_and_csv(tmp_path, make_campaign, cluster):
    result = make_campaign(8, seed=36)
    listed = [str(result.dest / s) for s in result.simulations[:5]]
    summary = tmp_path / "build_summary.yaml"
    summary.write_text("system_directory:\n" + "".join(f"  - {p}\n" for p in listed))
    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert push(summary, "systems", db=db, cluster=cluster, progress=False).simulations == 5
    table = tmp_path / "systems.csv"
    table.write_text("directory\n" + "".join(f"{s}\n" for s in result.simulations[5:]))
    assert push(table, "systems", db=db, cluster=cluster, progress=False, csv_root=result.dest).simulations == 3
    assert len(rows(db, "RUN_DATABASE")) == 8


def test_bad_arguments_are_usage_errors(tmp_path, make_campaign):
    result = make_campaign(2, seed=37)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    with pytest.raises(InvalidNameError):
        push(result.dest, "analysis", db=db, name="x; DROP TABLE RUN_DATABASE")
    with pytest.raises(UsageError):
        push(result.dest, "everything", db=db)
    with pytest.raises(UsageError):
        push(result.dest, "systems", db=db, name="area_per_lipid")
    assert not (tmp_path / "c.db").exists()  # refused before opening anything


def test_split_keeps_every_simulation_whole(make_campaign):
    result = make_campaign(20, seed=39)
    unit = collect([str(result.dest / s) for s in result.simulations], str(result.dest), "analysis")
    frames = sum(t.num_rows for t in unit.tables.values() if PARQUET_BYTES in t.column_names)
    parts = split_for_serialization(unit, 16 << 20, max_frames=4)
    # Simulations register at most 3 analyses, so whole simulations fit 4 frames a part.
    assert len(parts) >= math.ceil(frames / 4) > 1
    assert all(sum(t.num_rows for t in p.tables.values() if PARQUET_BYTES in t.column_names) <= 4 for p in parts)
    for name, table in unit.tables.items():
        assert sum(p.tables[name].num_rows for p in parts if name in p.tables) == table.num_rows, name
    owner: dict[str, int] = {}
    for index, part in enumerate(parts):
        for sim in {h for t in part.tables.values() for h in t["hash"].to_pylist()}:
            assert owner.setdefault(sim, index) == index, f"{sim} is in parts {owner[sim]} and {index}"
    assert set(owner) == set(unit.tables[schema.OVERVIEW_TABLE]["hash"].to_pylist())
    assert [p.simulations for p in parts] == [len(result.simulations)] + [0] * (len(parts) - 1)


def test_diff_completes_half_present_simulations(catalog_url, make_campaign, cluster):
    result = make_campaign(16, seed=38)
    push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False)
    clean, whole = raw_identities(catalog_url), snapshot(catalog_url)
    per_table = Counter(r[0] for r in clean if r[0] != schema.OVERVIEW_TABLE)
    first, second = (t for t, _ in per_table.most_common(2))
    lose_overview = sorted(r[1] for r in clean if r[0] == first)[:3]
    lose_items = sorted(r[1] for r in clean if r[0] == second and r[1] not in lose_overview)[:2]
    # Item rows without their overview rows, and overview rows without their item rows.
    raw_delete(catalog_url, schema.OVERVIEW_TABLE, lose_overview, first.split("_", 1)[1])
    raw_delete(catalog_url, second, lose_items)
    assert len(halves(raw_identities(catalog_url), clean)) == 5 and len(unpaired(raw_identities(catalog_url))) == 5

    done = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    assert done.written == {schema.OVERVIEW_TABLE: 5, second: 2}
    assert sum(done.skipped.values()) == len(clean) - 7
    assert raw_identities(catalog_url) == clean and snapshot(catalog_url) == whole


def _tables(url: str) -> list[str]:
    with open_catalog(url) as cat:
        return cat.tables()
