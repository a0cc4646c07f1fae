"""Path helpers: names relative to the campaign root."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from mdbatch.paths import display, relative_to_root

segment = st.sampled_from(["a", "b", ".", "..", "", "sim-1", "..x", "caf\udce9"])


@given(root=st.lists(segment, max_size=3), rest=st.lists(segment, max_size=4), absolute=st.booleans())
def test_relative_to_root_agrees_with_relpath(root, rest, absolute):
    top = ("/" if absolute else "") + "/".join(root)
    if not top:
        top = "."
    path = top.rstrip("/") + "/" + "/".join(rest) if rest else top
    expected = display(os.path.relpath(path, top).replace(os.sep, "/"))
    assert relative_to_root(path, top) == expected


def test_relative_to_root_of_common_shapes():
    assert relative_to_root("/data/camp/sim1", "/data/camp") == "sim1"
    assert relative_to_root("/data/camp/x/sim1", "/data/camp") == "x/sim1"
    assert relative_to_root("/data/camp/x/../sim1", "/data/camp") == "sim1"
    assert relative_to_root("/sim1", "/") == "sim1"
    assert relative_to_root("/data/camp", "/data/camp") == "."
    assert relative_to_root("/data/other/sim1", "/data/camp") == "../other/sim1"
    assert relative_to_root(os.fsdecode(b"/d/caf\xe9"), "/d") == "caf\\xe9"
