"""Shared fixtures: real campaigns on disk, and services that skip locally but fail under CI."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mdbatch.generate import GenerateResult, generate_campaign

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() == "true"


def need_service(available: bool, reason: str) -> None:
    """Skip with `reason` when a service is missing locally; fail instead under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def make_campaign(tmp_path: Path) -> Callable[..., GenerateResult]:
    """Factory: a generated campaign under tmp_path (real parquet, registries, binaries)."""
    counter = iter(range(1000))

    def make(sims: int = 12, **kwargs: object) -> GenerateResult:
        return generate_campaign(tmp_path / f"campaign{next(counter)}", sims, **kwargs)  # type: ignore[arg-type]

    return make


def expected(result: GenerateResult) -> set[tuple[str, str, str]]:
    """The findings a scan must report for a generated campaign, as (simulation, kind, item)."""
    return {
        (f["simulation"], f["kind"], f["item"])
        for f in result.expected_findings
        if not (IS_ROOT and f.get("requires_non_root"))
    }
