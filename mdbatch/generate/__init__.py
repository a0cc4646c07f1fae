"""Deterministic synthetic MDFactory campaigns for demos, tests and benchmarks.

`generate_campaign` writes a tree in MDFactory's on-disk layout: one `<HASH>/` directory per
simulation with its build YAML, root `metadata.json`, GROMACS engine files, stage outputs by status
and an `.analysis/` registry with real parquet files and checksummed artifacts. The same arguments
always give a byte-identical tree. Optional faults (each recorded as the finding the scanner must
report) and hostile-but-clean entries (odd names, symlinks) exercise the audit.

content.py holds one simulation's bytes and writing them; faults.py the damage and awkward entries;
campaign.py the plan, the campaign and its manifest.
"""

from __future__ import annotations

from .campaign import DEFAULT_TRAJ_MB, MANIFEST_NAME, MANIFEST_VERSION, PROFILES, GenerateResult, generate_campaign
from .content import (
    ENGINE_FILES,
    PARAMETRIZATIONS,
    SIMULATION_TYPES,
    STAGE_FILES,
    STATUSES,
    SimulationRecord,
    SimulationSpec,
    build_input,
    parquet_payload,
    simulation_files,
    simulation_hash,
    trajectory_bytes,
    write_simulation,
)
from .faults import (
    FAULT_PLAN,
    HOSTILE_KINDS,
    INVALID_NAMES,
    NEAR_DUPLICATE_NAME,
    NEAR_DUPLICATE_SIZE,
    NEAR_DUPLICATE_SPAN,
    NEAR_DUPLICATE_VARIANTS,
    SPACED_SIM_DIR,
    STRAY_PARQUET,
    UNREADABLE_FILE,
    UNSAFE_PATHS,
    add_hostile_entry,
    inject_fault,
    near_duplicate_bytes,
)

__all__ = [
    "DEFAULT_TRAJ_MB",
    "ENGINE_FILES",
    "FAULT_PLAN",
    "GenerateResult",
    "HOSTILE_KINDS",
    "INVALID_NAMES",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "NEAR_DUPLICATE_NAME",
    "NEAR_DUPLICATE_SIZE",
    "NEAR_DUPLICATE_SPAN",
    "NEAR_DUPLICATE_VARIANTS",
    "PARAMETRIZATIONS",
    "PROFILES",
    "SIMULATION_TYPES",
    "SPACED_SIM_DIR",
    "STAGE_FILES",
    "STATUSES",
    "STRAY_PARQUET",
    "SimulationRecord",
    "SimulationSpec",
    "UNREADABLE_FILE",
    "UNSAFE_PATHS",
    "add_hostile_entry",
    "build_input",
    "generate_campaign",
    "inject_fault",
    "near_duplicate_bytes",
    "parquet_payload",
    "simulation_files",
    "simulation_hash",
    "trajectory_bytes",
    "write_simulation",
]
