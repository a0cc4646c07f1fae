"""One synthetic simulation: the bytes of every file it holds, and writing them.

`simulation_files(spec)` gives a simulation's hash, files (path -> bytes) and analysis registry as
pure functions of its `SimulationSpec`; `write_simulation` puts one on disk. Content many
simulations share (topologies, mdp files, parquet tables) is cached.

Files are written directly rather than atomically: the generator only ever creates a fresh tree,
and fsyncing tens of thousands of small files would dominate its run time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mdbatch.errors import UsageError

SIMULATION_TYPES: tuple[str, ...] = ("bilayer", "mixedbox", "solvation")
PARAMETRIZATIONS: tuple[str, ...] = ("charmm36m", "amber99sb", "martini3")
STATUSES: tuple[str, ...] = ("completed", "production", "equilibrated", "build")
ENGINE_FILES: tuple[str, ...] = ("system.pdb", "topology.top", "em.mdp", "nvt.mdp", "npt.mdp", "prod.mdp")
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "completed": ("min.gro", "nvt.gro", "npt.gro", "prod.xtc", "prod.gro"),
    "production": ("min.gro", "nvt.gro", "npt.gro", "prod.xtc"),
    "equilibrated": ("min.gro", "nvt.gro", "npt.gro"),
    "build": (),
}

_EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
#: Distinct tables per analysis; fault injection writes variants past these, so they differ.
PARQUET_VARIANTS = 12
# Per simulation type: analyses (completed sims register the first 2 or 3), artifact, residues.
_ANALYSES: dict[str, tuple[str, ...]] = {
    "bilayer": ("area_per_lipid", "thickness", "density_profile"),
    "mixedbox": ("rdf", "density_profile", "cluster_size"),
    "solvation": ("rdf", "sasa", "hbonds"),
}
_ARTIFACTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bilayer": ("bilayer_snapshot", ("snapshot.png", "snapshot.pdb")),
    "mixedbox": ("box_snapshot", ("snapshot.png",)),
    "solvation": ("solute_snapshot", ("snapshot.png", "solute.pdb")),
}
_RESIDUES = {"bilayer": ("POPC", "CHOL", "SOL"), "mixedbox": ("DMSO", "MOL", "SOL"), "solvation": ("LIG", "SOL", "NA")}
_SERIES = ("frame", "time_ps", "value")
_COLUMNS: dict[str, tuple[str, ...]] = {
    "area_per_lipid": _SERIES,
    "thickness": _SERIES,
    "sasa": _SERIES,
    "density_profile": ("z_nm", "density"),
    "rdf": ("r_nm", "g_r"),
    "cluster_size": ("frame", "time_ps", "n_clusters", "largest"),
    "hbonds": ("frame", "time_ps", "count"),
}
_INT_COLUMNS = frozenset({"frame", "n_clusters", "largest", "count"})
_STAGE_MDP: dict[str, tuple[str, ...]] = {
    "em": ("integrator = steep", "nsteps = 50000", "emtol = 1000.0", "emstep = 0.01"),
    "nvt": ("integrator = md", "nsteps = 50000", "tcoupl = V-rescale", "pcoupl = no", "gen_vel = yes"),
    "npt": ("integrator = md", "nsteps = 250000", "tcoupl = V-rescale", "pcoupl = C-rescale"),
    "prod": ("integrator = md", "nsteps = 50000000", "tcoupl = V-rescale", "pcoupl = Parrinello-Rahman"),
}


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """Everything that determines one simulation's bytes.

    `seed` makes the build YAML (hence the hash) and per-simulation files unique; `trajectory` keys the
    prod.xtc content, so simulations sharing it carry byte-identical trajectories; `traj_bytes` is the
    trajectory size (None: a few tens of KB chosen from `trajectory`).
    """

    simulation_type: str
    parametrization: str
    status: str
    seed: int
    replica: int = 0
    trajectory: int | None = None
    traj_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class SimulationRecord:
    """One written simulation: its directory, hash, kind, and regular files/bytes written."""

    path: Path
    hash: str
    simulation_type: str
    parametrization: str
    status: str
    analyses: tuple[str, ...]
    artifacts: tuple[str, ...]
    files: int
    bytes: int


# --- content: pure functions of their arguments, cached where many simulations share bytes --------


def build_input(spec: SimulationSpec) -> bytes:
    """The simulation's build YAML; its SHA-1 is the simulation hash."""
    rng = random.Random(spec.seed ^ 0x59414D4C)
    major, minor, solvent = _RESIDUES[spec.simulation_type]
    fraction = rng.choice((0.5, 0.6, 0.7, 0.8, 0.9))
    return (
        f"simulation_type: {spec.simulation_type}\nengine: gromacs\nparametrization: {spec.parametrization}\n"
        f"system:\n  composition:\n    - {{resname: {major}, fraction: {fraction}}}\n"
        f"    - {{resname: {minor}, fraction: {round(1 - fraction, 2)}}}\n"
        f"  n_molecules: {rng.choice((64, 128, 256, 512))}\n  solvent: {solvent}\n"
        f"parameters:\n  temperature_k: {rng.choice((298.15, 303.15, 310.0, 323.15))}\n  pressure_bar: 1.0\n"
        f"  timestep_fs: {20 if spec.parametrization == 'martini3' else 2}\n"
        f"  nsteps: {rng.choice((25, 50, 100)) * 1_000_000}\nreplica: {spec.replica}\nseed: {spec.seed}\n"
    ).encode()


