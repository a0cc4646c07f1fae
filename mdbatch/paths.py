"""Path names as mdbatch shows and stores them, and the safety rule for registry paths."""

from __future__ import annotations

import functools
import os
import posixpath


def display(name: str) -> str:
    """A printable, UTF-8-encodable form of a path decoded with surrogateescape.

    Undecodable bytes appear as ``\\xNN``; ASCII and valid UTF-8 names come back unchanged.
    """
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def raw_bytes(name: str) -> bytes | None:
    """The exact on-disk bytes of a name that is not valid UTF-8, else None (display() is exact)."""
    if name.isascii():
        return None
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return os.fsencode(name)


def contained(path: object) -> str | None:
    """Normalize a registry path (relative to `.analysis`) or return None when it is unsafe.

    Unsafe: not a non-empty string, absolute, containing NUL or a backslash, or escaping its base
    directory once normalized. Safe paths come back normalized with '/' separators.
    """
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        return None
    if path.startswith("/") or os.path.isabs(path):
        return None
    norm = posixpath.normpath(path)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


def relative_to_root(path: str, root: str | None) -> str:
    """`path` relative to `root` in '/' form (the simulation's name in findings and the catalog)."""
    if root is None:
        return display(os.path.basename(os.path.normpath(path)) or path)
    prefix = _root_prefix(root)
    if prefix is not None and path.startswith(prefix):
        # The common case (paths the walk joined onto the root) without relpath's two abspath calls.
        rel = path[len(prefix) :]
        if rel and posixpath.normpath(rel) == rel and not rel.startswith(("/", "..")):
            return display(rel)
    rel = os.path.relpath(path, root)
    return display(rel.replace(os.sep, "/"))


@functools.lru_cache(maxsize=16)
def _root_prefix(root: str) -> str | None:
    """`root` plus the separator, when `root` is absolute and normalized (else None: use relpath)."""
    if os.sep != "/" or not os.path.isabs(root) or posixpath.normpath(root) != root:
        return None
    return root if root.endswith("/") else root + "/"
