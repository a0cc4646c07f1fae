"""The public Python API: `import mdbatch` stays cheap, `mdbatch.audit`, `mdbatch.Catalog`, `mdbatch.Registry`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import mdbatch
from mdbatch.errors import CatalogError, InvalidNameError, UsageError
from mdbatch.generate import generate_campaign, inject_fault
from mdbatch.sync.push import push

from .test_report import expected_completeness, synthetic_catalog

FAULTS = ("missing", "mismatch", "unreadable", "unsafe")

HEAVY = ("pandas", "pyarrow", "sqlalchemy", "distributed", "dask", "numpy")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip()


def test_import_is_cheap_and_names_resolve() -> None:
    loaded = run_python(f"import sys, mdbatch; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    assert loaded == "[]"
    assert mdbatch.__all__ == sorted(mdbatch.__all__)
    for name in mdbatch.__all__:
        value = getattr(mdbatch, name)
        assert name == "__version__" or (value.__doc__ or "").strip(), f"{name} has no docstring"
    assert set(mdbatch.__all__) <= set(dir(mdbatch))
    assert (Path(mdbatch.__file__).parent / "py.typed").is_file()
    with pytest.raises(AttributeError):
        mdbatch.not_a_name  # noqa: B018


@pytest.mark.parametrize(
    "code",
    [
        "from mdbatch.auditing import AuditResult; import mdbatch; f = mdbatch.audit",
        "from mdbatch import audit as f",
        "import mdbatch.cli; import mdbatch; f = mdbatch.audit",
        "import mdbatch.auditing; import mdbatch; f = mdbatch.audit",
    ],
)
def test_audit_is_a_plain_function_in_any_import_order(code: str) -> None:
    out = run_python(
        code + "; import inspect, types, mdbatch.auditing as m;"
        " print(isinstance(f, types.FunctionType), f is m.audit, list(inspect.signature(f).parameters)[:3],"
        " inspect.signature(f).return_annotation, f.__doc__.split(chr(10))[0][:24])"
    )
    assert out == "True True ['source', 'db', 'cluster'] AuditResult Audit a campaign (a root"


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 12-simulation campaign audited twice through `mdbatch.audit` (a fault injected between), analyses pushed."""
    base = tmp_path_factory.mktemp("api")
    campaign = generate_campaign(base / "campaign", 12, seed=5)
    url = f"sqlite:///{base / 'cat.db'}"
    cluster = mdbatch.ClusterOptions(workers=1, dashboard=False)
    first = mdbatch.audit(campaign.dest, db=url, cluster=cluster, progress=False)
    broken = campaign.dest / campaign.simulations[0]
    fault = inject_fault(broken, "missing_file")
    second = mdbatch.audit(campaign.dest, db=url, cluster=cluster, progress=False)
    push(campaign.dest, "analysis", db=url, cluster=cluster, progress=False)
    return {"campaign": campaign, "url": url, "first": first, "second": second, "fault": fault, "broken": broken}


@pytest.fixture
def cat(audited: dict[str, Any]) -> Any:
    with mdbatch.Catalog(audited["url"]) as catalog:
        yield catalog


def test_audit_result(audited: dict[str, Any]) -> None:
    first, second = audited["first"], audited["second"]
    assert isinstance(second, mdbatch.AuditResult) and second.run_id != first.run_id
    assert first.summary["findings_total"] == 0 and second.summary["findings"]["missing_file"] == 1
    assert list(second.findings().columns) == ["simulation", "kind", "item", "detail"]


def test_audit_result_repr_is_one_line(audited: dict[str, Any]) -> None:
    second = audited["second"]
    assert repr(second) == (
        f"AuditResult(run_id={second.run_id!r}, outcome='completed', simulations=12, findings=1, catalog={audited['url']!r})"
    )
    assert "AuditResult" in (mdbatch.audit.__doc__ or "").split("\n\n")[0]  # the docstring says what it returns


@pytest.mark.parametrize("by", ["simulation_type", "parametrization", ("simulation_type", "parametrization"), ("status",)])
def test_completeness_counts_what_the_registries_hold(cat: Any, audited: dict[str, Any], by: str | tuple[str, ...]) -> None:
    root = str(audited["campaign"].dest)
    keys = (by,) if isinstance(by, str) else by
    frame = cat.completeness(root, by=by)
    assert list(frame.columns) == [*keys, "item_type", "item_name", "simulations", "have", "faulty", "lacking", "stale", *FAULTS]
    assert int(frame["stale"].sum()) == 0  # no registry declares a dependency (tests/test_lineage.py counts stale ones)
    assert all(str(frame[c].dtype) == "int64" for c in frame.columns[len(keys) + 2 :])
    counts, lacking = expected_completeness(cat.systems(), audited["second"].findings(), root, keys)
    got = {tuple(r[: len(keys) + 2]): tuple(r[len(keys) + 3 : len(keys) + 6]) for r in frame.itertuples(index=False)}
    assert got == counts
    assert (frame["simulations"] == frame["have"] + frame["faulty"] + frame["lacking"]).all()
    assert (frame["faulty"] == frame[list(FAULTS)].sum(axis=1)).all()
    # The one fault: an analysis file deleted, registered still -> faulty as `missing`.
    assert int(frame["missing"].sum()) == 1 and int(frame["faulty"].sum()) == 1
    listed = cat.lacking(root=root, by=by)
    assert {
        (os.path.relpath(d, root), t, n) for d, t, n in listed[["directory", "item_type", "item_name"]].itertuples(index=False)
    } == lacking


