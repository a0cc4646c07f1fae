"""A whole synthetic campaign: plan the simulations, write them, add faults, write the manifest.

`generate_campaign` is the entry point; the manifest (`mdbatch-campaign.json` at the root) lists
every simulation and every finding, hostile entry and near duplicate an audit should see.
"""

from __future__ import annotations

import json
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdbatch.atomic import atomic_write_bytes
from mdbatch.errors import UsageError

from .content import (
    PARAMETRIZATIONS,
    SIMULATION_TYPES,
    STAGE_FILES,
    STATUSES,
    SimulationRecord,
    SimulationSpec,
    build_input,
    simulation_hash,
    write_spec,
)
from .faults import FAULT_PLAN, HOSTILE_KINDS, SPACED_SIM_DIR, add_hostile_entry, add_near_duplicates, inject_fault

MANIFEST_NAME = "mdbatch-campaign.json"
MANIFEST_VERSION = 1
PROFILES: tuple[str, ...] = ("metadata", "bytes")
DEFAULT_TRAJ_MB = 10.0
_COPY_PROBABILITY = 0.1  # each copy makes two simulations share bytes: ~1 in 5 overall


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """What `generate_campaign` wrote: simulation dirs relative to `dest`, regular-file totals under them
    (manifest excluded), the findings an audit must report, and the manifest's path."""

    dest: Path
    simulations: list[str]
    files: int
    bytes: int
    expected_findings: list[dict[str, Any]]
    manifest_path: Path


def generate_campaign(
    dest: str | os.PathLike[str],
    sims: int,
    *,
    seed: int = 0,
    faults: bool = False,
    profile: str = "metadata",
    traj_mb: float | None = None,
    nested: bool = False,
    hostile: bool = False,
) -> GenerateResult:
    """Write a synthetic campaign of `sims` simulations under `dest` (missing or empty) and its manifest.

    Statuses are ~70% completed, 10% each production/equilibrated/build. `faults` damages one
    completed simulation per entry of `FAULT_PLAN`; `hostile` adds awkward but clean entries, one
    extra simulation in a directory named with spaces, and near-duplicate checkpoints (same size,
    head and tail; see NEAR_DUPLICATE_NAME). `profile="bytes"` makes each prod.xtc
    `traj_mb` MB (default 10). Same arguments, same bytes.
    """
    _check_arguments(sims, faults, profile, traj_mb)
    root = _empty_dest(dest)
    traj_bytes = int((DEFAULT_TRAJ_MB if traj_mb is None else traj_mb) * 2**20) if profile == "bytes" else None
    specs = _plan(sims, seed, faults, traj_bytes)
    # One stream for everything hostile: the extra simulation's seed first, then the placements.
    hostile_rng = random.Random(f"mdbatch-hostile:{seed}")
    if hostile:
        specs.append(SimulationSpec("bilayer", "charmm36m", "completed", hostile_rng.getrandbits(63), 0, None, traj_bytes))
    rel_dirs = _layout(specs, sims, nested)

    # Serial on purpose: file creation is kernel-bound and threads only contend (measured).
    records = [write_spec(root / rel, spec) for rel, spec in zip(rel_dirs, specs, strict=True)]
    tallies = [(record.files, record.bytes) for record in records]
    expected, touched = _inject_faults(root, rel_dirs, specs, sims, seed) if faults else ([], set())
    hostile_entries: list[dict[str, str]] = []
    near_duplicates: list[dict[str, Any]] = []
    if hostile:
        hostile_entries, near_duplicates, awkward = _add_hostile(root, rel_dirs, touched, seed, hostile_rng)
        touched |= awkward
    for index in touched:
        tallies[index] = _tally(root / rel_dirs[index])
    expected.sort(key=lambda finding: (finding["simulation"], finding["kind"], finding["item"]))

    total_files, total_bytes = sum(count for count, _ in tallies), sum(size for _, size in tallies)
    parameters = {
        "sims": sims,
        "seed": seed,
        "faults": faults,
        "profile": profile,
        "traj_mb": traj_mb,
        "nested": nested,
        "hostile": hostile,
    }
    manifest_path = _write_manifest(
        root, parameters, (total_files, total_bytes), records, rel_dirs, expected, hostile_entries, near_duplicates
    )
    return GenerateResult(root, rel_dirs, total_files, total_bytes, expected, manifest_path)


