"""mdbatch: distributed batch auditing, cataloguing and deduplication of simulation campaigns."""

from __future__ import annotations

__version__ = "0.1.0"
