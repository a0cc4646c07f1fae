"""Lineage: `extras.depends_on` written by the Registry, checked by the scan (stale, missing, cycle),
recorded in the catalog (findings and MDBATCH_LINEAGE edges on every backend), counted by the
report's completeness view, followed by `store gc`, and the worked example of docs/lineage.md."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdbatch import Catalog, audit
from mdbatch import findings as fk
from mdbatch.cli import main
from mdbatch.dedupe.run import dedupe
from mdbatch.dedupe.store import Store, describe_orphans
from mdbatch.engine import ClusterOptions
from mdbatch.errors import MdbatchError
from mdbatch.generate import inject_fault
from mdbatch.generate.faults import ABSENT_UPSTREAM
from mdbatch.hashing import xxh3_128_hex
from mdbatch.lineage import Edge, InvalidDependencyError, check_lineage, check_references, depended_files
from mdbatch.registry import Registry
from mdbatch.registry.format import encode_registry, parse_registry
from mdbatch.scan import scan_simulation

from .conftest import expected

LOCAL = ClusterOptions(workers=1, dashboard=False)
REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


# -- a constructed campaign: one graph per simulation, fixed times --------------------------------


def _at(offset: timedelta) -> str:
    return (T0 + offset).isoformat()


def write_sim(root: Path, name: str, entries: dict[str, tuple[timedelta, list[Any] | Any | None]]) -> Path:
    """A simulation `root/name` (hash `h-<name>`) whose registry holds `entries`: "analysis:<n>" or
    "artifact:<n>" -> (registry time after T0, depends_on or None). Each entry's file is written and
    given an mtime one minute before its registry time (made, then registered)."""
    sim = root / name
    analysis = sim / ".analysis"
    analysis.mkdir(parents=True)
    (sim / "metadata.json").write_text(json.dumps({"hash": f"h-{name}", "simulation_type": "bilayer"}))
    registry: dict[str, Any] = {"schema_version": "1.0", "analyses": {}, "artifacts": {}}
    for item, (offset, deps) in entries.items():
        kind, entry_name = item.split(":")
        extras = {} if deps is None else {"depends_on": deps}
        stamp = {"created_at": _at(offset), "updated_at": _at(offset), "extras": extras}
        if kind == "analysis":
            table = pa.table({"x": [1, 2, 3]})
            pq.write_table(table, analysis / f"{entry_name}.parquet")
            registry["analyses"][entry_name] = {"filename": f"{entry_name}.parquet", "row_count": 3, "columns": ["x"], **stamp}
            target = analysis / f"{entry_name}.parquet"
        else:
            rel = f"artifacts/{entry_name}/plot.png"
            (analysis / rel).parent.mkdir(parents=True)
            (analysis / rel).write_bytes(b"png of " + entry_name.encode())
            registry["artifacts"][entry_name] = {"files": [rel], "checksums": {rel: sha256(analysis / rel)}, **stamp}
            target = analysis / rel
        set_mtime(target, offset - timedelta(minutes=1))
    (analysis / "metadata.json").write_bytes(encode_registry(registry))
    return sim


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_mtime(path: Path, offset: timedelta) -> None:
    ns = (T0 + offset - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    os.utime(path, ns=(ns, ns))


def constructed(root: Path) -> Path:
    """Four simulations: a clean chain, two stale edges (by registry time, by bytes), missing
    upstreams (absent, not a reference, depends_on not a list) and cycles (three entries; one self)."""
    write_sim(root, "clean", {"analysis:a": (0 * H, None), "analysis:b": (1 * H, ["analysis:a"]), "artifact:plot": (2 * H, ["analysis:b"])})
    stale = write_sim(
        root,
        "stale",
        {
            "analysis:a": (3 * H, None),  # updated after b was made
            "analysis:b": (1 * H, ["analysis:a"]),
            "analysis:c": (0 * H, None),
            "artifact:fig": (1 * H, ["analysis:c"]),
        },
    )
    set_mtime(stale / ".analysis" / "c.parquet", 2 * H)  # c's bytes rewritten after fig, its registry entry not
    write_sim(root, "missing", {"analysis:b": (0 * H, ["analysis:a", "rdf"]), "artifact:img": (1 * H, "analysis:b")})
    write_sim(
        root,
        "cycle",
        {
            "analysis:x": (0 * H, ["analysis:y"]),
            "analysis:y": (0 * H, ["analysis:z"]),
            "analysis:z": (0 * H, ["analysis:x"]),
            "analysis:w": (0 * H, ["analysis:w"]),
            "analysis:q": (1 * H, ["analysis:x"]),
        },
    )
    return root


EXPECTED_FINDINGS = [
    ("cycle", fk.DEPENDENCY_CYCLE, "analysis:w", "cycle: analysis:w -> analysis:w"),
    ("cycle", fk.DEPENDENCY_CYCLE, "analysis:x, analysis:y, analysis:z", "cycle: analysis:x -> analysis:y -> analysis:z -> analysis:x"),
    ("missing", fk.DEPENDENCY_MISSING, "analysis:b -> analysis:a", "analysis:a is not in the registry"),
    (
        "missing",
        fk.DEPENDENCY_MISSING,
        "analysis:b -> rdf",
        "rdf is not a reference ('analysis:<name>' or 'artifact:<name>' (name: letters, digits, underscore))",
    ),
    ("missing", fk.DEPENDENCY_MISSING, "artifact:img", 'extras.depends_on is "analysis:b", not a list of references'),
    (
        "stale",
        fk.STALE_DEPENDENCY,
        "analysis:b -> analysis:a",
        "analysis:a was updated at 2024-01-01T03:00:00+00:00, after analysis:b (2024-01-01T01:00:00+00:00)",
    ),
    (
        "stale",
        fk.STALE_DEPENDENCY,
        "artifact:fig -> analysis:c",
        "analysis:c's file .analysis/c.parquet was modified at 2024-01-01T02:00:00+00:00, after artifact:fig (2024-01-01T01:00:00+00:00)",
    ),
]
CYCLE = "part of a dependency cycle"
EXPECTED_EDGES = {
    "clean": [("analysis:b", "analysis:a", "ok", ""), ("artifact:plot", "analysis:b", "ok", "")],
    "stale": [
        ("analysis:b", "analysis:a", "stale", EXPECTED_FINDINGS[5][3]),
        ("artifact:fig", "analysis:c", "stale", EXPECTED_FINDINGS[6][3]),
    ],
    "missing": [
        ("analysis:b", "analysis:a", "missing", EXPECTED_FINDINGS[2][3]),
        ("analysis:b", "rdf", "missing", EXPECTED_FINDINGS[3][3]),
    ],
    "cycle": [
        ("analysis:q", "analysis:x", "ok", ""),
        ("analysis:w", "analysis:w", "cycle", CYCLE),
        ("analysis:x", "analysis:y", "cycle", CYCLE),
        ("analysis:y", "analysis:z", "cycle", CYCLE),
        ("analysis:z", "analysis:x", "cycle", CYCLE),
    ],
}
SIMS = ("clean", "cycle", "missing", "stale")


def findings_of(scans: list[Any]) -> list[tuple[str, str, str, str]]:
    return sorted((f.simulation, f.kind, f.item, f.detail) for s in scans for f in s.findings)


def test_constructed_graphs_give_exact_findings_and_edges(tmp_path: Path) -> None:
    root = constructed(tmp_path / "campaign")
    scans = [scan_simulation(root / name, root) for name in SIMS]
    assert findings_of(scans) == sorted(EXPECTED_FINDINGS)
    assert {s.simulation: [(e.item, e.depends_on, e.state, e.detail) for e in s.lineage] for s in scans} == EXPECTED_EDGES


def test_check_lineage_rules_at_their_edges() -> None:
    entry = {"filename": "a.parquet", "row_count": 1, "columns": ["x"]}
    registry = {
        "analyses": {
            "a": {**entry, "updated_at": "2024-01-01T00:00:00"},  # naive: UTC
            "b": {**entry, "filename": "b.parquet", "created_at": "2024-01-01T00:00:00+00:00", "extras": {"depends_on": ["analysis:a"]}},
            "c": {**entry, "filename": "c.parquet", "extras": {"depends_on": ["analysis:a", "analysis:a"]}},  # no time: never stale
        },
        "artifacts": {},
    }
    at = (datetime(2024, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    # Equal times are not "after"; one nanosecond later is.
    edges, found = check_lineage("s", registry, {".analysis/a.parquet": at})
    assert edges == (Edge("analysis:b", "analysis:a", "ok"), Edge("analysis:c", "analysis:a", "ok")) and found == ()
    edges, found = check_lineage("s", registry, {".analysis/a.parquet": at + 1})
    assert [(e.item, e.state) for e in edges] == [("analysis:b", "stale"), ("analysis:c", "ok")]
    assert [(f.kind, f.item) for f in found] == [(fk.STALE_DEPENDENCY, "analysis:b -> analysis:a")]
    # gc keeps the upstream's older bytes for the entries that predate its current ones (or cannot be dated).
    assert depended_files(registry, {".analysis/a.parquet": at + 1}) == {
        "a.parquet": [f"analysis:a <- analysis:b: {found[0].detail}", "analysis:a <- analysis:c: analysis:c has no registry time"]
    }
    assert depended_files(registry, {".analysis/a.parquet": at}) == {
        "a.parquet": ["analysis:a <- analysis:c: analysis:c has no registry time"]
    }


# -- the Registry writes the convention -----------------------------------------------------------


def test_registry_writes_depends_on_and_stays_an_mdfactory_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "sim")
    reg.add_analysis("rmsd", pd.DataFrame({"t": [0.0, 1.0]}))
    reg.add_analysis("rdf", pd.DataFrame({"r": [1.0]}), depends_on=["analysis:rmsd", "analysis:rmsd"], note="kept")
    (reg.analysis_dir / "artifacts").mkdir()
    (reg.analysis_dir / "artifacts" / "p.png").write_bytes(b"png")
    reg.add_artifact("plot", ["artifacts/p.png"], depends_on=["analysis:rdf", "artifact:legend"])  # unknown target: written
    assert reg.get_analysis("rdf")["extras"] == {"note": "kept", "depends_on": ["analysis:rmsd"]}
    assert reg.get_artifact("plot")["extras"] == {"depends_on": ["analysis:rdf", "artifact:legend"]}
    reg.update_analysis("rdf", pd.DataFrame({"r": [2.0]}))  # no depends_on: the recorded one is kept
    assert reg.get_analysis("rdf")["extras"] == {"depends_on": ["analysis:rmsd"]}
    reg.update_artifact("plot", ["artifacts/p.png"], depends_on=[])  # [] clears it
    assert reg.get_artifact("plot")["extras"] == {}
    for bad in (["rmsd"], ["analysis:"], ["table:x"], ["analysis:bad name"], [3], "analysis:rmsd"):
        with pytest.raises(InvalidDependencyError) as err:
            reg.add_analysis("other", pd.DataFrame({"x": [1]}), depends_on=bad)
        assert isinstance(err.value, MdbatchError) and isinstance(err.value, ValueError)
    assert "other" not in reg.list_analyses()  # refused before anything was written
    assert not (reg.analysis_dir / "other.parquet").exists()
    assert check_references(("artifact:a", "analysis:b", "artifact:a")) == ["artifact:a", "analysis:b"]
    data = reg.path.read_bytes()
    assert encode_registry(parse_registry(data)) == data  # MDFactory's reader keeps extras as they are


# -- through the audit, the catalog and the CLI ------------------------------------------------------


def test_audit_records_lineage_findings_and_a_fix_resolves_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = constructed(tmp_path / "campaign")
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    first = audit(root, db=url, cluster=LOCAL, progress=False)
    assert first.exit_code == 1
    assert sorted((f["simulation"], f["kind"], f["item"], f["detail"]) for f in first.findings().to_dict("records")) == sorted(
        EXPECTED_FINDINGS
    )
    assert {k: first.summary["findings"][k] for k in fk.LINEAGE_KINDS} == {
        fk.STALE_DEPENDENCY: 2,
        fk.DEPENDENCY_MISSING: 3,
        fk.DEPENDENCY_CYCLE: 2,
    }
    capsys.readouterr()
    assert main(["findings", "--db", url, "--kind", "stale_dependency", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["simulation"], r["item"], r["detail"]) for r in rows] == [
        (s, i, d) for s, k, i, d in EXPECTED_FINDINGS if k == "stale_dependency"
    ]
    assert main(["audit", str(root), "--db", url, "--workers", "1", "--no-dashboard", "--quiet", "--fail-on", "any"]) == 1
    # The unchanged re-audit kept every simulation as recorded (fingerprints hold): same findings and edges.
    with Catalog(url) as cat:
        assert sorted(
            cat.findings(kind=list(fk.LINEAGE_KINDS))[["simulation", "kind", "item", "detail"]].itertuples(index=False)
        ) == sorted(EXPECTED_FINDINGS)
        assert catalog_edges(cat) == EXPECTED_EDGES
    # Fix: redo b after a (a new updated_at), redo fig after c's bytes changed; drop the bad references.
    stale = Registry(root / "stale")
    stale.update_analysis("b", pd.DataFrame({"x": [1, 2, 3]}))
    stale.update_artifact("fig", ["artifacts/fig/plot.png"])
    missing = Registry(root / "missing")
    missing.add_analysis("a", pd.DataFrame({"x": [1]}))
    missing.update_analysis("b", pd.DataFrame({"x": [1, 2, 3]}), depends_on=["analysis:a"])
    missing.update_artifact("img", ["artifacts/img/plot.png"], depends_on=["analysis:b"])
    third = audit(root, db=url, cluster=LOCAL, progress=False)
    left = {(f["simulation"], f["kind"]) for f in third.findings().to_dict("records")}
    assert left == {("cycle", fk.DEPENDENCY_CYCLE)}
    with Catalog(url) as cat:
        resolved = cat.diff()
        assert sorted(resolved[resolved["change"] == "resolved"]["item"]) == sorted(
            f"{k}:{i}" for s, k, i, _ in EXPECTED_FINDINGS if s in ("stale", "missing")
        )
        assert cat.lineage("h-stale")["state"].tolist() == ["ok", "ok"]
        assert [(r.item, r.depends_on, r.state) for r in cat.lineage("h-missing").itertuples()] == [
            ("analysis:b", "analysis:a", "ok"),
            ("artifact:img", "analysis:b", "ok"),
        ]


def catalog_edges(cat: Catalog) -> dict[str, list[tuple[str, str, str, str]]]:
    """Every simulation's edges as `Catalog.lineage` returns them, looked up by hash."""
    out = {}
    for name in SIMS:
        frame = cat.lineage(f"h-{name}")
        assert set(frame["simulation"]) <= {name} and set(frame["hash"]) <= {f"h-{name}"}
        rows = [(r.item, r.depends_on, r.state, r.detail or "") for r in frame.itertuples()]
        if rows:
            out[name] = rows
    return out


