"""The synthetic campaign generator: determinism, MDFactory layout, registries, duplicates, faults."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdbatch import findings as fk
from mdbatch.dedupe.digests import HEAD_TAIL, WHOLE_LIMIT
from mdbatch.errors import UsageError
from mdbatch.generate import (
    FAULT_PLAN,
    HOSTILE_KINDS,
    MANIFEST_NAME,
    NEAR_DUPLICATE_NAME,
    NEAR_DUPLICATE_SIZE,
    NEAR_DUPLICATE_SPAN,
    SPACED_SIM_DIR,
    GenerateResult,
    SimulationSpec,
    add_hostile_entry,
    build_input,
    generate_campaign,
    inject_fault,
    simulation_hash,
    write_simulation,
)

Snapshot = list[tuple[Any, ...]]


def snapshot(root: Path) -> Snapshot:
    """Every entry under `root` (symlinks not followed): type, relative bytes path, mode, digest/target."""
    entries: Snapshot = []
    base = os.fsencode(root)
    for top, dirs, names in os.walk(base):
        dirs.sort()
        for name in sorted(dirs + names):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, base)
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entries.append(("link", rel, os.readlink(path)))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(("dir", rel, mode))
            else:
                try:
                    with open(path, "rb") as handle:
                        digest = hashlib.sha256(handle.read()).hexdigest()
                except PermissionError:  # the mode-000 fault file, when not root
                    digest = "unreadable"
                entries.append(("file", rel, mode, info.st_size, digest))
    return entries


def status_of(sim: Path) -> str:
    """The scanner's status rule."""
    if (sim / "prod.gro").exists():
        return "completed"
    if (sim / "prod.xtc").exists():
        return "production"
    if all((sim / name).exists() for name in ("min.gro", "nvt.gro", "npt.gro")):
        return "equilibrated"
    return "build"


def registry_of(sim: Path) -> dict[str, Any]:
    return json.loads((sim / ".analysis" / "metadata.json").read_bytes())


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    """200 simulations with every fault, hostile entries and a nested layout."""
    return generate_campaign(tmp_path_factory.mktemp("gen") / "camp", 200, seed=7, faults=True, nested=True, hostile=True)


@pytest.fixture(scope="module")
def manifest(campaign: GenerateResult) -> dict[str, Any]:
    return json.loads(campaign.manifest_path.read_bytes())


@pytest.fixture(scope="module")
def clean_dirs(campaign: GenerateResult, manifest: dict[str, Any]) -> list[str]:
    touched = {f["simulation"] for f in campaign.expected_findings}
    return [sim["dir"] for sim in manifest["simulations"] if sim["dir"] not in touched]


def _findings(campaign: GenerateResult, kind: str) -> list[dict[str, Any]]:
    return [f for f in campaign.expected_findings if f["kind"] == kind]


# --- determinism --------------------------------------------------------------------------------