def _check_arguments(sims: int, faults: bool, profile: str, traj_mb: float | None) -> None:
    """UsageError for arguments `generate_campaign` cannot honour."""
    if isinstance(sims, bool) or not isinstance(sims, int) or sims < 0:
        raise UsageError(f"sims must be a non-negative integer, got {sims!r}")
    if profile not in PROFILES:
        raise UsageError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if traj_mb is not None and (profile != "bytes" or traj_mb <= 0):
        raise UsageError("traj_mb must be positive and is only used with profile='bytes'")
    if faults and sims < len(FAULT_PLAN):
        raise UsageError(f"faults=True needs at least {len(FAULT_PLAN)} simulations, got {sims}")


def _empty_dest(dest: str | os.PathLike[str]) -> Path:
    """`dest` as an existing empty directory (created if missing); UsageError if it holds anything."""
    root = Path(dest)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root}: destination must be missing or an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- planning -----------------------------------------------------------------------------------


def _statuses(sims: int, minimum_completed: int, rng: random.Random) -> list[str]:
    """Each simulation's status, shuffled: ~70% completed (at least `minimum_completed`), 10% each other."""
    completed = min(sims, max(round(sims * 0.7), minimum_completed))
    production = min(round(sims * 0.1), sims - completed)
    equilibrated = min(round(sims * 0.1), sims - completed - production)
    counts = (completed, production, equilibrated, sims - completed - production - equilibrated)
    statuses = [status for status, count in zip(STATUSES, counts, strict=True) for _ in range(count)]
    rng.shuffle(statuses)
    return statuses


def _plan(sims: int, seed: int, faults: bool, traj_bytes: int | None) -> list[SimulationSpec]:
    """The specs of the campaign's simulations; some trajectories are copies, at least one if any can be."""
    rng = random.Random(f"mdbatch-campaign:{seed}")
    statuses = _statuses(sims, len(FAULT_PLAN) if faults else 0, rng)
    with_xtc = [index for index, status in enumerate(statuses) if "prod.xtc" in STAGE_FILES[status]]
    last_xtc = with_xtc[-1] if with_xtc else -1
    replicas: dict[tuple[str, str], int] = {}
    originals: list[int] = []
    copies = 0
    specs: list[SimulationSpec] = []
    for index, status in enumerate(statuses):
        kind = (rng.choice(SIMULATION_TYPES), rng.choice(PARAMETRIZATIONS))
        sim_seed = rng.getrandbits(63)
        copy_draw = rng.random()
        trajectory: int | None = None
        if "prod.xtc" in STAGE_FILES[status]:
            if originals and (copy_draw < _COPY_PROBABILITY or (index == last_xtc and copies == 0)):
                trajectory = originals[rng.randrange(len(originals))]
                copies += 1
            else:
                trajectory = sim_seed
                originals.append(sim_seed)
        replica = replicas.get(kind, 0)
        replicas[kind] = replica + 1
        specs.append(SimulationSpec(kind[0], kind[1], status, sim_seed, replica, trajectory, traj_bytes))
    return specs


