"""Tests for mdbatch.registry: MDFactory's format, validation, locked atomic updates, integrity."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from filelock import FileLock

from mdbatch.errors import (
    InvalidNameError,
    MdbatchError,
    RegistryCorruptError,
    RegistryLockError,
)
from mdbatch.registry import (
    ANALYSIS_DIRNAME,
    REGISTRY_FILENAME,
    SCHEMA_VERSION,
    Registry,
    RegistryEntryExistsError,
    RegistryEntryNotFoundError,
    UnsafePathError,
    data_columns,
    encode_registry,
    parse_registry,
)

HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256(b"hello")
ANALYSIS_KEYS = ["filename", "row_count", "columns", "created_at", "updated_at", "extras"]
ARTIFACT_KEYS = ["files", "checksums", "created_at", "updated_at", "extras"]
BAD_NAMES = ["x; DROP TABLE RUN_DATABASE;--", 'a"b', "../x", "ü", "a" * 55, "", "1abc", "a-b"]


def frame(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"frame": list(range(rows)), "value": [0.5 * i for i in range(rows)]})


def write_artifact_file(sim: Path, rel: str, data: bytes) -> None:
    path = sim / ANALYSIS_DIRNAME / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def tmp_files(sim: Path) -> list[Path]:
    return sorted((sim / ANALYSIS_DIRNAME).rglob("*.tmp"))


def utc(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


# --------------------------------------------------------------------------- paths and loading


def test_constants() -> None:
    assert (SCHEMA_VERSION, ANALYSIS_DIRNAME, REGISTRY_FILENAME) == ("1.0", ".analysis", "metadata.json")


def test_paths_from_sim_dir_and_from_analysis_dir(tmp_path: Path) -> None:
    for given in (tmp_path, tmp_path / ".analysis"):
        registry = Registry(given)
        assert registry.sim_dir == tmp_path
        assert registry.analysis_dir == tmp_path / ".analysis"
        assert registry.path == tmp_path / ".analysis" / "metadata.json"
        assert registry.registry_path == registry.path
        assert registry.lock_path == tmp_path / ".analysis" / "metadata.json.lock"


def test_missing_registry_loads_empty_and_creates_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    assert registry.load() == {"schema_version": "1.0", "analyses": {}, "artifacts": {}}
    assert registry.list_analyses() == []
    assert registry.list_artifacts() == []
    assert not (tmp_path / ".analysis").exists()


def test_corrupt_registry_raises_and_is_never_overwritten(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.analysis_dir.mkdir()
    registry.path.write_bytes(b'{"analyses": {"rdf": ')
    with pytest.raises(RegistryCorruptError) as info:
        registry.load()
    assert info.value.path == str(registry.path)
    with pytest.raises(RegistryCorruptError):
        registry.add_analysis("rdf", frame())
    with pytest.raises(RegistryCorruptError):
        registry.remove_analysis("rdf")
    assert registry.path.read_bytes() == b'{"analyses": {"rdf": '
    assert not (registry.analysis_dir / "rdf.parquet").exists()
    assert tmp_files(tmp_path) == []


# --------------------------------------------------------------------------- analyses


def test_add_analysis_round_trip(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    entry = registry.add_analysis("rdf", frame(), bins=3, label="water")
    assert list(entry) == ANALYSIS_KEYS
    assert entry["filename"] == "rdf.parquet"
    assert entry["row_count"] == 3
    assert entry["columns"] == ["frame", "value"]
    assert entry["extras"] == {"bins": 3, "label": "water"}
    assert entry["created_at"] == entry["updated_at"]
    utc(entry["created_at"])
    assert registry.get_analysis("rdf") == entry
    assert registry.get_entry("rdf") == entry
    assert registry.list_analyses() == ["rdf"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / ".analysis" / "rdf.parquet"), frame())
    assert tmp_files(tmp_path) == []


def test_list_analyses_is_sorted(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for name in ("zeta", "Alpha", "mid_1", "_x"):
        registry.add_analysis(name, frame(1))
    assert registry.list_analyses() == ["Alpha", "_x", "mid_1", "zeta"]


def test_dataframe_index_is_not_written_or_recorded(tmp_path: Path) -> None:
    df = frame().set_axis(pd.Index([10, 11, 12], name="idx"))
    entry = Registry(tmp_path).add_analysis("rdf", df)
    assert entry["columns"] == ["frame", "value"]
    assert pq.read_schema(tmp_path / ".analysis" / "rdf.parquet").names == ["frame", "value"]


def test_arrow_table_records_data_columns_only(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(frame().set_axis(pd.Index([7, 8, 9])))
    assert table.schema.names == ["frame", "value", "__index_level_0__"]
    entry = Registry(tmp_path).add_analysis("density", table)
    assert (entry["row_count"], entry["columns"]) == (3, ["frame", "value"])
    assert pq.read_table(tmp_path / ".analysis" / "density.parquet").num_rows == 3
    assert data_columns(table.schema) == ["frame", "value"]


def test_add_existing_analysis_raises_and_changes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add_analysis("rdf", frame())
    before = (registry.path.read_bytes(), (registry.analysis_dir / "rdf.parquet").read_bytes())
    with pytest.raises(RegistryEntryExistsError) as info:
        registry.add_analysis("rdf", frame(7))
    assert isinstance(info.value, KeyError) and isinstance(info.value, MdbatchError)
    assert str(info.value) == f"{registry.path}: analysis 'rdf' already exists"
    after = (registry.path.read_bytes(), (registry.analysis_dir / "rdf.parquet").read_bytes())
    assert after == before


def test_update_keeps_created_at_and_moves_updated_at(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.add_analysis("rdf", frame(), bins=3)
    second = registry.update_analysis("rdf", frame(5), bins=5)
    assert second["created_at"] == first["created_at"]
    assert utc(second["updated_at"]) > utc(first["updated_at"])
    assert (second["row_count"], second["extras"]) == (5, {"bins": 5})
    assert pq.read_metadata(tmp_path / ".analysis" / "rdf.parquet").num_rows == 5
    assert registry.get_analysis("rdf") == second


def test_update_creates_a_missing_analysis(tmp_path: Path) -> None:
    entry = Registry(tmp_path).update_analysis("rdf", frame(2))
    assert (entry["row_count"], entry["created_at"]) == (2, entry["updated_at"])


def test_get_missing_analysis_raises_key_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryEntryNotFoundError) as info:
        Registry(tmp_path).get_analysis("nope")
    assert isinstance(info.value, KeyError)
    assert str(info.value) == f"{tmp_path / '.analysis' / 'metadata.json'}: no analysis named 'nope'"
    with pytest.raises(KeyError):
        Registry(tmp_path).remove_analysis("nope")


def test_entry_errors_survive_pickling() -> None:
    for error in (
        RegistryEntryExistsError("analysis", "rdf", "s/.analysis/metadata.json"),
        RegistryEntryNotFoundError("artifact", "snap"),
        UnsafePathError("../x"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), vars(copy)) == (type(error), str(error), vars(error))


def test_remove_analysis_deletes_file_unless_asked_not_to(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for name in ("a", "b", "c"):
        registry.add_analysis(name, frame())
    registry.remove_analysis("a")
    registry.remove_analysis("b", delete_file=False)
    registry.remove_entry("c")
    assert registry.list_analyses() == []
    assert sorted(p.name for p in registry.analysis_dir.glob("*.parquet")) == ["b.parquet", "c.parquet"]


def test_remove_refuses_to_delete_an_unsafe_filename(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.analysis_dir.mkdir()
    victim = tmp_path / "victim.parquet"
    victim.write_bytes(b"keep me")
    entry = {"filename": "../victim.parquet", "row_count": 0, "columns": []}
    registry.path.write_text(json.dumps({"analyses": {"evil": entry}}))
    with pytest.raises(UnsafePathError):
        registry.remove_analysis("evil")
    assert victim.read_bytes() == b"keep me"
    registry.remove_analysis("evil", delete_file=False)
    assert registry.list_analyses() == []
    assert victim.read_bytes() == b"keep me"


def test_bad_data_and_extras_are_usage_errors(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(MdbatchError, match="DataFrame or pyarrow Table"):
        registry.add_analysis("rdf", [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        registry.add_analysis("rdf", frame(), when=datetime(2024, 1, 1))
    assert not registry.path.exists()


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_never_created(tmp_path: Path, name: str) -> None:
    write_artifact_file(tmp_path, "artifacts/x/a.txt", b"hello")
    registry = Registry(tmp_path)
    calls = [
        lambda: registry.add_analysis(name, frame()),
        lambda: registry.update_analysis(name, frame()),
        lambda: registry.add_entry(name, frame()),
        lambda: registry.update_entry(name, frame()),
        lambda: registry.add_artifact(name, ["artifacts/x/a.txt"]),
        lambda: registry.update_artifact_entry(name, ["artifacts/x/a.txt"], {}),
    ]
    for call in calls:
        with pytest.raises(InvalidNameError) as info:
            call()
        assert info.value.name == name
    assert not registry.path.exists()
    assert list(registry.analysis_dir.glob("*.parquet")) == []


def test_longest_valid_name_is_accepted(tmp_path: Path) -> None:
    name = "a" * 54
    Registry(tmp_path).add_analysis(name, frame())
    assert Registry(tmp_path).list_analyses() == [name]


# --------------------------------------------------------------------------- artifacts


def test_add_artifact_computes_sha256(tmp_path: Path) -> None:
    write_artifact_file(tmp_path, "artifacts/snap/a.txt", b"hello")
    write_artifact_file(tmp_path, "artifacts/snap/b.bin", b"")
    registry = Registry(tmp_path)
    entry = registry.add_artifact("snap", ["artifacts/snap/a.txt", Path("artifacts/snap/b.bin")], frames=2)
    assert list(entry) == ARTIFACT_KEYS
    assert entry["files"] == ["artifacts/snap/a.txt", "artifacts/snap/b.bin"]
    assert entry["checksums"] == {
        "artifacts/snap/a.txt": HELLO_SHA256,
        "artifacts/snap/b.bin": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    assert entry["extras"] == {"frames": 2}
    assert registry.get_artifact("snap") == entry
    assert registry.get_artifact_entry("snap") == entry
    assert registry.list_artifacts() == ["snap"]


def test_artifact_hash_streams_files_larger_than_a_chunk(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.2 MiB: three 1 MiB reads
    write_artifact_file(tmp_path, "artifacts/big/blob.bin", data)
    entry = Registry(tmp_path).add_artifact("big", ["artifacts/big/blob.bin"])
    assert entry["checksums"]["artifacts/big/blob.bin"] == hashlib.sha256(data).hexdigest()


def test_given_checksums_are_recorded_as_given(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    sums = {"artifacts/t/x.dcd": "ab" * 32}
    entry = registry.add_artifact_entry("t", ["artifacts/t/x.dcd"], sums)
    assert entry["checksums"] == sums
    with pytest.raises(ValueError, match="not in files"):
        registry.update_artifact("t", ["artifacts/t/x.dcd"], {"artifacts/t/other": "00"})


def test_missing_artifact_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(MdbatchError, match="artifact file not found"):
        Registry(tmp_path).add_artifact("snap", ["artifacts/snap/none.txt"])
    with pytest.raises(MdbatchError, match="at least one file"):
        Registry(tmp_path).add_artifact("snap", [])


def test_artifact_update_remove_and_exists(tmp_path: Path) -> None:
    write_artifact_file(tmp_path, "artifacts/snap/a.txt", b"hello")
    registry = Registry(tmp_path)
    first = registry.add_artifact("snap", ["artifacts/snap/a.txt"])
    with pytest.raises(RegistryEntryExistsError):
        registry.add_artifact("snap", ["artifacts/snap/a.txt"])
    write_artifact_file(tmp_path, "artifacts/snap/a.txt", b"hello again")
    second = registry.update_artifact_entry("snap", ["artifacts/snap/a.txt"], None, note="v2")
    assert second["created_at"] == first["created_at"]
    assert utc(second["updated_at"]) > utc(first["updated_at"])
    assert second["checksums"] == {"artifacts/snap/a.txt": hashlib.sha256(b"hello again").hexdigest()}
    registry.remove_artifact_entry("snap")
    assert registry.list_artifacts() == []
    assert (registry.analysis_dir / "artifacts/snap/a.txt").exists()
    registry.add_artifact("snap", ["artifacts/snap/a.txt"])
    registry.remove_artifact("snap", delete_files=True)
    assert not (registry.analysis_dir / "artifacts/snap/a.txt").exists()
    with pytest.raises(RegistryEntryNotFoundError):
        registry.get_artifact("snap")


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "artifacts/../../x",
        "..",
        ".",
        "..\\secret",
        "\\\\host\\share",
        "C:\\x",
        "a\\b",
        "a\x00b",
        "",
    ],
)
def test_unsafe_artifact_paths_are_rejected(tmp_path: Path, path: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        Registry(tmp_path).add_artifact("snap", [path], {path: "00"})
    assert isinstance(info.value, ValueError) and isinstance(info.value, MdbatchError)
    assert not (tmp_path / ".analysis").exists()


def test_artifact_paths_are_stored_normalized(tmp_path: Path) -> None:
    write_artifact_file(tmp_path, "artifacts/snap/a.txt", b"hello")
    entry = Registry(tmp_path).add_artifact("snap", ["./artifacts//snap/a.txt"])
    assert entry["files"] == ["artifacts/snap/a.txt"]
    assert entry["checksums"] == {"artifacts/snap/a.txt": HELLO_SHA256}


# --------------------------------------------------------------------------- MDFactory format


def mdfactory_registry(sim: Path) -> dict[str, Any]:
    """A registry as MDFactory writes it: json.dump(indent=2), parquet via df.to_parquet()."""
    analysis = sim / ".analysis"
    write_artifact_file(sim, "artifacts/bilayer_snapshot/frame_0.png", b"hello")
    df = pd.DataFrame({"time_ps": [0.0, 10.0], "apl_nm2": [0.64, 0.65]})
    df.to_parquet(analysis / "area_per_lipid.parquet")
    registry = {
        "schema_version": "1.0",
        "analyses": {
            "area_per_lipid": {
                "filename": "area_per_lipid.parquet",
                "row_count": 2,
                "columns": ["time_ps", "apl_nm2"],
                "created_at": "2025-01-02T03:04:05.123456+00:00",
                "updated_at": "2025-01-02T03:04:05.123456+00:00",
                "extras": {"start_ns": 10, "stride": 5},
            }
        },
        "artifacts": {
            "bilayer_snapshot": {
                "files": ["artifacts/bilayer_snapshot/frame_0.png"],
                "checksums": {"artifacts/bilayer_snapshot/frame_0.png": HELLO_SHA256},
                "created_at": "2025-01-02T03:04:06.000001+00:00",
                "updated_at": "2025-01-02T03:04:06.000001+00:00",
                "extras": {},
            }
        },
    }
    with open(analysis / "metadata.json", "w") as handle:
        json.dump(registry, handle, indent=2)
    return registry


def test_reads_a_registry_written_by_mdfactory(tmp_path: Path) -> None:
    expected = mdfactory_registry(tmp_path)
    registry = Registry(tmp_path)
    assert registry.load() == expected
    assert registry.list_analyses() == ["area_per_lipid"]
    assert registry.get_entry("area_per_lipid") == expected["analyses"]["area_per_lipid"]
    assert registry.get_artifact_entry("bilayer_snapshot") == expected["artifacts"]["bilayer_snapshot"]


def test_writes_mdfactory_layout_and_keeps_what_it_does_not_know(tmp_path: Path) -> None:
    expected = mdfactory_registry(tmp_path)
    raw = json.loads((tmp_path / ".analysis/metadata.json").read_text())
    raw["lab_note"] = "kept"
    raw["analyses"]["area_per_lipid"]["reviewer"] = "kept too"
    (tmp_path / ".analysis/metadata.json").write_text(json.dumps(raw, indent=2))
    registry = Registry(tmp_path)
    registry.update_analysis("density", frame())
    data = registry.path.read_bytes()
    written = json.loads(data)
    assert data == encode_registry(written) and data.endswith(b"}\n")
    assert data.decode("utf-8") == json.dumps(written, indent=2) + "\n"
    assert list(written) == ["schema_version", "analyses", "artifacts", "lab_note"]
    assert written["lab_note"] == "kept"
    apl = written["analyses"]["area_per_lipid"]
    assert apl == {**expected["analyses"]["area_per_lipid"], "reviewer": "kept too"}
    assert list(written["analyses"]["density"]) == ANALYSIS_KEYS
    assert written["artifacts"] == expected["artifacts"]


def test_mdfactory_entry_aliases_record_metadata_only(tmp_path: Path) -> None:
    mdfactory_registry(tmp_path)
    parquet = tmp_path / ".analysis" / "area_per_lipid.parquet"
    before = parquet.read_bytes()
    registry = Registry(tmp_path)
    df = pd.DataFrame({"time_ps": [0.0, 10.0, 20.0], "apl_nm2": [0.64, 0.65, 0.66]})
    entry = registry.update_entry("area_per_lipid", df, start_ns=0)
    assert parquet.read_bytes() == before  # MDFactory's update_entry never writes the data file
    assert (entry["row_count"], entry["columns"]) == (3, ["time_ps", "apl_nm2"])
    assert entry["created_at"] == "2025-01-02T03:04:05.123456+00:00"
    assert registry.add_entry("new_one", df)["filename"] == "new_one.parquet"
    assert not (tmp_path / ".analysis" / "new_one.parquet").exists()
    with pytest.raises(RegistryEntryExistsError):
        registry.add_entry("new_one", df)


def test_written_files_follow_the_directory_permissions(tmp_path: Path) -> None:
    analysis = tmp_path / ".analysis"
    analysis.mkdir()
    analysis.chmod(0o750)
    registry = Registry(tmp_path)
    registry.add_analysis("rdf", frame())
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o640
    assert stat.S_IMODE((analysis / "rdf.parquet").stat().st_mode) == 0o640
    registry.path.chmod(0o664)
    registry.update_analysis("rdf", frame(4))
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o664


# --------------------------------------------------------------------------- parse_registry


GOOD_ANALYSIS = {"filename": "rdf.parquet", "row_count": 3, "columns": ["r", "g"]}
GOOD_ARTIFACT = {"files": ["a"], "checksums": {"a": "00"}}


def registry_bytes(analysis: Any = None, artifact: Any = None) -> bytes:
    """A registry with one analysis and one artifact, either of which may be replaced."""
    registry = {
        "schema_version": "1.0",
        "analyses": {"rdf": GOOD_ANALYSIS if analysis is None else analysis},
        "artifacts": {"s": GOOD_ARTIFACT if artifact is None else artifact},
    }
    return json.dumps(registry).encode()


def without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


CORRUPT = {
    "truncated": (registry_bytes()[:-7], "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "non_utf8": (b'{"schema_version": "1.0\xff"}', "not UTF-8"),
    "utf16": ('{"analyses": {}}'.encode("utf-16"), "not UTF-8"),
    "list_top_level": (b"[]", "top level is an array"),
    "string_top_level": (b'"registry"', "top level is a string"),
    "null_top_level": (b"null", "top level is null"),
    "schema_version_number": (b'{"schema_version": 1.0}', "schema_version"),
    "schema_version_null": (b'{"schema_version": null}', "schema_version"),
    "analyses_list": (b'{"analyses": []}', "analyses is an array"),
    "analyses_null": (b'{"analyses": null}', "analyses is null"),
    "artifacts_string": (b'{"artifacts": "x"}', "artifacts is a string"),
    "analysis_not_object": (registry_bytes(analysis=3), "entry is a number"),
    "filename_missing": (registry_bytes(analysis=without(GOOD_ANALYSIS, "filename")), "filename"),
    "filename_number": (registry_bytes(analysis={**GOOD_ANALYSIS, "filename": 5}), "filename"),
    "row_count_string": (registry_bytes(analysis={**GOOD_ANALYSIS, "row_count": "12"}), "row_count"),
    "row_count_true": (registry_bytes(analysis={**GOOD_ANALYSIS, "row_count": True}), "row_count"),
    "row_count_float": (registry_bytes(analysis={**GOOD_ANALYSIS, "row_count": 3.0}), "row_count"),
    "row_count_negative": (registry_bytes(analysis={**GOOD_ANALYSIS, "row_count": -1}), "row_count"),
    "row_count_missing": (registry_bytes(analysis=without(GOOD_ANALYSIS, "row_count")), "row_count"),
    "columns_string": (registry_bytes(analysis={**GOOD_ANALYSIS, "columns": "r,g"}), "columns"),
    "columns_numbers": (registry_bytes(analysis={**GOOD_ANALYSIS, "columns": ["r", 1]}), "columns"),
    "columns_missing": (registry_bytes(analysis=without(GOOD_ANALYSIS, "columns")), "columns"),
    "artifact_not_object": (registry_bytes(artifact=["a"]), "entry is an array"),
    "files_string": (registry_bytes(artifact={**GOOD_ARTIFACT, "files": "a"}), "files"),
    "files_numbers": (registry_bytes(artifact={**GOOD_ARTIFACT, "files": [1]}), "files"),
    "files_missing": (registry_bytes(artifact=without(GOOD_ARTIFACT, "files")), "files"),
    "checksums_list": (registry_bytes(artifact={**GOOD_ARTIFACT, "checksums": ["00"]}), "checksums"),
    "checksums_number": (registry_bytes(artifact={**GOOD_ARTIFACT, "checksums": {"a": 0}}), "checksums"),
    "checksums_missing": (registry_bytes(artifact=without(GOOD_ARTIFACT, "checksums")), "checksums"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_parse_registry_rejects_corrupt_forms(case: str) -> None:
    data, reason = CORRUPT[case]
    with pytest.raises(RegistryCorruptError) as info:
        parse_registry(data, "sim/.analysis/metadata.json")
    assert reason in info.value.reason
    assert info.value.path == "sim/.analysis/metadata.json"
    assert str(info.value).startswith("sim/.analysis/metadata.json: ")


def test_parse_registry_names_the_bad_entry() -> None:
    with pytest.raises(RegistryCorruptError) as info:
        parse_registry(registry_bytes(analysis={**GOOD_ANALYSIS, "row_count": "12"}))
    assert info.value.reason == "analyses['rdf']: row_count must be a non-negative integer, got '12'"
    assert info.value.path == ""


def test_parse_registry_accepts_and_completes() -> None:
    assert parse_registry(b"{}") == {"analyses": {}, "artifacts": {}}
    assert parse_registry(registry_bytes()) == json.loads(registry_bytes())
    odd = {
        "schema_version": "2.0",
        "future": [1, 2],
        "analyses": {"bad name!": {**GOOD_ANALYSIS, "row_count": 0, "columns": [], "x": None}},
    }
    assert parse_registry(json.dumps(odd).encode()) == {**odd, "artifacts": {}}


# --------------------------------------------------------------------------- concurrency


def _concurrent_writer(sim_dir: str, worker: int, start: Any) -> None:
    """Child process body: wait for the start signal, then add 25 entries as fast as possible."""
    assert start.wait(120)
    registry = Registry(sim_dir)
    for item in range(25):
        name = f"w{worker}_item{item}"
        if item % 2 == 0:
            registry.add_analysis(name, pd.DataFrame({"worker": [worker] * (item + 1)}), item=item)
        else:
            write_artifact_file(Path(sim_dir), f"artifacts/{name}/data.txt", f"{worker}:{item}".encode())
            registry.add_artifact(name, [f"artifacts/{name}/data.txt"])


def test_eight_processes_lose_no_update(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_concurrent_writer, args=(str(tmp_path), w, start)) for w in range(8)]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(240)
    assert [process.exitcode for process in workers] == [0] * 8

    registry = Registry(tmp_path)
    loaded = parse_registry(registry.path.read_bytes())
    names = [f"w{w}_item{i}" for w in range(8) for i in range(25)]
    assert len(loaded["analyses"]) + len(loaded["artifacts"]) == 200
    assert sorted(loaded["analyses"]) == sorted(n for n in names if int(n.rsplit("item")[1]) % 2 == 0)
    assert sorted(loaded["artifacts"]) == sorted(n for n in names if int(n.rsplit("item")[1]) % 2 == 1)
    for name, entry in loaded["analyses"].items():
        item = int(name.rsplit("item")[1])
        assert (entry["row_count"], entry["extras"]) == (item + 1, {"item": item})
        assert pq.read_metadata(registry.analysis_dir / entry["filename"]).num_rows == item + 1
    for name, entry in loaded["artifacts"].items():
        worker, item = name[1:].split("_item")
        digest = hashlib.sha256(f"{worker}:{item}".encode()).hexdigest()
        assert entry["checksums"] == {f"artifacts/{name}/data.txt": digest}
    assert tmp_files(tmp_path) == []


def test_lock_timeout_raises_registry_lock_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path, lock_timeout=0.2)
    registry.analysis_dir.mkdir()
    held = FileLock(str(registry.lock_path))
    with held, pytest.raises(RegistryLockError, match="not acquired within 0.2 s"):
        registry.add_analysis("rdf", frame())
    assert not registry.path.exists()
    assert not (registry.analysis_dir / "rdf.parquet").exists()
    registry.add_analysis("rdf", frame())
    assert registry.list_analyses() == ["rdf"]


# --------------------------------------------------------------------------- check_integrity


@pytest.fixture
def clean_sim(tmp_path: Path) -> Path:
    sim = tmp_path / "ABCDEF0123456789ABCDEF0123456789ABCDEF01"
    write_artifact_file(sim, "artifacts/snap/a.txt", b"hello")
    registry = Registry(sim)
    registry.add_analysis("rdf", frame())
    registry.add_analysis("density", frame(4))
    registry.add_artifact("snap", ["artifacts/snap/a.txt"])
    return sim


def findings_of(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((finding["kind"], finding["item"]) for finding in report["findings"])


def test_check_integrity_clean(clean_sim: Path) -> None:
    assert Registry(clean_sim).check_integrity() == {
        "valid": True,
        "missing_files": [],
        "extra_files": [],
        "row_count_mismatches": [],
        "artifact_missing_files": [],
        "artifact_checksum_mismatches": [],
        "findings": [],
    }


def test_check_integrity_missing_parquet(clean_sim: Path) -> None:
    (clean_sim / ".analysis" / "rdf.parquet").unlink()
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert report["missing_files"] == ["rdf"]
    assert findings_of(report) == [("missing_file", "rdf")]
    assert report["row_count_mismatches"] == [] and report["artifact_missing_files"] == []


def test_check_integrity_row_count_mismatch(clean_sim: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame(5), preserve_index=False), clean_sim / ".analysis" / "rdf.parquet")
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert report["row_count_mismatches"] == [{"name": "rdf", "expected": 3, "actual": 5}]
    assert findings_of(report) == [("row_count_mismatch", "rdf")]


def test_check_integrity_artifact_checksum_mismatch(clean_sim: Path) -> None:
    (clean_sim / ".analysis" / "artifacts/snap/a.txt").write_bytes(b"jello")
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert report["artifact_checksum_mismatches"] == [
        {
            "name": "snap",
            "file": "artifacts/snap/a.txt",
            "expected": HELLO_SHA256,
            "actual": hashlib.sha256(b"jello").hexdigest(),
        }
    ]
    assert findings_of(report) == [("artifact_checksum_mismatch", "snap:artifacts/snap/a.txt")]


def test_check_integrity_artifact_missing_and_extra_parquet(clean_sim: Path) -> None:
    (clean_sim / ".analysis" / "artifacts/snap/a.txt").unlink()
    pq.write_table(pa.table({"x": [1]}), clean_sim / ".analysis" / "stray.parquet")
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert report["artifact_missing_files"] == [{"name": "snap", "file": "artifacts/snap/a.txt"}]
    assert report["extra_files"] == ["stray.parquet"]
    assert findings_of(report) == [
        ("artifact_missing_file", "snap:artifacts/snap/a.txt"),
        ("extra_file", ".analysis/stray.parquet"),
    ]


def test_check_integrity_reports_a_corrupt_registry_without_raising(clean_sim: Path) -> None:
    (clean_sim / ".analysis" / "metadata.json").write_bytes(b'{"analyses": [')
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert findings_of(report) == [("registry_corrupt", ".analysis/metadata.json")]
    assert report["missing_files"] == report["extra_files"] == report["row_count_mismatches"] == []


def test_check_integrity_of_an_mdfactory_registry(tmp_path: Path) -> None:
    mdfactory_registry(tmp_path)
    report = Registry(tmp_path).check_integrity()
    assert (report["valid"], report["findings"]) == (True, [])


def test_no_temp_files_survive_a_session_of_writes(tmp_path: Path) -> None:
    write_artifact_file(tmp_path, "artifacts/snap/a.txt", b"hello")
    registry = Registry(tmp_path)
    registry.add_analysis("rdf", frame())
    registry.update_analysis("rdf", frame(6))
    registry.add_artifact("snap", ["artifacts/snap/a.txt"])
    with pytest.raises(RegistryEntryExistsError):
        registry.add_analysis("rdf", frame())
    registry.remove_analysis("rdf")
    assert tmp_files(tmp_path) == []
    assert sorted(os.listdir(registry.analysis_dir)) == ["artifacts", "metadata.json", "metadata.json.lock"]


# --------------------------------------------------------------------------- a registry that is absent or not a file


def _put_in_place_of_registry(sim: Path, what: str) -> None:
    registry = Registry(sim)
    registry.path.unlink()
    if what == "directory":
        registry.path.mkdir()
    elif what == "fifo":
        os.mkfifo(registry.path)
    elif what == "socket":
        import socket

        cwd = os.getcwd()
        os.chdir(registry.path.parent)  # AF_UNIX paths are limited to 108 bytes: bind a relative one
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(registry.path.name)
        finally:
            os.chdir(cwd)
    elif what == "symlink":  # to a valid registry inside the simulation: still not followed
        (sim / "real.json").write_bytes(encode_registry({"schema_version": "1.0", "analyses": {}, "artifacts": {}}))
        registry.path.symlink_to(sim / "real.json")
    else:
        raise AssertionError(what)


KIND_WORDS = {"directory": "a directory", "fifo": "a FIFO", "socket": "a socket", "symlink": "a symbolic link"}


@pytest.mark.timeout(30)  # reading a FIFO without O_NONBLOCK would block forever
@pytest.mark.parametrize("what", sorted(KIND_WORDS))
def test_a_registry_that_is_not_a_regular_file_is_corrupt_and_never_replaced(clean_sim: Path, what: str) -> None:
    _put_in_place_of_registry(clean_sim, what)
    registry = Registry(clean_sim)
    with pytest.raises(RegistryCorruptError) as info:
        registry.load()
    assert (info.value.path, info.value.reason) == (str(registry.path), f"is {KIND_WORDS[what]}, not a regular file")
    for write in (lambda: registry.add_analysis("fresh", frame()), lambda: registry.remove_analysis("rdf")):
        with pytest.raises(RegistryCorruptError):
            write()
    assert not (clean_sim / ".analysis" / "fresh.parquet").exists()
    assert (clean_sim / ".analysis" / "rdf.parquet").exists()
    assert tmp_files(clean_sim) == []
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert findings_of(report) == [("registry_corrupt", ".analysis/metadata.json")]
    assert report["missing_files"] == report["extra_files"] == report["row_count_mismatches"] == []


def test_an_analysis_directory_that_is_a_symlink_is_not_read(clean_sim: Path, tmp_path: Path) -> None:
    (clean_sim / ".analysis").rename(tmp_path / "elsewhere")
    (clean_sim / ".analysis").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RegistryCorruptError) as info:
        Registry(clean_sim).load()
    assert info.value.reason == ".analysis is a symbolic link, not a directory"
    assert findings_of(Registry(clean_sim).check_integrity()) == [("registry_corrupt", ".analysis/metadata.json")]


def test_check_integrity_without_a_registry_lists_every_parquet_as_extra(clean_sim: Path) -> None:
    Registry(clean_sim).path.unlink()
    report = Registry(clean_sim).check_integrity()
    assert report["valid"] is False
    assert report["extra_files"] == ["density.parquet", "rdf.parquet"]  # as MDFactory's check reports them
    assert findings_of(report) == [("extra_file", ".analysis/density.parquet"), ("extra_file", ".analysis/rdf.parquet")]
    assert report["missing_files"] == report["artifact_missing_files"] == report["artifact_checksum_mismatches"] == []