def test_completeness_filters_and_errors(cat: Any, audited: dict[str, Any]) -> None:
    systems = cat.systems()
    completed = cat.completeness(status="completed")
    counts, lacking = expected_completeness(
        systems[systems["status"] == "completed"], audited["second"].findings(), str(audited["campaign"].dest), ("simulation_type",)
    )
    assert {
        (t, i, n): (h, f, lk)
        for t, i, n, h, f, lk in completed[["simulation_type", "item_type", "item_name", "have", "faulty", "lacking"]].itertuples(
            index=False
        )
    } == counts
    kind = completed["simulation_type"].iloc[0]
    assert set(cat.completeness(simulation_type=kind)["simulation_type"]) == {kind}
    assert cat.completeness("/elsewhere").empty and list(cat.completeness("/elsewhere").columns)[:3] == [
        "simulation_type",
        "item_type",
        "item_name",
    ]
    # Which completed simulations lack an analysis that other completed ones of their type have?
    name = sorted(x[2] for x in lacking)[0]
    listed = cat.lacking(name, status="completed")
    root = str(audited["campaign"].dest)
    assert {os.path.relpath(d, root) for d in listed["directory"]} == {x[0] for x in lacking if x[2] == name} != set()
    assert list(listed.columns) == [
        "hash",
        "directory",
        "simulation_type",
        "parametrization",
        "status",
        "item_type",
        "item_name",
    ]
    for bad in ("colour", (), ("status", "status")):
        with pytest.raises(UsageError, match="by="):
            cat.completeness(by=bad)


def test_systems(cat: Any, audited: dict[str, Any]) -> None:
    campaign = audited["campaign"]
    systems = cat.systems()
    assert len(systems) == len(campaign.simulations) and systems["directory"].is_monotonic_increasing
    for status, n in audited["second"].summary["status"].items():
        assert len(cat.systems(status=status)) == n
    kind = systems["simulation_type"].iloc[0]
    assert set(cat.systems(simulation_type=kind)["hash"]) == set(systems.loc[systems["simulation_type"] == kind, "hash"])
    assert len(cat.systems(root=campaign.dest)) == len(systems) and cat.systems(root="/elsewhere").empty
    assert list(cat.systems(columns=["hash", "status"], root=campaign.dest).columns) == ["hash", "status"]


def test_analysis_is_the_rebuilt_frame(cat: Any, audited: dict[str, Any]) -> None:
    frame = cat.analysis("rdf")
    assert frame.columns[0] == "hash"
    expected = []
    for directory, sim_hash in zip(*cat.systems(columns=["directory", "hash"]).T.values, strict=True):
        registry = mdbatch.Registry(directory)
        if "rdf" in registry.list_analyses():
            part = pq.read_table(registry.analysis_dir / registry.get_analysis("rdf")["filename"]).to_pandas()
            expected.append(part.assign(hash=sim_hash)[["hash", *part.columns]])
    want = pd.concat(expected, ignore_index=True).sort_values(["hash", "frame"] if "frame" in frame else ["hash"], ignore_index=True)
    got = frame.sort_values(list(want.columns[:2]) if "frame" in frame else ["hash"], ignore_index=True)[list(want.columns)]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    one = want["hash"].iloc[0]
    assert set(cat.analysis("rdf", hash=one)["hash"]) == {one}
    with pytest.raises(UsageError, match="no analysis 'nope'.*rdf"):
        cat.analysis("nope")
    with pytest.raises(InvalidNameError):
        cat.analysis("<script>alert(1)</script>")


def test_artifacts(cat: Any) -> None:
    tables = [t for t in cat.tables() if t.startswith("ARTIFACT_")]
    frame = cat.artifacts(tables[0][len("ARTIFACT_") :])
    assert not frame.empty and all(isinstance(f, list) and f for f in frame["files"])
    assert all(set(c) == set(f) for c, f in zip(frame["checksums"], frame["files"], strict=True))