def _relative_dir(index: int, sim_hash: str, sims: int, nested: bool) -> str:
    """Where simulation `index` lives under the root: `<HASH>`, or grouped and deeper when `nested`."""
    if not nested:
        return sim_hash
    if index % 25 == 3:
        return f"a/b/{sim_hash}"
    groups = max(2, min(16, (sims + 99) // 100))
    return f"group_{index % groups}/{sim_hash}"


def _layout(specs: list[SimulationSpec], sims: int, nested: bool) -> list[str]:
    """Each spec's directory relative to the root; the extra hostile simulation (index `sims`) gets
    SPACED_SIM_DIR. RuntimeError if two specs hash alike."""
    rel_dirs: list[str] = []
    hashes: list[str] = []
    for index, spec in enumerate(specs):
        sim_hash = simulation_hash(build_input(spec))
        hashes.append(sim_hash)
        rel_dirs.append(SPACED_SIM_DIR if index == sims else _relative_dir(index, sim_hash, sims, nested))
    if len(set(hashes)) != len(hashes):
        raise RuntimeError("simulation hash collision; choose another seed")
    return rel_dirs


# --- damage and awkwardness ---------------------------------------------------------------------


def _inject_faults(
    root: Path,
    rel_dirs: list[str],
    specs: list[SimulationSpec],
    sims: int,
    seed: int,
) -> tuple[list[dict[str, Any]], set[int]]:
    """Apply FAULT_PLAN to as many completed simulations; returns the expected findings (unsorted)
    and the indices of the damaged simulations."""
    expected: list[dict[str, Any]] = []
    touched: set[int] = set()
    fault_rng = random.Random(f"mdbatch-faults:{seed}")
    completed = [index for index in range(sims) if specs[index].status == "completed"]
    for index, (kind, variant) in zip(fault_rng.sample(completed, len(FAULT_PLAN)), FAULT_PLAN, strict=True):
        expected.append({"simulation": rel_dirs[index], **inject_fault(root / rel_dirs[index], kind, variant)})
        touched.add(index)
    return expected, touched


def _add_hostile(
    root: Path,
    rel_dirs: list[str],
    damaged: set[int],
    seed: int,
    rng: random.Random,
) -> tuple[list[dict[str, str]], list[dict[str, Any]], set[int]]:
    """Add every hostile entry kind and the near-duplicate checkpoints to simulations not `damaged`;
    returns the manifest entries of both and the indices of the simulations that got them."""
    clean = [index for index in range(len(rel_dirs)) if index not in damaged]
    chosen = rng.sample(clean, min(len(HOSTILE_KINDS), len(clean)))
    entries: list[dict[str, str]] = []
    touched: set[int] = set()
    for position, kind in enumerate(HOSTILE_KINDS):
        index = chosen[position % len(chosen)]
        name = add_hostile_entry(root / rel_dirs[index], kind)
        entries.append({"simulation": rel_dirs[index], "kind": kind, "name": name})
        touched.add(index)
    near_duplicates = add_near_duplicates(root, rel_dirs, clean, seed, rng)
    touched.update(rel_dirs.index(entry["simulation"]) for entry in near_duplicates)
    return entries, near_duplicates, touched


def _tally(sim_dir: Path) -> tuple[int, int]:
    """Regular files and bytes under `sim_dir`, symlinks not followed."""
    files = total = 0
    for top, _dirs, names in os.walk(os.fsencode(sim_dir)):
        for name in names:
            info = os.lstat(os.path.join(top, name))
            if stat.S_ISREG(info.st_mode):
                files += 1
                total += info.st_size
    return files, total


# --- the manifest -------------------------------------------------------------------------------


def _write_manifest(
    root: Path,
    parameters: dict[str, Any],
    totals: tuple[int, int],
    records: list[SimulationRecord],
    rel_dirs: list[str],
    expected: list[dict[str, Any]],
    hostile_entries: list[dict[str, str]],
    near_duplicates: list[dict[str, Any]],
) -> Path:
    """Write MANIFEST_NAME at `root` (atomically) and return its path."""
    manifest = {
        "generator": "mdbatch.generate",
        "manifest_version": MANIFEST_VERSION,
        "parameters": parameters,
        "files": totals[0],
        "bytes": totals[1],
        "simulations": [
            {
                "hash": record.hash,
                "status": record.status,
                "simulation_type": record.simulation_type,
                "parametrization": record.parametrization,
                "dir": rel_dir,
            }
            for record, rel_dir in zip(records, rel_dirs, strict=True)
        ],
        "expected_findings": expected,
        "hostile_entries": hostile_entries,
        "near_duplicates": near_duplicates,
    }
    manifest_path = root / MANIFEST_NAME
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode(), mode=0o644)
    return manifest_path
