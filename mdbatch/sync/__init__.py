"""MDFactory's sync, done in bulk: push records into the catalog, pull them back, clear them.

`mdbatch.sync.push.push` fans the per-simulation work out on Dask and writes centrally in bulk
transactions; pull.py streams rows out as a table, CSV, JSON lines or parquet; clear.py deletes
rows after saying what will go. records.py holds the pure per-simulation work.
"""

from __future__ import annotations

from .collect import KINDS, PushUnit

__all__ = ["KINDS", "PushUnit"]
