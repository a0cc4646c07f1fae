"""A simulation's identity: its hash, type, engine and parametrization, from MDFactory's build files.

The root `metadata.json` (build metadata) wins; the build input YAML fills what it lacks; the hash
falls back to a 40-hex-digit YAML name, then to the directory's name. Parsed from bytes the scan
already read; never raises.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from .paths import display

_HASH40 = re.compile(r"[0-9A-Fa-f]{40}")


def identity(
    sim: str, top: set[str], data: Mapping[str, bytes], max_input_bytes: int
) -> tuple[str, str | None, str | None, str | None, str | None, str | None]:
    """(hash, simulation_type, engine, parametrization, input_data, input_data_type) of the simulation
    at `sim`, from the bytes already read of its files (`data`, by relative path)."""
    base = os.path.basename(os.path.normpath(sim))
    meta: dict[str, Any] = {}
    raw = data.get("metadata.json")
    if raw is not None:
        try:
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                meta = loaded
        except ValueError:
            meta = {}
    yaml_name = build_input_name(base, top)
    yaml_text = None
    if yaml_name is not None and yaml_name in data:
        yaml_text = data[yaml_name][:max_input_bytes].decode("utf-8", "replace")
    if not isinstance(meta.get("hash"), str) and yaml_text is not None:
        meta = {**_yaml_identity(yaml_text), **{k: v for k, v in meta.items() if v is not None}}
    digest = meta.get("hash")
    if not isinstance(digest, str) or not digest:
        stem = yaml_name.rsplit(".", 1)[0] if yaml_name else ""
        digest = stem if _HASH40.fullmatch(stem) else display(base)

    def text(key: str) -> str | None:
        value = meta.get(key)
        return None if value is None else str(value)

    return (digest, text("simulation_type"), text("engine"), text("parametrization"), yaml_text, "yaml" if yaml_text is not None else None)


def build_input_name(base: str, top: set[str]) -> str | None:
    """The build input among the top-level files: `<dir>.yaml`, else `build.yaml`, else the first `*.yaml`."""
    for candidate in (f"{base}.yaml", "build.yaml"):
        if candidate in top:
            return candidate
    yamls = sorted(n for n in top if n.endswith(".yaml"))
    return yamls[0] if yamls else None


def _yaml_identity(text: str) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: doc.get(k) for k in ("hash", "simulation_type", "engine", "parametrization") if doc.get(k) is not None}