def simulation_hash(yaml_bytes: bytes) -> str:
    """MDFactory's simulation hash: SHA-1 of the build input, 40 upper-case hex characters."""
    return hashlib.sha1(yaml_bytes).hexdigest().upper()


@cache
def _topology(simulation_type: str, parametrization: str) -> bytes:
    rng = random.Random(f"top:{simulation_type}:{parametrization}")
    residues = _RESIDUES[simulation_type]
    lines = [
        f"; {simulation_type} system, {parametrization} force field (mdbatch synthetic)",
        f'#include "{parametrization}.ff/forcefield.itp"',
        "",
    ]
    for resname in residues:
        lines += ["[ moleculetype ]", f"{resname:<8s} 3", "", "[ atoms ]"]
        for atom in range(1, 25):
            charge = round(rng.uniform(-0.9, 0.9), 4)
            mass = round(rng.uniform(1.0, 32.0), 4)
            lines.append(f"{atom:6d} {'T' + str(atom % 9):>6s} 1 {resname:>6s} A{atom:<4d} {atom:5d} {charge:9.4f} {mass:9.4f}")
        lines += ["", "[ bonds ]"]
        lines += [f"{atom:6d} {atom + 1:6d} 1" for atom in range(1, 24)]
        lines.append("")
    lines += ["[ system ]", f"{simulation_type} ({parametrization})", "", "[ molecules ]"]
    lines += [f"{resname:<8s} {64 * (k + 1)}" for k, resname in enumerate(residues)]
    return ("\n".join(lines) + "\n").encode()


@cache
def _mdp(simulation_type: str, parametrization: str, stage: str) -> bytes:
    cg = parametrization == "martini3"
    lines = [
        f"; {stage} parameters for {simulation_type} / {parametrization}",
        *_STAGE_MDP[stage],
        f"dt = {'0.020' if cg else '0.002'}",
        "nstxout-compressed = 5000",
        "nstenergy = 5000",
        "cutoff-scheme = Verlet",
        f"rcoulomb = {'1.1' if cg else '1.2'}",
        f"rvdw = {'1.1' if cg else '1.2'}",
        f"coulombtype = {'reaction-field' if cg else 'PME'}",
        f"constraints = {'none' if cg else 'h-bonds'}",
        "tc-grps = Membrane Solvent\nref-t = 310 310" if simulation_type == "bilayer" else "tc-grps = System\nref-t = 300",
    ]
    return ("\n".join(lines) + "\n").encode()


@cache
def _pdb_body(simulation_type: str, parametrization: str) -> bytes:
    rng = random.Random(f"pdb:{simulation_type}:{parametrization}")
    residues = _RESIDUES[simulation_type]
    lines = [
        f"ATOM  {n:5d} {'C' + str(n % 7):<4s} {residues[n % 3]:<4s}A{n // 10 + 1:4d}    "
        + "".join(f"{rng.uniform(0.0, 99.0):8.3f}" for _ in range(3))
        + "  1.00  0.00           C\n"
        for n in range(1, 301)
    ]
    return "".join(lines).encode() + b"END\n"


@cache
def _gro_body(simulation_type: str, parametrization: str, stage: str) -> bytes:
    rng = random.Random(f"gro:{simulation_type}:{parametrization}:{stage}")
    residues = _RESIDUES[simulation_type]
    lines = [
        f"{n // 10 + 1:5d}{residues[n % 3]:<5s}{'C' + str(n % 7):>5s}{n:5d}"
        + "".join(f"{rng.uniform(0.0, 9.9):8.3f}" for _ in range(3))
        + "\n"
        for n in range(1, 181)
    ]
    return ("  180\n" + "".join(lines)).encode()


