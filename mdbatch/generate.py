"""Deterministic synthetic MDFactory campaigns for demos, tests and benchmarks.

`generate_campaign` writes a tree in MDFactory's on-disk layout: one `<HASH>/` directory per
simulation with its build YAML, root `metadata.json`, GROMACS engine files, stage outputs by status
and an `.analysis/` registry with real parquet files and checksummed artifacts. The same arguments
always give a byte-identical tree. Optional faults (each recorded as the finding the scanner must
report) and hostile-but-clean entries (odd names, symlinks) exercise the audit.

Files are written directly rather than atomically: the generator only ever creates a fresh tree,
and fsyncing tens of thousands of small files would dominate its run time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mdbatch import findings
from mdbatch.atomic import atomic_write_bytes
from mdbatch.errors import UsageError

MANIFEST_NAME = "mdbatch-campaign.json"
MANIFEST_VERSION = 1
SIMULATION_TYPES: tuple[str, ...] = ("bilayer", "mixedbox", "solvation")
PARAMETRIZATIONS: tuple[str, ...] = ("charmm36m", "amber99sb", "martini3")
STATUSES: tuple[str, ...] = ("completed", "production", "equilibrated", "build")
PROFILES: tuple[str, ...] = ("metadata", "bytes")
ENGINE_FILES: tuple[str, ...] = ("system.pdb", "topology.top", "em.mdp", "nvt.mdp", "npt.mdp", "prod.mdp")
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "completed": ("min.gro", "nvt.gro", "npt.gro", "prod.xtc", "prod.gro"),
    "production": ("min.gro", "nvt.gro", "npt.gro", "prod.xtc"),
    "equilibrated": ("min.gro", "nvt.gro", "npt.gro"),
    "build": (),
}
DEFAULT_TRAJ_MB = 10.0

#: One fault per chosen simulation: (finding kind, variant). Variants pick between two forms.
FAULT_PLAN: tuple[tuple[str, int], ...] = tuple(
    (kind, variant)
    for kind, variants in (
        (findings.MISSING_FILE, 1), (findings.EXTRA_FILE, 1), (findings.ROW_COUNT_MISMATCH, 1),
        (findings.COLUMNS_MISMATCH, 1), (findings.ARTIFACT_MISSING_FILE, 1),
        (findings.ARTIFACT_CHECKSUM_MISMATCH, 1), (findings.REGISTRY_CORRUPT, 2),
        (findings.PARQUET_UNREADABLE, 2), (findings.UNSAFE_PATH, 2), (findings.INVALID_NAME, 2),
        (findings.UNREADABLE, 1),
    )
    for variant in range(variants)
)
INVALID_NAMES: tuple[str, ...] = ("x; DROP TABLE RUN_DATABASE;--", "it's \"quoted\"")
UNSAFE_PATHS: tuple[str, ...] = ("../../../etc/passwd", "/etc/hostname")
STRAY_PARQUET = ".analysis/stray.parquet"
UNREADABLE_FILE = "nvt.mdp"
# Hostile entry kind -> (name, file content or symlink target).
_HOSTILE: dict[str, tuple[bytes, bytes]] = {
    "non_utf8_name": (b"caf\xe9.dat", b"non-UTF-8 file name\n"),
    "spaces_and_quotes": (b"notes \"final\" it's v2.txt", b"spaces and quotes\n"),
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

_EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
_PARQUET_VARIANTS = 12
_COPY_PROBABILITY = 0.1  # each copy makes two simulations share bytes: ~1 in 5 overall
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
    "area_per_lipid": _SERIES, "thickness": _SERIES, "sasa": _SERIES, "density_profile": ("z_nm", "density"),
    "rdf": ("r_nm", "g_r"), "cluster_size": ("frame", "time_ps", "n_clusters", "largest"),
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
class GenerateResult:
    """What `generate_campaign` wrote: simulation dirs relative to `dest`, regular-file totals under them
    (manifest excluded), the findings an audit must report, and the manifest's path."""

    dest: Path
    simulations: list[str]
    files: int
    bytes: int
    expected_findings: list[dict[str, Any]]
    manifest_path: Path


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
        f"; {stage} parameters for {simulation_type} / {parametrization}", *_STAGE_MDP[stage],
        f"dt = {'0.020' if cg else '0.002'}", "nstxout-compressed = 5000", "nstenergy = 5000",
        "cutoff-scheme = Verlet", f"rcoulomb = {'1.1' if cg else '1.2'}", f"rvdw = {'1.1' if cg else '1.2'}",
        f"coulombtype = {'reaction-field' if cg else 'PME'}", f"constraints = {'none' if cg else 'h-bonds'}",
        "tc-grps = Membrane Solvent\nref-t = 310 310" if simulation_type == "bilayer" else "tc-grps = System\nref-t = 300",
    ]
    return ("\n".join(lines) + "\n").encode()


