"""Campaigns with every repairable fault, audited into a catalog, and the registries' bytes to compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdbatch.auditing import audit
from mdbatch.generate import GenerateResult, generate_campaign

#: The kinds a generated campaign with faults=True still reports after `repair --accept-checksums
#: --rebuild-corrupt` (running as root, `unreadable` is not reported at all).
NEVER_FIXED = {"invalid_name": 2, "parquet_unreadable": 2, "unsafe_path": 2}
#: What that repair fixes in such a campaign, one registry per finding.
FIXED_ALL = {
    "artifact_checksum_mismatch": 1,
    "artifact_missing_file": 1,
    "columns_mismatch": 1,
    "extra_file": 1,
    "missing_file": 1,
    "registry_corrupt": 2,
    "row_count_mismatch": 1,
}


@dataclass
class Audited:
    camp: GenerateResult
    db: str
    audit_run: str

    @property
    def root(self) -> Path:
        return self.camp.dest


def registries(root: Path) -> dict[str, bytes | None]:
    """Every simulation's registry bytes (None: no registry file), by simulation."""
    out: dict[str, bytes | None] = {}
    for sim in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = sim / ".analysis" / "metadata.json"
        out[sim.name] = path.read_bytes() if path.exists() else None
    return out


def tree(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under `root`: its bytes (files) and mode, to prove nothing changed."""
    out: dict[str, tuple[bytes | None, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (path.read_bytes() if path.is_file() and not path.is_symlink() else None, st.st_mode)
    return out


def kinds_of(summary_kinds: dict[str, int] | None) -> dict[str, int]:
    return {k: v for k, v in (summary_kinds or {}).items() if v}


@pytest.fixture
def audited(tmp_path: Path) -> Callable[..., Audited]:
    """Factory: a generated campaign with faults, audited into a catalog (SQLite unless `db` is given)."""

    def make(sims: int = 30, db: str | None = None, seed: int = 3) -> Audited:
        camp = generate_campaign(tmp_path / f"campaign{seed}", sims, seed=seed, faults=True)
        url = db or f"sqlite:///{tmp_path / f'catalog{seed}.db'}"
        result = audit(camp.dest, db=url, progress=False)
        return Audited(camp, url, result.run_id)

    return make