def test_catalog_lineage_returns_exact_edges_on_every_backend(catalog_url: str, tmp_path: Path) -> None:
    root = constructed(tmp_path / "campaign")
    audit(root, db=catalog_url, cluster=LOCAL, progress=False)
    with Catalog(catalog_url) as cat:
        assert catalog_edges(cat) == EXPECTED_EDGES
        frame = cat.lineage("h-clean")
        assert list(frame.columns) == ["hash", "simulation", "item", "depends_on", "state", "detail", "root"]
        assert set(frame["root"]) == {str(root)}
        assert cat.lineage(state="stale")[["simulation", "item"]].values.tolist() == [["stale", "analysis:b"], ["stale", "artifact:fig"]]
        assert cat.lineage("no-such-hash").empty
        stale = cat.completeness(root, by="simulation_type")
        assert stale.set_index(["item_type", "item_name"])["stale"].to_dict() == {
            ("analysis", n): int(n == "b") for n in ("a", "b", "c", "q", "w", "x", "y", "z")
        } | {("artifact", "fig"): 1, ("artifact", "img"): 0, ("artifact", "plot"): 0}


def test_report_counts_stale_items(tmp_path: Path) -> None:
    from mdbatch.report.gather import gather

    root = constructed(tmp_path / "campaign")
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    audit(root, db=url, cluster=LOCAL, progress=False)
    with Catalog(url) as cat:
        data = gather(cat.backend)
    table = data.tables["completeness"]
    keys = [c["key"] for c in table.columns]
    assert keys.index("stale") == keys.index("lacking") + 1
    rows = [dict(zip(keys, r, strict=True)) for r in table.rows]
    assert {(r["item_name"], r["stale"]) for r in rows if r["stale"]} == {("b", 1), ("fig", 1)}
    assert data.completeness_totals["stale_simulations"] == 1


