"""`dedupe --db` lists the audited simulations from the catalog and re-stats only the candidates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mdbatch.auditing import audit
from mdbatch.cli import main
from mdbatch.dedupe.run import dedupe

from .conftest import write_sim

SHARED = b"identical topology\n" * 40
OTHER = b"other bytes of the same size\n"


@pytest.fixture
def audited(tmp_path: Path) -> tuple[Path, str]:
    """Four simulations sharing a topology (and a same-size decoy pair), audited into a catalog."""
    root = tmp_path / "campaign"
    for k in range(4):
        write_sim(root, f"sim{k}", {"topol.top": SHARED, "decoy.txt": OTHER if k % 2 else OTHER.upper(), "own.dat": b"x" * (100 + k)})
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    audit(root, db=url, progress=False)
    return root, url


def groups(result: object) -> list[tuple[int, tuple[str, ...]]]:
    return sorted((g.size, tuple(g.paths)) for g in result.groups)  # type: ignore[attr-defined]


def test_unchanged_campaign_same_groups_as_a_walk_and_nothing_read(audited: tuple[Path, str]) -> None:
    root, url = audited
    walked = dedupe(root, db=url, mode="local", progress=False, listing="walk")
    listed = dedupe(root, db=url, mode="local", progress=False)
    assert groups(listed) == groups(walked)
    assert [g.paths for g in listed.groups if g.size == len(SHARED)] == [[f"sim{k}/topol.top" for k in range(4)]]
    doc = listed.summary
    assert doc["listing"] == {
        "source": "catalog",
        "simulations_from_catalog": 4,
        "simulations_walked": 0,
        "candidates_restatted": doc["stages"]["same_size"],
        "changed_since_audit": 0,
        "vanished_since_audit": 0,
        "vanished_examples": [],
    }
    assert doc["stages"]["full_hashed"] == doc["stages"]["head_tail_hashed"] == 0  # every candidate's digest reused
    assert walked.summary["listing"] == {"source": "walk"}


def test_changed_vanished_and_new_since_the_audit(audited: tuple[Path, str]) -> None:
    root, url = audited
    (root / "sim1" / "topol.top").write_bytes(b"X" * len(SHARED))  # same size, new bytes: must not keep its old digest
    (root / "sim2" / "topol.top").unlink()
    write_sim(root, "sim9", {"topol.top": SHARED})  # a simulation the audit never saw: walked
    (root / "sim3" / "late.top").write_bytes(SHARED)  # a file added to an audited simulation: not seen
    result = dedupe(root, db=url, mode="local", progress=False)
    [topology] = [g for g in result.groups if g.size == len(SHARED)]
    assert topology.paths == ["sim0/topol.top", "sim3/topol.top", "sim9/topol.top"]
    listing = result.summary["listing"]
    assert (listing["simulations_from_catalog"], listing["simulations_walked"]) == (4, 1)
    assert (listing["changed_since_audit"], listing["vanished_since_audit"], listing["vanished_examples"]) == (1, 1, ["sim2/topol.top"])
    stages = result.summary["stages"]
    assert stages["head_tail_hashed"] + stages["full_hashed"] >= 2  # the changed file and sim9's were read, not trusted
    walked = dedupe(root, db=url, mode="local", progress=False, listing="walk")
    [topology] = [g for g in walked.groups if g.size == len(SHARED)]
    assert topology.paths == ["sim0/topol.top", "sim3/late.top", "sim3/topol.top", "sim9/topol.top"]


def test_apply_from_a_catalog_listing_links_only_what_is_still_identical(audited: tuple[Path, str]) -> None:
    root, url = audited
    (root / "sim1" / "topol.top").write_bytes(b"X" * len(SHARED))
    assert main(["dedupe", str(root), "--db", url, "--apply", "--status", "all", "--local", "--quiet"]) == 0
    inodes = {k: os.lstat(root / f"sim{k}" / "topol.top").st_ino for k in range(4)}
    assert inodes[0] == inodes[2] == inodes[3] != inodes[1]
    assert (root / "sim1" / "topol.top").read_bytes() == b"X" * len(SHARED)
    assert (root / "sim0" / "topol.top").read_bytes() == SHARED


def test_listing_catalog_without_an_audit_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "campaign"
    write_sim(root, "sim0", {"a.txt": b"a"})
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["dedupe", str(root), "--db", url, "--listing", "catalog", "--local", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the catalog holds no audit of ") and "--listing walk" in err[0]
    assert main(["dedupe", str(root), "--listing", "catalog", "--no-db", "--local", "--quiet"]) == 2
    assert "needs a catalog" in capsys.readouterr().err
    out = tmp_path / "s.json"
    assert main(["dedupe", str(root), "--db", url, "--local", "--quiet", "--json", str(out)]) == 0  # auto: walks
    assert json.loads(out.read_text())["listing"] == {"source": "walk"}