@cache
def _pdb_body(simulation_type: str, parametrization: str) -> bytes:
    rng = random.Random(f"pdb:{simulation_type}:{parametrization}")
    residues = _RESIDUES[simulation_type]
    lines = [
        f"ATOM  {n:5d} {'C' + str(n % 7):<4s} {residues[n % 3]:<4s}A{n // 10 + 1:4d}    "
        + "".join(f"{rng.uniform(0.0, 99.0):8.3f}" for _ in range(3)) + "  1.00  0.00           C\n"
        for n in range(1, 301)
    ]
    return "".join(lines).encode() + b"END\n"


@cache
def _gro_body(simulation_type: str, parametrization: str, stage: str) -> bytes:
    rng = random.Random(f"gro:{simulation_type}:{parametrization}:{stage}")
    residues = _RESIDUES[simulation_type]
    lines = [
        f"{n // 10 + 1:5d}{residues[n % 3]:<5s}{'C' + str(n % 7):>5s}{n:5d}"
        + "".join(f"{rng.uniform(0.0, 9.9):8.3f}" for _ in range(3)) + "\n"
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


def near_duplicate_bytes(seed: int, variant: int) -> bytes:
    """A checkpoint-like file: the same bytes for every variant of one campaign seed except the
    NEAR_DUPLICATE_SPAN in the middle, which depends on `variant`."""
    data = bytearray(random.Random(f"mdbatch-near-duplicate:{seed}").randbytes(NEAR_DUPLICATE_SIZE))
    data[:8] = b"GMXCPT\x00\x01"
    offset, length = NEAR_DUPLICATE_SPAN
    data[offset : offset + length] = hashlib.sha256(f"state:{seed}:{variant}".encode()).digest()[:length]
    return bytes(data)


def _add_near_duplicates(root: Path, rel_dirs: list[str], clean: list[int], seed: int, rng: random.Random) -> list[dict[str, Any]]:
    """Write the near-duplicate checkpoints into clean simulations; returns their manifest entries."""
    chosen = rng.sample(clean, min(len(NEAR_DUPLICATE_VARIANTS), len(clean)))
    entries: list[dict[str, Any]] = []
    for position, variant in enumerate(NEAR_DUPLICATE_VARIANTS):
        index = chosen[position % len(chosen)]
        # A simulation that gets a second one (tiny campaigns) names it apart.
        name = NEAR_DUPLICATE_NAME if position < len(chosen) else f"state{position}.cpt"
        _write_new(os.path.join(root / rel_dirs[index], name), near_duplicate_bytes(seed, variant))
        entries.append({"simulation": rel_dirs[index], "name": name, "variant": variant})
    return entries


def _png_like(rng: random.Random) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + rng.randbytes(2048 + rng.randrange(4096)) + b"IEND\xaeB`\x82"


def _sha256(data: bytes) -> str:
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
        payload, rows, columns = parquet_payload(name, rng.randrange(_PARQUET_VARIANTS))
        created = _EPOCH + timedelta(seconds=rng.randrange(90 * 86400))
        files[f"{name}.parquet"] = payload
        updated = created + timedelta(seconds=rng.randrange(3 * 86400))
        registry["analyses"][name] = {
            "filename": f"{name}.parquet", "row_count": rows, "columns": list(columns),
            "created_at": created.isoformat(), "updated_at": updated.isoformat(), "extras": {},
        }
    if completed:
        artifact, filenames = _ARTIFACTS[spec.simulation_type]
        checksums: dict[str, str] = {}
        for filename in filenames:
            rel = f"artifacts/{artifact}/{filename}"
            png = filename.endswith(".png")
            files[rel] = _png_like(rng) if png else _artifact_pdb(spec.simulation_type, rng.randrange(6))
            checksums[rel] = _sha256(files[rel])
        stamp = (_EPOCH + timedelta(seconds=rng.randrange(90 * 86400))).isoformat()
        registry["artifacts"][artifact] = {
            "files": list(checksums), "checksums": checksums, "created_at": stamp, "updated_at": stamp, "extras": {},
        }
    return registry, files


def simulation_files(spec: SimulationSpec) -> tuple[str, dict[str, bytes], dict[str, Any] | None]:
    """Hash, every file of the simulation (path relative to its directory -> bytes) and its registry."""
    yaml_bytes = build_input(spec)
    sim_hash = simulation_hash(yaml_bytes)
    rng = random.Random(spec.seed ^ 0x53494D)
    kind = (spec.simulation_type, spec.parametrization)
    created = _EPOCH - timedelta(days=30) + timedelta(seconds=rng.randrange(30 * 86400))
    metadata = {"hash": sim_hash, "simulation_type": spec.simulation_type, "engine": "gromacs",
                "parametrization": spec.parametrization, "created_at": created.isoformat()}
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
        files[".analysis/metadata.json"] = _registry_bytes(registry)
        files.update({f".analysis/{rel}": data for rel, data in analysis_files.items()})
    return sim_hash, files, registry


def _registry_bytes(registry: dict[str, Any]) -> bytes:
    return json.dumps(registry, indent=2).encode()


# --- writing ------------------------------------------------------------------------------------


def _write_new(path: str | bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _write_spec(sim_dir: Path, spec: SimulationSpec) -> SimulationRecord:
    sim_hash, files, registry = simulation_files(spec)
    base = str(sim_dir)
    for parent in sorted({os.path.dirname(rel) for rel in files}):
        os.makedirs(os.path.join(base, parent), exist_ok=True)
    for rel, data in files.items():
        _write_new(os.path.join(base, rel), data)
    return SimulationRecord(
        sim_dir, sim_hash, spec.simulation_type, spec.parametrization, spec.status,
        tuple(registry["analyses"]) if registry else (), tuple(registry["artifacts"]) if registry else (),
        len(files), sum(len(data) for data in files.values()),
    )


def write_simulation(
    parent: str | os.PathLike[str], *, simulation_type: str = "bilayer", parametrization: str = "charmm36m",
    status: str = "completed", seed: int = 0, replica: int = 0, trajectory: int | None = None,
    traj_bytes: int | None = None, dirname: str | None = None,
) -> SimulationRecord:
    """Write one clean simulation at `<parent>/<HASH>/` (or `<parent>/<dirname>/`) and describe it.

    Simulations given the same `trajectory` id get byte-identical prod.xtc files.
    """
    if simulation_type not in SIMULATION_TYPES or status not in STATUSES:
        raise UsageError(f"unknown simulation_type {simulation_type!r} or status {status!r}")
    spec = SimulationSpec(simulation_type, parametrization, status, seed, replica, trajectory, traj_bytes)
    name = dirname or simulation_hash(build_input(spec))
    return _write_spec(Path(parent) / name, spec)


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
        (sim / STRAY_PARQUET).write_bytes(parquet_payload(first, _PARQUET_VARIANTS)[0])
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
        artifact["checksums"][bad] = _sha256(bad.encode())
        item = f"{artifact_name}:{bad}"
    elif kind == findings.INVALID_NAME:
        name = INVALID_NAMES[variant % len(INVALID_NAMES)]
        payload, rows, columns = parquet_payload(first, _PARQUET_VARIANTS + 1)
        (analysis_dir / f"{name}.parquet").write_bytes(payload)
        registry["analyses"][name] = {**entry, "filename": f"{name}.parquet", "row_count": rows, "columns": list(columns)}
        item = name
    elif kind == findings.UNREADABLE:
        os.chmod(sim / UNREADABLE_FILE, 0)
        item, rewrite = UNREADABLE_FILE, False
        extra["requires_non_root"] = True
    else:
        raise UsageError(f"cannot inject fault kind {kind!r}")
    if rewrite:
        registry_path.write_bytes(_registry_bytes(registry))
    return {"kind": kind, "item": item, **extra}


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
        _write_new(path, target)
    return name.decode("utf-8", "backslashreplace")


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


# --- the campaign -------------------------------------------------------------------------------


def _statuses(sims: int, minimum_completed: int, rng: random.Random) -> list[str]:
    completed = min(sims, max(round(sims * 0.7), minimum_completed))
    production = min(round(sims * 0.1), sims - completed)
    equilibrated = min(round(sims * 0.1), sims - completed - production)
    counts = (completed, production, equilibrated, sims - completed - production - equilibrated)
    statuses = [status for status, count in zip(STATUSES, counts, strict=True) for _ in range(count)]
    rng.shuffle(statuses)
    return statuses


def _plan(sims: int, seed: int, faults: bool, traj_bytes: int | None) -> list[SimulationSpec]:
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
    if not nested:
        return sim_hash
    if index % 25 == 3:
        return f"a/b/{sim_hash}"
    groups = max(2, min(16, (sims + 99) // 100))
    return f"group_{index % groups}/{sim_hash}"


def generate_campaign(
    dest: str | os.PathLike[str], sims: int, *, seed: int = 0, faults: bool = False, profile: str = "metadata",
    traj_mb: float | None = None, nested: bool = False, hostile: bool = False,
) -> GenerateResult:
    """Write a synthetic campaign of `sims` simulations under `dest` (missing or empty) and its manifest.

    Statuses are ~70% completed, 10% each production/equilibrated/build. `faults` damages one
    completed simulation per entry of `FAULT_PLAN`; `hostile` adds awkward but clean entries, one
    extra simulation in a directory named with spaces, and near-duplicate checkpoints (same size,
    head and tail; see NEAR_DUPLICATE_NAME). `profile="bytes"` makes each prod.xtc
    `traj_mb` MB (default 10). Same arguments, same bytes.
    """
    if isinstance(sims, bool) or not isinstance(sims, int) or sims < 0:
        raise UsageError(f"sims must be a non-negative integer, got {sims!r}")
    if profile not in PROFILES:
        raise UsageError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if traj_mb is not None and (profile != "bytes" or traj_mb <= 0):
        raise UsageError("traj_mb must be positive and is only used with profile='bytes'")
    if faults and sims < len(FAULT_PLAN):
        raise UsageError(f"faults=True needs at least {len(FAULT_PLAN)} simulations, got {sims}")
    root = Path(dest)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root}: destination must be missing or an empty directory")
    root.mkdir(parents=True, exist_ok=True)

    traj_bytes = int((DEFAULT_TRAJ_MB if traj_mb is None else traj_mb) * 2**20) if profile == "bytes" else None
    specs = _plan(sims, seed, faults, traj_bytes)
    hostile_rng = random.Random(f"mdbatch-hostile:{seed}")
    if hostile:
        specs.append(SimulationSpec("bilayer", "charmm36m", "completed", hostile_rng.getrandbits(63), 0, None, traj_bytes))
    rel_dirs: list[str] = []
    hashes: list[str] = []
    for index, spec in enumerate(specs):
        sim_hash = simulation_hash(build_input(spec))
        hashes.append(sim_hash)
        rel_dirs.append(SPACED_SIM_DIR if index == sims else _relative_dir(index, sim_hash, sims, nested))
    if len(set(hashes)) != len(hashes):
        raise RuntimeError("simulation hash collision; choose another seed")

    # Serial on purpose: file creation is kernel-bound and threads only contend (measured).
    records = [_write_spec(root / rel, spec) for rel, spec in zip(rel_dirs, specs, strict=True)]
    tallies = [(record.files, record.bytes) for record in records]

    expected: list[dict[str, Any]] = []
    touched: set[int] = set()
    if faults:
        fault_rng = random.Random(f"mdbatch-faults:{seed}")
        completed = [index for index in range(sims) if specs[index].status == "completed"]
        for index, (kind, variant) in zip(fault_rng.sample(completed, len(FAULT_PLAN)), FAULT_PLAN, strict=True):
            expected.append({"simulation": rel_dirs[index], **inject_fault(root / rel_dirs[index], kind, variant)})
            touched.add(index)
    hostile_entries: list[dict[str, str]] = []
    near_duplicates: list[dict[str, Any]] = []
    if hostile:
        clean = [index for index in range(len(specs)) if index not in touched]
        chosen = hostile_rng.sample(clean, min(len(HOSTILE_KINDS), len(clean)))
        for position, kind in enumerate(HOSTILE_KINDS):
            index = chosen[position % len(chosen)]
            name = add_hostile_entry(root / rel_dirs[index], kind)
            hostile_entries.append({"simulation": rel_dirs[index], "kind": kind, "name": name})
            touched.add(index)
        near_duplicates = _add_near_duplicates(root, rel_dirs, clean, seed, hostile_rng)
        touched.update(rel_dirs.index(entry["simulation"]) for entry in near_duplicates)
    for index in touched:
        tallies[index] = _tally(root / rel_dirs[index])
    expected.sort(key=lambda finding: (finding["simulation"], finding["kind"], finding["item"]))

    total_files, total_bytes = sum(count for count, _ in tallies), sum(size for _, size in tallies)
    manifest = {
        "generator": "mdbatch.generate",
        "manifest_version": MANIFEST_VERSION,
        "parameters": {"sims": sims, "seed": seed, "faults": faults, "profile": profile, "traj_mb": traj_mb,
                       "nested": nested, "hostile": hostile},
        "files": total_files,
        "bytes": total_bytes,
        "simulations": [
            {"hash": record.hash, "status": record.status, "simulation_type": record.simulation_type,
             "parametrization": record.parametrization, "dir": rel_dir}
            for record, rel_dir in zip(records, rel_dirs, strict=True)
        ],
        "expected_findings": expected,
        "hostile_entries": hostile_entries,
        "near_duplicates": near_duplicates,
    }
    manifest_path = root / MANIFEST_NAME
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode(), mode=0o644)
    return GenerateResult(root, rel_dirs, total_files, total_bytes, expected, manifest_path)
