"""The fan-out on a real LocalCluster: bounded in-flight work, and work that results call for."""

from __future__ import annotations

import pytest

from mdbatch.engine import ClusterOptions, Fanout

pytestmark = pytest.mark.integration


def square(x: int, index: int = 0) -> tuple[int, int]:
    return index, x * x


class Growing:
    """Yields its queue; runs out now and then, and gets more when a result asks for it."""

    def __init__(self, items: list[int]) -> None:
        self.queue = list(items)

    def __iter__(self) -> Growing:
        return self

    def __next__(self) -> int:
        if not self.queue:
            raise StopIteration
        return self.queue.pop(0)


def test_stream_runs_the_follow_ups_that_results_call_for():
    feed = Growing([1, 2, 3])
    seen: list[int] = []
    with Fanout(ClusterOptions(workers=1, dashboard=False)) as fan:
        for _, value in fan.stream(square, feed, in_flight=2):
            seen.append(value)
            if value < 1000:  # every result below 1000 calls for one more task, even the last one
                feed.queue.append(value + 1000)
    assert sorted(seen) == [1, 4, 9, 1001**2, 1004**2, 1009**2]


def test_stream_does_not_end_while_the_last_result_calls_for_more():
    feed = Growing([2])
    seen: list[int] = []
    with Fanout(ClusterOptions(workers=1, dashboard=False)) as fan:
        for _, value in fan.stream(square, feed):
            seen.append(value)
            if value < 10**6:  # nothing else is in flight when each of these comes back
                feed.queue.append(value)
    assert seen == [4, 16, 256, 65536, 65536**2]
