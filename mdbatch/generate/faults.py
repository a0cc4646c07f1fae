"""Damage and awkwardness for synthetic campaigns: each fault is the finding an audit must report.

`inject_fault` breaks a clean completed simulation so exactly one finding of a kind is expected
(`FAULT_PLAN` lists the ones a campaign with `faults=True` gets); `add_hostile_entry` adds odd
names and symlinks that are not findings; near-duplicate checkpoints trap duplicate finders that
trust size, head and tail.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mdbatch import findings
from mdbatch.errors import UsageError

from .content import PARQUET_VARIANTS, parquet_payload, registry_bytes, sha256_hex, write_new

#: One fault per chosen simulation: (finding kind, variant). Variants pick between two forms.
FAULT_PLAN: tuple[tuple[str, int], ...] = tuple(
    (kind, variant)
    for kind, variants in (
        (findings.MISSING_FILE, 1),
        (findings.EXTRA_FILE, 1),
        (findings.ROW_COUNT_MISMATCH, 1),
        (findings.COLUMNS_MISMATCH, 1),
        (findings.ARTIFACT_MISSING_FILE, 1),
        (findings.ARTIFACT_CHECKSUM_MISMATCH, 1),
        (findings.REGISTRY_CORRUPT, 2),
        (findings.PARQUET_UNREADABLE, 2),
        (findings.UNSAFE_PATH, 2),
        (findings.INVALID_NAME, 2),
        (findings.UNREADABLE, 1),
    )
    for variant in range(variants)
)
INVALID_NAMES: tuple[str, ...] = ("x; DROP TABLE RUN_DATABASE;--", 'it\'s "quoted"')
UNSAFE_PATHS: tuple[str, ...] = ("../../../etc/passwd", "/etc/hostname")
STRAY_PARQUET = ".analysis/stray.parquet"
UNREADABLE_FILE = "nvt.mdp"
# Hostile entry kind -> (name, file content or symlink target).
_HOSTILE: dict[str, tuple[bytes, bytes]] = {
    "non_utf8_name": (b"caf\xe9.dat", b"non-UTF-8 file name\n"),
    "spaces_and_quotes": (b'notes "final" it\'s v2.txt', b"spaces and quotes\n"),
    "symlink_loop": (b"loop", b"."),
    "symlink_escape": (b"escape", b"/etc"),
    "dangling_symlink": (b"dangling", b"no-such-file.dat"),
}
HOSTILE_KINDS: tuple[str, ...] = tuple(_HOSTILE)
#: Directory name of the extra simulation added by `hostile=True`.
SPACED_SIM_DIR = "copy of run 1"
#: Near-duplicate checkpoints added by `hostile=True`: one file per variant, each in its own clean
#: simulation where there are enough. Variants 0 are identical; variant 1 has the same size, head
#: and tail and differs only mid-file, so a duplicate finder that trusts size + head + tail
#: (mdbatch's samples 64 KiB at each end) groups it with them, and one that reads it whole does not.
NEAR_DUPLICATE_NAME = "state.cpt"
NEAR_DUPLICATE_SIZE = 256 * 1024
NEAR_DUPLICATE_VARIANTS: tuple[int, ...] = (0, 1, 0)
#: (offset, length) of the bytes in which the variants differ: the middle of the file.
NEAR_DUPLICATE_SPAN = (NEAR_DUPLICATE_SIZE // 2 - 8, 16)


def inject_fault(sim_dir: str | os.PathLike[str], kind: str, variant: int = 0) -> dict[str, Any]:
    """Damage a clean completed simulation so an audit reports exactly one finding of `kind`.

    Returns the expected finding without its `simulation` key: `{"kind", "item"}`, plus
    `"requires_non_root": True` for `unreadable` (root reads mode-000 files).
    """
    sim = Path(sim_dir)
    analysis_dir = sim / ".analysis"
    registry_path = analysis_dir / "metadata.json"
    registry = json.loads(registry_path.read_bytes())
    first = next(iter(registry["analyses"]))
    entry = registry["analyses"][first]
    artifact_name, artifact = next(iter(registry["artifacts"].items()))
    rewrite = True
    extra: dict[str, Any] = {}
    if kind == findings.MISSING_FILE:
        (analysis_dir / entry["filename"]).unlink()
        item, rewrite = first, False
    elif kind == findings.EXTRA_FILE:
        (sim / STRAY_PARQUET).write_bytes(parquet_payload(first, PARQUET_VARIANTS)[0])
        item, rewrite = STRAY_PARQUET, False
    elif kind == findings.ROW_COUNT_MISMATCH:
        entry["row_count"] += 7
        item = first
    elif kind == findings.COLUMNS_MISMATCH:
        entry["columns"] = entry["columns"][:-1] + [entry["columns"][-1] + "_legacy"]
        item = first
    elif kind in (findings.ARTIFACT_MISSING_FILE, findings.ARTIFACT_CHECKSUM_MISMATCH):
        rel = artifact["files"][0]
        target = analysis_dir / rel
        if kind == findings.ARTIFACT_MISSING_FILE:
            target.unlink()
        else:
            data = bytearray(target.read_bytes())
            middle = len(data) // 2
            for index in range(middle, min(middle + 8, len(data))):
                data[index] ^= 0xFF
            target.write_bytes(bytes(data))
        item, rewrite = f"{artifact_name}:{rel}", False
    elif kind == findings.REGISTRY_CORRUPT:
        if variant % 2 == 0:
            raw = registry_path.read_bytes()
            registry_path.write_bytes(raw[: len(raw) // 2])
            rewrite = False
        else:
            entry["row_count"] = "many"
        item = ".analysis/metadata.json"
    elif kind == findings.PARQUET_UNREADABLE:
        target = analysis_dir / entry["filename"]
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 2] if variant % 2 == 0 else b"")
        item, rewrite = first, False
    elif kind == findings.UNSAFE_PATH:
        bad = UNSAFE_PATHS[variant % len(UNSAFE_PATHS)]
        artifact["files"].append(bad)
        artifact["checksums"][bad] = sha256_hex(bad.encode())
        item = f"{artifact_name}:{bad}"
    elif kind == findings.INVALID_NAME:
        name = INVALID_NAMES[variant % len(INVALID_NAMES)]
        payload, rows, columns = parquet_payload(first, PARQUET_VARIANTS + 1)
        (analysis_dir / f"{name}.parquet").write_bytes(payload)
        registry["analyses"][name] = {**entry, "filename": f"{name}.parquet", "row_count": rows, "columns": list(columns)}
        item = name
    elif kind == findings.UNREADABLE:
        os.chmod(sim / UNREADABLE_FILE, 0)
        item, rewrite = UNREADABLE_FILE, False
        extra["requires_non_root"] = True
    elif kind in findings.LINEAGE_KINDS:
        item = _lineage_fault(kind, registry, first, artifact_name)
    else:
        raise UsageError(f"cannot inject fault kind {kind!r}")
    if rewrite:
        registry_path.write_bytes(registry_bytes(registry))
    return {"kind": kind, "item": item, **extra}


#: The analysis a `dependency_missing` fault makes an artifact depend on (never registered).
ABSENT_UPSTREAM = "never_computed"


def _lineage_fault(kind: str, registry: dict[str, Any], first: str, artifact_name: str) -> str:
    """Declare dependencies (`extras.depends_on`) so the graph holds one lineage fault; returns its item.

    Stale: the artifact depends on the first analysis, registered a day after it. Missing: the
    artifact depends on an analysis that is not registered. Cycle: the two depend on each other.
    """
    analysis, artifact = registry["analyses"][first], registry["artifacts"][artifact_name]
    up, down = f"analysis:{first}", f"artifact:{artifact_name}"
    if kind == findings.STALE_DEPENDENCY:
        made = datetime.fromisoformat(artifact["updated_at"])
        analysis["updated_at"] = (made + timedelta(days=1)).isoformat()
        artifact.setdefault("extras", {})["depends_on"] = [up]
        return f"{down} -> {up}"
    if kind == findings.DEPENDENCY_MISSING:
        artifact.setdefault("extras", {})["depends_on"] = [f"analysis:{ABSENT_UPSTREAM}"]
        return f"{down} -> analysis:{ABSENT_UPSTREAM}"
    artifact.setdefault("extras", {})["depends_on"] = [up]
    analysis.setdefault("extras", {})["depends_on"] = [down]
    return f"{up}, {down}"


def add_hostile_entry(sim_dir: str | os.PathLike[str], kind: str) -> str:
    """Add a legitimate-but-awkward entry (odd name or symlink) to a simulation; returns its name
    (non-UTF-8 bytes shown with backslash escapes). None of them is a finding."""
    if kind not in _HOSTILE:
        raise UsageError(f"unknown hostile entry kind {kind!r}")
    name, target = _HOSTILE[kind]
    path = os.path.join(os.fsencode(sim_dir), name)
    if "symlink" in kind:
        os.symlink(target, path)
    else:
        write_new(path, target)
    return name.decode("utf-8", "backslashreplace")


def near_duplicate_bytes(seed: int, variant: int) -> bytes:
    """A checkpoint-like file: the same bytes for every variant of one campaign seed except the
    NEAR_DUPLICATE_SPAN in the middle, which depends on `variant`."""
    data = bytearray(random.Random(f"mdbatch-near-duplicate:{seed}").randbytes(NEAR_DUPLICATE_SIZE))
    data[:8] = b"GMXCPT\x00\x01"
    offset, length = NEAR_DUPLICATE_SPAN
    data[offset : offset + length] = hashlib.sha256(f"state:{seed}:{variant}".encode()).digest()[:length]
    return bytes(data)


def add_near_duplicates(root: Path, rel_dirs: list[str], clean: list[int], seed: int, rng: random.Random) -> list[dict[str, Any]]:
    """Write the near-duplicate checkpoints into clean simulations; returns their manifest entries."""
    chosen = rng.sample(clean, min(len(NEAR_DUPLICATE_VARIANTS), len(clean)))
    entries: list[dict[str, Any]] = []
    for position, variant in enumerate(NEAR_DUPLICATE_VARIANTS):
        index = chosen[position % len(chosen)]
        # A simulation that gets a second one (tiny campaigns) names it apart.
        name = NEAR_DUPLICATE_NAME if position < len(chosen) else f"state{position}.cpt"
        write_new(os.path.join(root / rel_dirs[index], name), near_duplicate_bytes(seed, variant))
        entries.append({"simulation": rel_dirs[index], "name": name, "variant": variant})
    return entries
