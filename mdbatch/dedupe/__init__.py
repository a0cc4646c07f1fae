"""Campaign-wide deduplication: staged duplicate finding, journaled linking, a content-addressed store.

- `plan.find_duplicates`: size -> inode -> head+tail -> whole-file xxh3-128, global grouping.
- `apply.apply_groups`: re-check, byte-compare, journal, link atomically (hardlink/reflink/symlink).
- `recover.recover_pending` / `recover.recover_journal`: finish an interrupted apply.
- `store.Store`: objects/<2 hex>/<digest>, reference log, stats, verify, gc.
- `run.dedupe`: the whole command.
"""

from __future__ import annotations

from .apply import apply_groups
from .model import ApplyOptions, ApplyResult, DuplicateGroup, FileRef, FindResult
from .plan import FindOptions, LocalRunner, find_duplicates
from .recover import RecoveryReport, recover_journal, recover_pending
from .run import DedupeResult, dedupe
from .store import Store

__all__ = [
    "ApplyOptions",
    "ApplyResult",
    "DedupeResult",
    "DuplicateGroup",
    "FileRef",
    "FindOptions",
    "FindResult",
    "LocalRunner",
    "RecoveryReport",
    "Store",
    "apply_groups",
    "dedupe",
    "find_duplicates",
    "recover_journal",
    "recover_pending",
]