def trajectory_bytes(trajectory: int, size: int | None = None) -> bytes:
    """Incompressible prod.xtc content for trajectory id `trajectory` (XTC magic first).

    `size` None gives 24-40 KB chosen from the id. Not cached: copies regenerate their bytes, which
    keeps memory flat in the "bytes" profile.
    """
    rng = random.Random(trajectory ^ 0x787463)
    if size is None:
        size = 24 * 1024 + rng.randrange(16 * 1024)
    header = (1995).to_bytes(4, "big") + (180).to_bytes(4, "big")
    return header + rng.randbytes(max(0, size - len(header)))


@cache
def parquet_payload(analysis: str, variant: int) -> tuple[bytes, int, tuple[str, ...]]:
    """A realistic small analysis table as parquet bytes (index not stored), its row count and columns."""
    rng = random.Random(f"parquet:{analysis}:{variant}")
    columns = _COLUMNS.get(analysis, ("frame", "time_ps", "value"))
    rows = 20 + rng.randrange(380)
    data: dict[str, pa.Array] = {}
    for column in columns:
        if column == "frame":
            data[column] = pa.array(range(rows), type=pa.int64())
        elif column == "time_ps":
            data[column] = pa.array([frame * 100.0 for frame in range(rows)], type=pa.float64())
        elif column in ("z_nm", "r_nm"):
            data[column] = pa.array([k * 0.02 for k in range(rows)], type=pa.float64())
        elif column in _INT_COLUMNS:
            data[column] = pa.array([rng.randrange(1, 200) for _ in range(rows)], type=pa.int64())
        else:
            data[column] = pa.array([rng.gauss(0.65, 0.05) for _ in range(rows)], type=pa.float64())
    buffer = io.BytesIO()
    pq.write_table(pa.table(data), buffer)
    return buffer.getvalue(), rows, columns


@cache
def _artifact_pdb(simulation_type: str, variant: int) -> bytes:
    body = _pdb_body(simulation_type, PARAMETRIZATIONS[variant % len(PARAMETRIZATIONS)])
    atoms = body.splitlines(keepends=True)[variant * 40 : variant * 40 + 40]
    return f"REMARK   1 snapshot variant {variant}\n".encode() + b"".join(atoms) + b"END\n"


