"""The `mdbatch dedupe` and `mdbatch store` commands: output contracts, errors, recovery, rmlint parity."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from mdbatch.cli import main
from mdbatch.dedupe.journal import pending_journals

from ..conftest import IS_ROOT, need_service
from .conftest import snapshot

TOP = b"[ system ]\nbilayer\n" * 40


def test_report_writes_groups_and_summary(make_campaign, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(12, hostile=True, seed=2)
    groups, summary = tmp_path / "groups.jsonl", tmp_path / "summary.json"
    before = snapshot(camp.dest)
    code = main(["dedupe", str(camp.dest), "--groups", str(groups), "--json", str(summary), "--quiet", "--local"])
    assert code == 0 and snapshot(camp.dest) == before  # a report changes nothing
    lines = [json.loads(line) for line in groups.read_text(encoding="utf-8").splitlines()]
    doc = json.loads(summary.read_text())
    assert {"groups", "duplicate_files", "reclaimable_bytes", "dedup_ratio", "elapsed_s"} <= set(doc)
    assert doc["groups"] == len(lines) > 0
    assert doc["duplicate_files"] == sum(len(g["paths"]) for g in lines)
    assert doc["dedup_ratio"] > 1.0 and doc["mode"] == "report" and doc["apply"] is None
    for g in lines:
        assert set(g) == {"digest", "size", "paths"} and len(g["digest"]) == 32
        assert g["paths"] == sorted(g["paths"], key=lambda p: p.encode()) and len(g["paths"]) >= 2
        assert all(not p.startswith("/") for p in g["paths"])
    assert capsys.readouterr().out == ""


def test_dry_run_prints_the_plan_and_apply_does_it(tree, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    before = snapshot(root)
    assert main(["dedupe", str(root), "--apply", "--dry-run", "--local"]) == 0
    out = capsys.readouterr().out
    assert "hardlink" in out and "b/t.top -> a/t.top" in out and "would link 1 paths" in out
    assert os.lstat(root / "a" / "t.top").st_ino != os.lstat(root / "b" / "t.top").st_ino
    assert main(["dedupe", str(root), "--apply", "--local", "--quiet"]) == 0
    assert os.lstat(root / "a" / "t.top").st_ino == os.lstat(root / "b" / "t.top").st_ino
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--status", "finished"], "--status"),
        (["--store", "S", "--writable"], "--writable"),
        (["--apply", "--store", "S"], "not allowed with"),
        (["--min-size", "lots"], "size"),
    ],
)
def test_usage_errors_exit_2(tree, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}})
    assert main(["dedupe", str(root), "--local", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_recover_flag_finishes_an_interrupted_apply(tree, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from .test_recover import run_forked

    root = tree({f"s{i}": {"t.top": TOP, "x.mdp": TOP[::-1]} for i in range(4)})
    before = snapshot(root)
    run_forked(root, 3, "hardlink")  # dies after a temporary link was made
    (journal,) = pending_journals(str(root))
    assert main(["dedupe", "--recover", journal, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out.split("\nrecovered")[0])
    assert report["actions"] > 0 and report["anomalies"] == []
    assert snapshot(root) == before and not pending_journals(str(root))
    assert not list(root.glob("*/.mdbatch-tmp-*"))
    assert main(["dedupe", "--recover", journal[: -len(".active.jsonl")] + ".jsonl", "--quiet"]) == 0  # idempotent


def test_store_subcommands(tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}, "c": {"t.top": TOP}})
    store = tmp_path / "cas"
    assert main(["dedupe", str(root), "--store", str(store), "--local", "--quiet"]) == 0
    assert main(["store", "stats", str(store), "--json", "-"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["objects"] == 1 and stats["references"] == 3 and stats["dedup_ratio"] == 3.0
    assert main(["store", "verify", str(store)]) == 0
    assert "0 corrupt" in capsys.readouterr().out
    shutil.rmtree(root)
    assert main(["store", "gc", str(store)]) == 0
    assert "1 orphan objects" in capsys.readouterr().out and len(list(store.glob("objects/*/*"))) == 1
    assert main(["store", "gc", str(store), "--delete"]) == 0
    assert "deleted 1 orphan" in capsys.readouterr().out and not list(store.glob("objects/*/*"))
    assert main(["store", "stats", str(tmp_path)]) == 2  # not a store


def test_store_of_a_faulty_campaign_links_every_linkable_path(make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 13 item 7 as reported: `--faults` makes one nvt.mdp mode 000; root reads it, so its group
    splits by mode, and the second link set used to fail on the object the first had just stored."""
    from mdbatch.dedupe import dedupe
    from mdbatch.dedupe.store import Store

    camp = make_campaign(30, faults=True, seed=13)
    (fault,) = [f for f in camp.expected_findings if f["kind"] == "unreadable"]
    unreadable = f"{fault['simulation']}/{fault['item']}"
    store, out = tmp_path / "cas", tmp_path / "summary.json"
    before = snapshot(camp.dest) if IS_ROOT else None
    assert main(["dedupe", str(camp.dest), "--store", str(store), "--status", "all", "--local", "--quiet", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["apply"]["skipped"] == [] and doc["apply"]["links"] > 0
    objects = Store.open(str(store))
    report = dedupe(camp.dest, mode="local", progress=False)
    assert report.groups
    apart = sorted(
        p for g in report.groups for p in g.paths if os.lstat(camp.dest / p).st_ino != os.lstat(objects.object_path(g.digest)).st_ino
    )
    if IS_ROOT:  # root reads the mode-000 copy: a group member that cannot share the object's mode
        assert apart == [unreadable] and doc["apply"]["kept_out_of_store"] == 1
        assert snapshot(camp.dest) == before
    else:  # elsewhere it cannot be read: reported, never grouped
        assert apart == [] and doc["apply"]["kept_out_of_store"] == 0
        assert unreadable in [u["path"] for u in doc["unreadable"]]
    assert stat.S_IMODE(os.lstat(camp.dest / unreadable).st_mode) == 0
    assert main(["dedupe", str(camp.dest), "--store", str(store), "--status", "all", "--local", "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["apply"]["links"] == 0


def test_db_records_the_run_and_reuses_audit_digests(make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mdbatch.auditing import audit
    from mdbatch.catalog import open_catalog

    camp = make_campaign(12, seed=4)
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    audit(camp.dest, db=url, progress=False)
    out = tmp_path / "s.json"
    assert main(["dedupe", str(camp.dest), "--db", url, "--json", str(out), "--quiet", "--local"]) == 0
    doc = json.loads(out.read_text())
    assert doc["stages"]["digests_reused"] > 0 and doc["stages"]["full_hashed"] == 0
    catalog = open_catalog(url)
    try:
        runs = catalog.read_table("MDBATCH_RUNS")
    finally:
        catalog.close()
    row = runs[runs["command"] == "dedupe"].iloc[0]
    assert row["status"] == "completed" and row["run_id"] == doc["run_id"]
    stored = row["summary"] if isinstance(row["summary"], dict) else json.loads(row["summary"])
    assert stored["groups"] == doc["groups"]


@pytest.mark.integration
def test_groups_equal_rmlint(make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    need_service(shutil.which("rmlint") is not None, "rmlint is not installed (apt-get install rmlint)")
    camp = make_campaign(60, nested=True, hostile=True, seed=11)
    root = str(camp.dest)
    groups = tmp_path / "groups.jsonl"
    assert main(["dedupe", root, "--groups", str(groups), "--quiet", "--local"]) == 0
    ours = sorted(sorted(g["paths"]) for g in map(json.loads, groups.read_text(encoding="utf-8").splitlines()))
    report = tmp_path / "rmlint.json"
    # Duplicates only (-T df), hidden files too (.analysis/), symlinks ignored (-F), no empty files (default --size 1).
    subprocess.run(["rmlint", "-T", "df", "--hidden", "-F", "-o", f"json:{report}", root], check=True, capture_output=True)
    by_digest: dict[str, list[str]] = defaultdict(list)
    for rec in json.loads(report.read_bytes().decode("utf-8", "surrogateescape")):
        if rec.get("type") == "duplicate_file":
            rel = os.path.relpath(rec["path"], root)
            by_digest[rec["checksum"]].append(os.fsencode(rel).decode("utf-8", "backslashreplace"))
    theirs = sorted(sorted(v) for v in by_digest.values())
    assert ours == theirs and len(ours) > 10
    near = json.loads(camp.manifest_path.read_bytes())["near_duplicates"]  # same size, head and tail
    assert sorted(f"{e['simulation']}/{e['name']}" for e in near if e["variant"] == 0) in ours
