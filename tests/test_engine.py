"""The fan-out on a real LocalCluster (and in-process): bounded in-flight work, and work that results call for."""

from __future__ import annotations

import pytest

from mdbatch.engine import ClusterOptions, Fanout, Inline, inline_is_faster

pytestmark = pytest.mark.integration


def square(x: int, index: int = 0) -> tuple[int, int]:
    return index, x * x


class Growing:
    """Work whose queue runs out now and then, and gets more when a result asks for it."""

    def __init__(self, items: list[int]) -> None:
        self.queue = list(items)

    def take(self) -> int | None:
        return self.queue.pop(0) if self.queue else None


def runner(kind: str) -> Fanout | Inline:
    return Fanout(ClusterOptions(workers=1, dashboard=False)) if kind == "dask" else Inline()


@pytest.mark.parametrize("kind", ["dask", "inline"])
def test_stream_runs_the_follow_ups_that_results_call_for(kind):
    feed = Growing([1, 2, 3])
    seen: list[int] = []
    with runner(kind) as fan:
        for _, value in fan.stream(square, feed, in_flight=2):
            seen.append(value)
            if value < 1000:  # every result below 1000 calls for one more task, even the last one
                feed.queue.append(value + 1000)
    assert sorted(seen) == [1, 4, 9, 1001**2, 1004**2, 1009**2]


@pytest.mark.parametrize("kind", ["dask", "inline"])
def test_stream_does_not_end_while_the_last_result_calls_for_more(kind):
    feed = Growing([2])
    seen: list[int] = []
    with runner(kind) as fan:
        for _, value in fan.stream(square, feed):
            seen.append(value)
            if value < 10**6:  # nothing else is in flight when each of these comes back
                feed.queue.append(value)
    assert seen == [4, 16, 256, 65536, 65536**2]


def test_only_the_default_local_cluster_may_be_skipped():
    assert inline_is_faster(ClusterOptions(), 0.1)
    assert not inline_is_faster(ClusterOptions(), 1000.0)
    for forced in (
        ClusterOptions(workers=2),
        ClusterOptions(scheduler="tcp://h:1"),
        ClusterOptions(kind="slurm"),
        ClusterOptions(dashboard=True),
        ClusterOptions(performance_report="p.html"),
    ):
        assert not inline_is_faster(forced, 0.1)