def test_same_arguments_give_identical_trees_across_processes(tmp_path: Path) -> None:
    args: dict[str, Any] = {"seed": 5, "faults": True, "nested": True, "hostile": True}
    first = generate_campaign(tmp_path / "one", 20, **args)
    generate_campaign(tmp_path / "two", 20, **args)
    code = (
        "import sys; from mdbatch.generate import generate_campaign; "
        "generate_campaign(sys.argv[1], 20, seed=5, faults=True, nested=True, hostile=True)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "three")], check=True, env=env)
    reference = snapshot(tmp_path / "one")
    assert snapshot(tmp_path / "two") == reference
    assert snapshot(tmp_path / "three") == reference
    assert len(first.simulations) == 21 and any(entry[0] == "link" for entry in reference)


def test_different_seed_gives_different_tree(tmp_path: Path) -> None:
    one = generate_campaign(tmp_path / "one", 10, seed=1)
    two = generate_campaign(tmp_path / "two", 10, seed=2)
    assert not set(one.simulations) & set(two.simulations)
    assert snapshot(one.dest) != snapshot(two.dest)


def test_pinned_hash_of_a_build_input() -> None:
    yaml_bytes = build_input(SimulationSpec("bilayer", "charmm36m", "completed", seed=1))
    assert yaml_bytes.startswith(b"simulation_type: bilayer\nengine: gromacs\nparametrization: charmm36m\n")
    assert simulation_hash(yaml_bytes) == hashlib.sha1(yaml_bytes).hexdigest().upper()
    assert simulation_hash(yaml_bytes) == "671C6B081CE64D1D70FABF59F949D98019947FB7"


def test_faults_do_not_change_the_base_campaign(tmp_path: Path) -> None:
    plain = generate_campaign(tmp_path / "plain", 30, seed=4)
    faulty = generate_campaign(tmp_path / "faulty", 30, seed=4, faults=True)
    assert plain.simulations == faulty.simulations
    assert plain.expected_findings == [] and len(faulty.expected_findings) == len(FAULT_PLAN)


# --- layout, manifest, statuses -------------------------------------------------------------------


def test_manifest_lists_every_simulation_with_its_status(campaign: GenerateResult, manifest: dict[str, Any]) -> None:
    sims = manifest["simulations"]
    assert [sim["dir"] for sim in sims] == campaign.simulations and len(sims) == 201
    assert manifest["parameters"] == {
        "sims": 200,
        "seed": 7,
        "faults": True,
        "profile": "metadata",
        "traj_mb": None,
        "nested": True,
        "hostile": True,
    }
    assert manifest["expected_findings"] == campaign.expected_findings
    counts = collections.Counter(sim["status"] for sim in sims[:200])
    assert counts == {"completed": 140, "production": 20, "equilibrated": 20, "build": 20}
    for sim in sims:
        path = campaign.dest / sim["dir"]
        yaml_bytes = (path / f"{sim['hash']}.yaml").read_bytes()
        assert simulation_hash(yaml_bytes) == sim["hash"]
        assert len(sim["hash"]) == 40 and sim["hash"] == sim["hash"].upper()
        metadata = json.loads((path / "metadata.json").read_bytes())
        assert metadata["hash"] == sim["hash"] and metadata["engine"] == "gromacs"
        assert metadata["simulation_type"] == sim["simulation_type"] in ("bilayer", "mixedbox", "solvation")
        assert metadata["parametrization"] == sim["parametrization"]
        assert status_of(path) == sim["status"]
        assert all((path / name).is_file() for name in ("system.pdb", "topology.top", "em.mdp", "prod.mdp"))
    assert len({sim["hash"] for sim in sims}) == len(sims)


def test_nested_layout_and_spaced_directory(campaign: GenerateResult) -> None:
    dirs = campaign.simulations
    assert dirs[-1] == SPACED_SIM_DIR
    assert {d.split("/")[0] for d in dirs[:-1]} >= {"group_0", "group_1", "a"}
    assert sum(d.startswith("a/b/") for d in dirs) == 8
    assert all(d.rsplit("/", 1)[-1] == json.loads((campaign.dest / d / "metadata.json").read_bytes())["hash"] for d in dirs[:-1])
    assert not (campaign.dest / MANIFEST_NAME).is_dir()


def test_totals_count_regular_files_under_simulations(campaign: GenerateResult, manifest: dict[str, Any]) -> None:
    files = size = 0
    for rel in campaign.simulations:
        for entry in snapshot(campaign.dest / rel):
            if entry[0] == "file":
                files += 1
                size += entry[3]
    assert (campaign.files, campaign.bytes) == (files, size)
    # Pinned: 3,236 files and 19,674,270 bytes, plus the three near-duplicate checkpoints.
    assert (files, size) == (3_236 + 3, 19_674_270 + 3 * NEAR_DUPLICATE_SIZE)
    assert (manifest["files"], manifest["bytes"]) == (files, size)
    assert 14 <= files / len(campaign.simulations) <= 18
    assert 80_000 <= size / len(campaign.simulations) <= 140_000


# --- registries ---------------------------------------------------------------------------------


def test_clean_registries_match_their_files(campaign: GenerateResult, manifest: dict[str, Any], clean_dirs: list[str]) -> None:
    status = {sim["dir"]: sim["status"] for sim in manifest["simulations"]}
    for rel in clean_dirs:
        sim = campaign.dest / rel
        if status[rel] == "build":
            assert not (sim / ".analysis").exists()
            continue
        registry = registry_of(sim)
        assert registry["schema_version"] == "1.0"
        if status[rel] == "completed":
            assert 2 <= len(registry["analyses"]) <= 3 and len(registry["artifacts"]) == 1
        elif status[rel] == "equilibrated":
            assert registry["analyses"] == {} and registry["artifacts"] == {}
        parquets = {p.name for p in (sim / ".analysis").glob("*.parquet")}
        assert parquets == {entry["filename"] for entry in registry["analyses"].values()}
        for name, entry in registry["analyses"].items():
            assert entry["filename"] == f"{name}.parquet" and entry["extras"] == {}
            meta = pq.read_metadata(sim / ".analysis" / entry["filename"])
            assert meta.num_rows == entry["row_count"] and 20 <= meta.num_rows < 400
            assert meta.schema.to_arrow_schema().names == entry["columns"]
            assert entry["created_at"].endswith("+00:00") and entry["updated_at"] >= entry["created_at"]
        for name, artifact in registry["artifacts"].items():
            assert 1 <= len(artifact["files"]) <= 2 and set(artifact["checksums"]) == set(artifact["files"])
            for path in artifact["files"]:
                assert path.startswith(f"artifacts/{name}/")
                data = (sim / ".analysis" / path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == artifact["checksums"][path]


# --- duplicates ---------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shared_engine_files_and_copied_trajectories(campaign: GenerateResult, manifest: dict[str, Any]) -> None:
    sims = [sim for sim in manifest["simulations"] if sim["dir"] != SPACED_SIM_DIR]
    by_kind: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    pdbs = set()
    trajectories: collections.Counter[str] = collections.Counter()
    for sim in sims:
        path = campaign.dest / sim["dir"]
        by_kind[(sim["simulation_type"], sim["parametrization"])].add(_digest(path / "topology.top"))
        pdbs.add(_digest(path / "system.pdb"))
        if (path / "prod.xtc").exists():
            trajectories[_digest(path / "prod.xtc")] += 1
    assert len(by_kind) == 9 and all(len(digests) == 1 for digests in by_kind.values())
    assert len(pdbs) == len(sims)
    with_xtc = sum(trajectories.values())
    shared = sum(count for count in trajectories.values() if count > 1)
    assert with_xtc == 160 and 0.1 <= shared / with_xtc <= 0.35


def test_bytes_profile_writes_incompressible_trajectories(tmp_path: Path) -> None:
    result = generate_campaign(tmp_path / "big", 4, seed=3, profile="bytes", traj_mb=0.25)
    trajectories = [campaign_file for rel in result.simulations if (campaign_file := result.dest / rel / "prod.xtc").exists()]
    assert trajectories
    for path in trajectories:
        data = path.read_bytes()
        assert len(data) == 256 * 1024 and len(zlib.compress(data)) > 0.99 * len(data)
    assert json.loads(result.manifest_path.read_bytes())["parameters"]["traj_mb"] == 0.25


# --- faults -------------------------------------------------------------------------------------


def test_one_fault_per_simulation_in_distinct_completed_simulations(campaign: GenerateResult, manifest: dict[str, Any]) -> None:
    expected = campaign.expected_findings
    assert collections.Counter(f["kind"] for f in expected) == collections.Counter(kind for kind, _ in FAULT_PLAN)
    assert len({f["simulation"] for f in expected}) == len(FAULT_PLAN)
    status = {sim["dir"]: sim["status"] for sim in manifest["simulations"]}
    assert all(status[f["simulation"]] == "completed" for f in expected)
    assert [f for f in expected if f.get("requires_non_root")] == _findings(campaign, fk.UNREADABLE)
    assert expected == sorted(expected, key=lambda f: (f["simulation"], f["kind"], f["item"]))


def test_registry_faults_on_disk(campaign: GenerateResult) -> None:
    (missing,) = _findings(campaign, fk.MISSING_FILE)
    sim = campaign.dest / missing["simulation"]
    assert registry_of(sim)["analyses"][missing["item"]] and not (sim / ".analysis" / f"{missing['item']}.parquet").exists()

    (extra,) = _findings(campaign, fk.EXTRA_FILE)
    assert extra["item"] == ".analysis/stray.parquet"
    stray = campaign.dest / extra["simulation"] / extra["item"]
    assert pq.read_metadata(stray).num_rows > 0
    assert "stray" not in registry_of(campaign.dest / extra["simulation"])["analyses"]

    (rows,) = _findings(campaign, fk.ROW_COUNT_MISMATCH)
    sim = campaign.dest / rows["simulation"]
    entry = registry_of(sim)["analyses"][rows["item"]]
    assert pq.read_metadata(sim / ".analysis" / entry["filename"]).num_rows != entry["row_count"]

    (columns,) = _findings(campaign, fk.COLUMNS_MISMATCH)
    sim = campaign.dest / columns["simulation"]
    entry = registry_of(sim)["analyses"][columns["item"]]
    names = pq.read_metadata(sim / ".analysis" / entry["filename"]).schema.to_arrow_schema().names
    assert set(names) != set(entry["columns"])

    truncated, wrong_schema = sorted(
        _findings(campaign, fk.REGISTRY_CORRUPT), key=lambda f: (campaign.dest / f["simulation"] / f["item"]).stat().st_size
    )
    assert {truncated["item"], wrong_schema["item"]} == {".analysis/metadata.json"}
    with pytest.raises(json.JSONDecodeError):
        registry_of(campaign.dest / truncated["simulation"])
    bad = registry_of(campaign.dest / wrong_schema["simulation"])
    assert [e["row_count"] for e in bad["analyses"].values()].count("many") == 1


def test_parquet_and_artifact_faults_on_disk(campaign: GenerateResult) -> None:
    sizes = []
    for finding in _findings(campaign, fk.PARQUET_UNREADABLE):
        sim = campaign.dest / finding["simulation"]
        path = sim / ".analysis" / registry_of(sim)["analyses"][finding["item"]]["filename"]
        sizes.append(path.stat().st_size)
        with pytest.raises(pa.ArrowInvalid):
            pq.read_metadata(path)
    assert len(sizes) == 2 and min(sizes) == 0 and max(sizes) > 0

    (missing,) = _findings(campaign, fk.ARTIFACT_MISSING_FILE)
    (checksum,) = _findings(campaign, fk.ARTIFACT_CHECKSUM_MISMATCH)
    for finding in (missing, checksum):
        name, path = finding["item"].split(":", 1)
        sim = campaign.dest / finding["simulation"]
        artifact = registry_of(sim)["artifacts"][name]
        assert path in artifact["files"] and path in artifact["checksums"]
        target = sim / ".analysis" / path
        if finding is missing:
            assert not target.exists()
        else:
            assert hashlib.sha256(target.read_bytes()).hexdigest() != artifact["checksums"][path]


def test_name_path_and_permission_faults_on_disk(campaign: GenerateResult) -> None:
    unsafe = _findings(campaign, fk.UNSAFE_PATH)
    assert {f["item"].split(":", 1)[1] for f in unsafe} == {"../../../etc/passwd", "/etc/hostname"}
    for finding in unsafe:
        name, path = finding["item"].split(":", 1)
        artifact = registry_of(campaign.dest / finding["simulation"])["artifacts"][name]
        assert path in artifact["files"] and len(artifact["checksums"][path]) == 64

    invalid = _findings(campaign, fk.INVALID_NAME)
    assert {f["item"] for f in invalid} == {"x; DROP TABLE RUN_DATABASE;--", 'it\'s "quoted"'}
    for finding in invalid:
        sim = campaign.dest / finding["simulation"]
        entry = registry_of(sim)["analyses"][finding["item"]]
        assert entry["filename"] == f"{finding['item']}.parquet"
        meta = pq.read_metadata(sim / ".analysis" / entry["filename"])
        assert meta.num_rows == entry["row_count"] and meta.schema.to_arrow_schema().names == entry["columns"]

    (unreadable,) = _findings(campaign, fk.UNREADABLE)
    assert unreadable["item"] == "nvt.mdp" and unreadable["requires_non_root"] is True
    assert stat.S_IMODE((campaign.dest / unreadable["simulation"] / "nvt.mdp").stat().st_mode) == 0


# --- hostile entries ----------------------------------------------------------------------------


def test_hostile_entries_exist_in_clean_simulations(campaign: GenerateResult, manifest: dict[str, Any], clean_dirs: list[str]) -> None:
    entries = manifest["hostile_entries"]
    assert [e["kind"] for e in entries] == list(HOSTILE_KINDS)
    assert all(e["simulation"] in clean_dirs for e in entries)
    where = {e["kind"]: os.fsencode(campaign.dest / e["simulation"]) for e in entries}
    assert os.path.isfile(os.path.join(where["non_utf8_name"], b"caf\xe9.dat"))
    assert os.path.isfile(os.path.join(where["spaces_and_quotes"], b'notes "final" it\'s v2.txt'))
    assert os.readlink(os.path.join(where["symlink_loop"], b"loop")) == b"."
    assert os.readlink(os.path.join(where["symlink_escape"], b"escape")) == b"/etc"
    dangling = os.path.join(where["dangling_symlink"], b"dangling")
    assert os.path.islink(dangling) and not os.path.exists(dangling)
    spaced = campaign.dest / SPACED_SIM_DIR
    assert " " in SPACED_SIM_DIR and json.loads((spaced / "metadata.json").read_bytes())["hash"] == manifest["simulations"][-1]["hash"]


def test_near_duplicates_differ_only_where_head_and_tail_sampling_cannot_see(
    campaign: GenerateResult, manifest: dict[str, Any], clean_dirs: list[str]
) -> None:
    entries = manifest["near_duplicates"]
    assert [(e["name"], e["variant"]) for e in entries] == [(NEAR_DUPLICATE_NAME, 0), (NEAR_DUPLICATE_NAME, 1), (NEAR_DUPLICATE_NAME, 0)]
    sims = [e["simulation"] for e in entries]
    assert len(set(sims)) == 3 and set(sims) <= set(clean_dirs)
    assert not set(sims) & {e["simulation"] for e in manifest["hostile_entries"]}
    first, near, twin = ((campaign.dest / e["simulation"] / e["name"]).read_bytes() for e in entries)
    assert len(first) == len(near) == NEAR_DUPLICATE_SIZE > WHOLE_LIMIT  # sampled at head and tail, not read whole
    assert first == twin and first != near
    assert first[:HEAD_TAIL] == near[:HEAD_TAIL] and first[-HEAD_TAIL:] == near[-HEAD_TAIL:]
    differ = [k for k in range(len(first)) if first[k] != near[k]]
    offset, length = NEAR_DUPLICATE_SPAN
    assert differ and offset <= differ[0] and differ[-1] < offset + length
    assert offset >= HEAD_TAIL and offset + length <= NEAR_DUPLICATE_SIZE - HEAD_TAIL
    # Exactly these three files were added, and the totals count them.
    found = sorted(str(p.relative_to(campaign.dest)) for p in campaign.dest.rglob("*.cpt"))
    assert found == sorted(f"{sim}/{NEAR_DUPLICATE_NAME}" for sim in sims)


def test_hostile_only_campaign_records_no_findings(tmp_path: Path) -> None:
    result = generate_campaign(tmp_path / "camp", 3, seed=1, hostile=True)
    assert result.expected_findings == [] and len(result.simulations) == 4
    manifest = json.loads(result.manifest_path.read_bytes())
    assert [e["variant"] for e in manifest["near_duplicates"]] == [0, 1, 0]
    plain = generate_campaign(tmp_path / "plain", 3, seed=1)
    extra = result.dest / SPACED_SIM_DIR
    extra_files = sum(1 for e in snapshot(extra) if e[0] == "file")
    # The extra simulation (18 files of its own), two hostile regular files and three checkpoints.
    assert (plain.files, extra_files, result.files) == (44, 18 + 1 + 1, 44 + 18 + 2 + 3)
    assert (plain.bytes, result.bytes) == (249_777, 1_158_933)
    assert json.loads(result.manifest_path.read_bytes())["files"] == result.files


# --- single simulations and helpers ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "production", "equilibrated", "build"])
def test_write_simulation_status_files(tmp_path: Path, status: str) -> None:
    record = write_simulation(tmp_path, simulation_type="mixedbox", parametrization="martini3", status=status, seed=9)
    assert record.path == tmp_path / record.hash and status_of(record.path) == status
    assert (record.path / f"{record.hash}.yaml").is_file()
    assert (record.path / ".analysis").exists() == (status != "build")
    assert (record.files, record.bytes) == (
        sum(1 for e in snapshot(record.path) if e[0] == "file"),
        sum(e[3] for e in snapshot(record.path) if e[0] == "file"),
    )


def test_write_simulation_shared_trajectory_and_faults(tmp_path: Path) -> None:
    one = write_simulation(tmp_path, seed=1, trajectory=42)
    two = write_simulation(tmp_path, seed=2, trajectory=42, dirname="with space")
    assert (one.path / "prod.xtc").read_bytes() == (two.path / "prod.xtc").read_bytes()
    assert inject_fault(two.path, fk.ROW_COUNT_MISMATCH) == {"kind": fk.ROW_COUNT_MISMATCH, "item": two.analyses[0]}
    with pytest.raises(UsageError):
        inject_fault(one.path, "no_such_fault")
    with pytest.raises(UsageError):
        add_hostile_entry(one.path, "no_such_entry")


@pytest.mark.parametrize(
    ("sims", "kwargs"),
    [
        (-1, {}),
        (14, {"faults": True}),
        (3, {"profile": "huge"}),
        (3, {"traj_mb": 5}),
        (3, {"profile": "bytes", "traj_mb": 0}),
    ],
)
def test_invalid_arguments_are_usage_errors(tmp_path: Path, sims: int, kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        generate_campaign(tmp_path / "camp", sims, **kwargs)


def test_non_empty_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(UsageError):
        generate_campaign(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
