"""Property: whatever text and integers go in come back out, on every backend (NUL aside on PostgreSQL)."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdbatch.catalog import Upsert, open_catalog, schema
from mdbatch.catalog.ops import rows_table

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ROWS = st.lists(
    st.tuples(TEXT, st.one_of(st.none(), TEXT), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
    min_size=1,
    max_size=12,
    unique_by=lambda row: row[0],
)


def round_trip(url: str, rows: list[tuple[str, str | None, int | None]]) -> None:
    table = rows_table(
        schema.ANALYSIS_OVERVIEW,
        [{"hash": h, "item_type": "analysis", "item_name": "n", "directory": d, "row_count": n} for h, d, n in rows],
    )
    with open_catalog(url) as cat:
        cat.clear([("ANALYSIS_OVERVIEW", {})])
        assert cat.apply([Upsert("ANALYSIS_OVERVIEW", table, "error")]) == [len(rows)]
        got = {r["hash"]: (r["directory"], r["row_count"]) for t in cat.iter_rows("ANALYSIS_OVERVIEW") for r in t.to_pylist()}
        found = cat.existing_keys("ANALYSIS_OVERVIEW", table.select(["hash", "item_type", "item_name"]))
    pg = url.startswith("postgresql")

    def stored(text: str | None) -> str | None:
        return text.replace("\x00", "\ufffd") if pg and text is not None else text

    assert got == {stored(h): (stored(d), n) for h, d, n in rows}
    assert found.num_rows == len(rows)


@settings(max_examples=40, deadline=None)
@given(rows=ROWS)
def test_sqlite_round_trip(rows):
    with tempfile.TemporaryDirectory() as tmp:
        round_trip(f"sqlite:///{tmp}/c.db", rows)


@settings(max_examples=40, deadline=None)
@given(rows=ROWS)
def test_csv_round_trip(rows):
    with tempfile.TemporaryDirectory() as tmp:
        round_trip(f"csv://{tmp}/cat", rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS.filter(lambda rs: len({h.replace("\x00", "\ufffd") for h, _, _ in rs}) == len(rs)))
def test_postgres_round_trip(pg_url, rows):
    round_trip(pg_url, rows)