def _png_like(rng: random.Random) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + rng.randbytes(2048 + rng.randrange(4096)) + b"IEND\xaeB`\x82"


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 a registry records as an artifact checksum."""
    return hashlib.sha256(data).hexdigest()


def _registry(spec: SimulationSpec, rng: random.Random) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """The `.analysis/metadata.json` dict (None: no registry) and the files it lists, keyed by path
    relative to `.analysis`."""
    if spec.status == "build":
        return None, {}
    completed = spec.status == "completed"
    count = rng.choice((2, 3)) if completed else rng.choice((0, 1)) if spec.status == "production" else 0
    registry: dict[str, Any] = {"schema_version": "1.0", "analyses": {}, "artifacts": {}}
    files: dict[str, bytes] = {}
    for name in _ANALYSES[spec.simulation_type][:count]:
        payload, rows, columns = parquet_payload(name, rng.randrange(PARQUET_VARIANTS))
        created = _EPOCH + timedelta(seconds=rng.randrange(90 * 86400))
        files[f"{name}.parquet"] = payload
        updated = created + timedelta(seconds=rng.randrange(3 * 86400))
        registry["analyses"][name] = {
            "filename": f"{name}.parquet",
            "row_count": rows,
            "columns": list(columns),
            "created_at": created.isoformat(),
            "updated_at": updated.isoformat(),
            "extras": {},
        }
    if completed:
        artifact, filenames = _ARTIFACTS[spec.simulation_type]
        checksums: dict[str, str] = {}
        for filename in filenames:
            rel = f"artifacts/{artifact}/{filename}"
            png = filename.endswith(".png")
            files[rel] = _png_like(rng) if png else _artifact_pdb(spec.simulation_type, rng.randrange(6))
            checksums[rel] = sha256_hex(files[rel])
        stamp = (_EPOCH + timedelta(seconds=rng.randrange(90 * 86400))).isoformat()
        registry["artifacts"][artifact] = {
            "files": list(checksums),
            "checksums": checksums,
            "created_at": stamp,
            "updated_at": stamp,
            "extras": {},
        }
    return registry, files


def simulation_files(spec: SimulationSpec) -> tuple[str, dict[str, bytes], dict[str, Any] | None]:
    """Hash, every file of the simulation (path relative to its directory -> bytes) and its registry."""
    yaml_bytes = build_input(spec)
    sim_hash = simulation_hash(yaml_bytes)
    rng = random.Random(spec.seed ^ 0x53494D)
    kind = (spec.simulation_type, spec.parametrization)
    created = _EPOCH - timedelta(days=30) + timedelta(seconds=rng.randrange(30 * 86400))
    metadata = {
        "hash": sim_hash,
        "simulation_type": spec.simulation_type,
        "engine": "gromacs",
        "parametrization": spec.parametrization,
        "created_at": created.isoformat(),
    }
    box = [round(rng.uniform(6.0, 12.0), 3) for _ in range(3)]
    header = (
        f"REMARK   1 {spec.simulation_type} {spec.parametrization} replica {spec.replica}\n"
        f"REMARK   2 seed {spec.seed}\n"
        f"CRYST1{box[0] * 10:9.3f}{box[1] * 10:9.3f}{box[2] * 10:9.3f}  90.00  90.00  90.00 P 1           1\n"
    )
    files: dict[str, bytes] = {
        f"{sim_hash}.yaml": yaml_bytes,
        "metadata.json": (json.dumps(metadata, indent=2) + "\n").encode(),
        "system.pdb": header.encode() + _pdb_body(*kind),
        "topology.top": _topology(*kind),
    }
    for stage in ("em", "nvt", "npt", "prod"):
        files[f"{stage}.mdp"] = _mdp(*kind, stage)
    for name in STAGE_FILES[spec.status]:
        if name == "prod.xtc":
            trajectory = spec.seed if spec.trajectory is None else spec.trajectory
            files[name] = trajectory_bytes(trajectory, spec.traj_bytes)
        else:
            stage = name.removesuffix(".gro")
            title = f"{stage} {spec.simulation_type} replica {spec.replica} seed {spec.seed}\n"
            box_line = "".join(f"{edge * rng.uniform(0.97, 1.03):10.5f}" for edge in box) + "\n"
            files[name] = title.encode() + _gro_body(*kind, stage) + box_line.encode()
    registry, analysis_files = _registry(spec, rng)
    if registry is not None:
        files[".analysis/metadata.json"] = registry_bytes(registry)
        files.update({f".analysis/{rel}": data for rel, data in analysis_files.items()})
    return sim_hash, files, registry


def registry_bytes(registry: dict[str, Any]) -> bytes:
    """`.analysis/metadata.json` as the generator writes it."""
    return json.dumps(registry, indent=2).encode()


# --- writing ------------------------------------------------------------------------------------


def write_new(path: str | bytes, data: bytes) -> None:
    """Create the file `path` (it must not exist) holding `data` (mode 0644 less the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_spec(sim_dir: Path, spec: SimulationSpec) -> SimulationRecord:
    """Write the simulation `spec` describes at `sim_dir` and describe what was written."""
    sim_hash, files, registry = simulation_files(spec)
    base = str(sim_dir)
    for parent in sorted({os.path.dirname(rel) for rel in files}):
        os.makedirs(os.path.join(base, parent), exist_ok=True)
    for rel, data in files.items():
        write_new(os.path.join(base, rel), data)
    return SimulationRecord(
        sim_dir,
        sim_hash,
        spec.simulation_type,
        spec.parametrization,
        spec.status,
        tuple(registry["analyses"]) if registry else (),
        tuple(registry["artifacts"]) if registry else (),
        len(files),
        sum(len(data) for data in files.values()),
    )


def write_simulation(
    parent: str | os.PathLike[str],
    *,
    simulation_type: str = "bilayer",
    parametrization: str = "charmm36m",
    status: str = "completed",
    seed: int = 0,
    replica: int = 0,
    trajectory: int | None = None,
    traj_bytes: int | None = None,
    dirname: str | None = None,
) -> SimulationRecord:
    """Write one clean simulation at `<parent>/<HASH>/` (or `<parent>/<dirname>/`) and describe it.

    Simulations given the same `trajectory` id get byte-identical prod.xtc files.
    """
    if simulation_type not in SIMULATION_TYPES or status not in STATUSES:
        raise UsageError(f"unknown simulation_type {simulation_type!r} or status {status!r}")
    spec = SimulationSpec(simulation_type, parametrization, status, seed, replica, trajectory, traj_bytes)
    name = dirname or simulation_hash(build_input(spec))
    return write_spec(Path(parent) / name, spec)