def test_findings_runs_and_diff(cat: Any, audited: dict[str, Any]) -> None:
    first, second = audited["first"], audited["second"]
    broken = os.path.relpath(audited["broken"], audited["campaign"].dest)
    findings = cat.findings()
    assert list(findings.columns) == ["run_id", "simulation", "kind", "item", "detail", "hash", "directory"]
    assert findings[["simulation", "kind", "item", "detail"]].to_dict("records") == second.findings().to_dict("records")
    # hash and directory are the simulation's in systems(): the two join without string work.
    joined = findings.merge(cat.systems(columns=["hash", "directory", "status"]), on=["hash", "directory"], how="left")
    assert list(joined["directory"]) == [str(audited["broken"])] and joined["status"].notna().all()
    assert cat.findings(first.run_id).empty and len(cat.findings(None)) == len(findings)
    assert list(cat.findings(kind="missing_file")["simulation"]) == [broken]
    runs = cat.runs(audited["campaign"].dest)
    assert list(runs["command"])[:2] == ["audit", "audit"] and len(runs) == 3  # and the push
    runs = runs[runs["command"] == "audit"]
    assert list(runs["run_id"]) == [first.run_id, second.run_id] and list(runs["findings_total"]) == [0, 1]
    diff = cat.diff()
    new = diff[(diff["scope"] == "finding") & (diff["change"] == "new")]
    assert list(new["simulation"]) == [broken] and new["item"].iloc[0].startswith("missing_file:")
    assert cat.run()["run_id"] == second.run_id and cat.run(first.run_id)["summary"]["findings_total"] == 0
    # a raw table read, in key order (two runs started within one second need not sort by time)
    assert sorted(cat.table("MDBATCH_RUNS", {"command": "audit"}, columns=["run_id"])["run_id"]) == sorted([first.run_id, second.run_id])
    with pytest.raises(UsageError):
        cat.table("sqlite_master")


def test_duplicates_and_storage(cat: Any, audited: dict[str, Any]) -> None:
    summary = audited["second"].summary
    dups = cat.duplicates()
    assert list(dups.columns) == ["size", "xxh3_128", "files", "inodes", "reclaimable_bytes", "paths"]
    assert (
        len(dups) == summary["duplicates"]["groups"] and int(dups["reclaimable_bytes"].sum()) == summary["duplicates"]["reclaimable_bytes"]
    )
    assert dups["reclaimable_bytes"].is_monotonic_decreasing
    for row in dups.head(5).itertuples():
        assert len(row.paths) == row.files and {os.path.getsize(p) for p in row.paths} == {row.size}
    assert len(cat.duplicates(top=3)) == 3
    by_ext = cat.storage()
    assert int(by_ext["bytes"].sum()) == summary["bytes"] and int(by_ext["files"].sum()) == summary["files"]
    assert "gro" in set(by_ext["extension"])
    assert len(cat.storage(by="simulation")) == summary["simulations"]
    by_type = cat.storage(by="simulation_type")
    assert int(by_type["bytes"].sum()) == summary["bytes"] and "(unknown)" not in set(by_type["simulation_type"])
    with pytest.raises(UsageError):
        cat.storage(by="colour")  # type: ignore[arg-type]


def test_report_from_the_api(cat: Any, audited: dict[str, Any], tmp_path: Path) -> None:
    info = cat.report(tmp_path / "r.html")
    assert isinstance(info, mdbatch.ReportInfo) and info.run_id == audited["second"].run_id and info.findings == 1


def test_missing_catalog_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    cat = mdbatch.Catalog(f"sqlite:///{tmp_path / 'absent.db'}")
    assert "absent.db" in repr(cat)
    with pytest.raises(CatalogError, match="does not exist"):
        cat.systems()
    assert not (tmp_path / "absent.db").exists()


def test_password_is_never_shown() -> None:
    cat = mdbatch.Catalog("postgresql://me:secret@db.example:5432/cat")
    assert "secret" not in repr(cat) and "secret" not in cat.url


@pytest.mark.parametrize("kind", ["sqlite", "csv"])
def test_inventory_queries_agree_across_backends(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if kind == "sqlite" else f"csv:///{tmp_path / 'csvcat'}"
    synthetic_catalog(url, "/r", 30, files_per_sim=3, finding_every=7)
    with mdbatch.Catalog(url) as cat:
        dups = cat.duplicates("/r")
        # topol.top: three variants of 10 files each, distinct inodes -> 9 reclaimable copies each.
        assert sorted(zip(dups["size"], dups["files"], dups["reclaimable_bytes"], strict=True)) == [
            (5000, 10, 45000),
            (5001, 10, 45009),
            (5002, 10, 45018),
        ]
        assert all(p.startswith("/r/group_000/") and p.endswith("/topol.top") for p in dups["paths"].iloc[0])
        assert json.loads(cat.storage("/r").to_json(orient="records")) == [
            {"extension": "xtc", "files": 30, "bytes": sum(1_000_000 + i for i in range(30))},
            {"extension": "top", "files": 30, "bytes": 150_030},
            {"extension": "gro", "files": 30, "bytes": 302 * 30},
        ]
        assert len(cat.findings()) == 5 and len(cat.systems(root="/r")) == 30


def test_example_script_runs(tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "examples" / "explore_catalog.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--sims", "16"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "valid: False" in done.stdout and "reclaimable in all:" in done.stdout
    assert "completed simulations lacking an item others of their type have:" in done.stdout
    assert (tmp_path / "report.html").stat().st_size > 10_000
