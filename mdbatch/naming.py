"""Which analysis and artifact names may become table names."""

from __future__ import annotations

import re

# Table names are ANALYSIS_<name> / ARTIFACT_<name>; PostgreSQL truncates identifiers at 63 bytes,
# so the name part is bounded to keep every derived table name distinct and intact.
MAX_NAME_LENGTH = 54
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_valid_name(name: object) -> bool:
    """True when `name` is letters, digits and underscore, not starting with a digit, bounded length."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and name.isascii() and _NAME.fullmatch(name) is not None