# -- fault injection on generated campaigns ---------------------------------------------------------


def test_injected_lineage_faults_are_found_exactly(make_campaign: Any) -> None:
    result = make_campaign(12, seed=4)
    manifest = json.loads(result.manifest_path.read_text())
    done = [s["dir"] for s in manifest["simulations"] if s["status"] == "completed"]
    want = set()
    for rel, kind in zip(done, fk.LINEAGE_KINDS, strict=False):
        got = inject_fault(result.dest / rel, kind)
        want.add((rel, got["kind"], got["item"]))
    scans = [scan_simulation(result.dest / rel, result.dest) for rel in result.simulations]
    assert {(f.simulation, f.kind, f.item) for s in scans for f in s.findings} == want | expected(result)
    assert any(i.endswith(f"analysis:{ABSENT_UPSTREAM}") for _, _, i in want) and len(want) == 3


# -- store gc follows the graph -------------------------------------------------------------------


def test_store_gc_keeps_what_a_live_entry_depends_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "campaign"
    for name in ("s1", "s2"):
        reg = Registry(root / name)
        (root / name).mkdir(parents=True)
        (root / name / "build.yaml").write_text(f"simulation: {name}\n")
        reg.add_analysis("rmsd", pa.table({"t": [0.0, 1.0, 2.0]}))
        (root / name / "topol.top").write_bytes(b"[ system ]\nshared topology\n")
    Registry(root / "s1").add_analysis("rdf", pa.table({"r": [1.0]}), depends_on=["analysis:rmsd"])
    store_dir = tmp_path / "store"
    dedupe(root, store=store_dir, statuses=None, mode="local", progress=False)
    store = Store.open(str(store_dir))
    rmsd = (root / "s1" / ".analysis" / "rmsd.parquet").read_bytes()
    top_obj = Path(store.object_path(xxh3_128_hex(b"[ system ]\nshared topology\n")))
    rmsd_obj = Path(store.object_path(xxh3_128_hex(rmsd)))
    assert rmsd_obj.exists() and top_obj.exists() and store.gc(dry_run=True).orphans == []
    # rmsd is redone in both simulations (new inodes) and the topology edited: both objects lose their last link.
    for name in ("s1", "s2"):
        Registry(root / name).update_analysis("rmsd", pa.table({"t": [5.0, 6.0, 7.0]}))
        (root / name / "topol.top").unlink()
        (root / name / "topol.top").write_bytes(b"edited\n")
    dry = store.gc(dry_run=True)
    assert [o["digest"] for o in dry.orphans] == [xxh3_128_hex(b"[ system ]\nshared topology\n")]
    assert dry.orphans[0]["why"] == "none of its 2 recorded paths still links to it"
    s1 = root / "s1" / ".analysis" / "rmsd.parquet"
    made, redone = Registry(root / "s1").get_analysis("rdf")["updated_at"], Registry(root / "s1").get_analysis("rmsd")["updated_at"]
    why = f"{s1}: analysis:rmsd <- analysis:rdf: analysis:rmsd was updated at {redone}, after analysis:rdf ({made})"
    assert [(k["digest"], k["why"]) for k in dry.kept_by_lineage] == [(xxh3_128_hex(rmsd), [why])]
    capsys.readouterr()
    assert main(["store", "gc", str(store_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 orphan objects" in out and "kept 1 unreferenced objects a live registry entry depends on (lineage):" in out
    assert f"    {why}" in out.splitlines()
    assert describe_orphans(dry)[0].endswith("(none of its 2 recorded paths still links to it)")
    done = store.gc(dry_run=False)
    assert done.deleted == 1 and not top_obj.exists() and rmsd_obj.read_bytes() == rmsd
    # The kept object's paths stay recorded: a later gc still knows why it keeps it.
    assert [k["digest"] for k in store.gc(dry_run=True).kept_by_lineage] == [xxh3_128_hex(rmsd)]
    # rdf is redone from the new rmsd (its dependency kept): nothing was made from the old bytes any more.
    Registry(root / "s1").update_analysis("rdf", pa.table({"r": [2.0]}))
    assert Registry(root / "s1").get_analysis("rdf")["extras"] == {"depends_on": ["analysis:rmsd"]}
    again = store.gc(dry_run=False)
    assert again.deleted == 1 and not rmsd_obj.exists() and again.kept_by_lineage == []


def test_store_gc_keeps_an_object_whose_registry_cannot_be_read(tmp_path: Path) -> None:
    root = tmp_path / "campaign"
    for name in ("s1", "s2"):
        (root / name).mkdir(parents=True)
        (root / name / "build.yaml").write_text(f"simulation: {name}\n")
        Registry(root / name).add_analysis("rmsd", pa.table({"t": [0.0, 1.0]}))
    dedupe(root, store=tmp_path / "store", statuses=None, mode="local", progress=False)
    for name in ("s1", "s2"):
        Registry(root / name).update_analysis("rmsd", pa.table({"t": [3.0]}))
    (root / "s1" / ".analysis" / "metadata.json").write_text("{ torn")
    gc = Store.open(str(tmp_path / "store")).gc(dry_run=False)
    assert gc.deleted == 0 and len(gc.kept_by_lineage) == 1
    assert gc.kept_by_lineage[0]["why"] == [
        f"{root / 's1' / '.analysis' / 'rmsd.parquet'}: the registry of {root / 's1'} cannot be read, so its lineage cannot be checked"
    ]


# -- docs/lineage.md: every command it shows runs, in order ---------------------------------------


def test_lineage_page_commands_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_docs import page_steps, run_command

    steps = page_steps("docs/lineage.md")
    shown = [" ".join(shlex.quote(a) for a in step.argv) for kind, step in steps if kind == "shell"]
    assert len(shown) >= 6 and any(s.startswith("findings --kind stale_dependency") for s in shown)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MDBATCH_DB", raising=False)
    monkeypatch.setenv("MDBATCH_CONFIG", str(workdir / "config.toml"))
    namespace: dict[str, Any] = {"__name__": "docs"}
    for kind, step in steps:
        if kind == "python":
            start, code = step
            exec(compile(code, f"docs/lineage.md:{start}", "exec"), namespace)  # noqa: S102 - the page's own example
        else:
            run_command(step, workdir, capsys, monkeypatch, lambda: pytest.fail("the lineage page uses no PostgreSQL"))
    # The example ends with the stale artifact redone and gc keeping the old upstream bytes.
    with sqlite3.connect(workdir / "mdbatch.db") as conn:
        states = conn.execute("SELECT state, COUNT(*) FROM MDBATCH_LINEAGE GROUP BY state").fetchall()
    assert states == [("ok", 1)]
    after = Store.open(str(workdir / "store")).gc(dry_run=True)
    assert after.kept_by_lineage == [] and after.orphans == []  # the old upstream bytes went with --delete
