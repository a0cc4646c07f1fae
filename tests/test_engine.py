"""The fan-out on a real LocalCluster (and in-process): bounded in-flight work, and work that results call for."""

from __future__ import annotations

import os
import signal

import pytest

from mdbatch.engine import ClusterOptions, Fanout, Inline, inline_is_faster
from mdbatch.errors import Interrupted
from mdbatch.lifecycle import STOP

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


def test_workers_that_join_late_are_used(make_campaign, tmp_path):
    """An allocation's workers register after the client connects (--scheduler-file): the fan-out
    follows them, and the summary counts every worker that took part."""
    import threading
    import time

    from distributed import Client, LocalCluster

    from mdbatch.auditing import audit

    camp = make_campaign(400, seed=81)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        box: dict[str, object] = {}
        options = ClusterOptions(scheduler=cluster.scheduler_address)

        def run() -> None:
            box["result"] = audit(camp.dest, db=f"sqlite:///{tmp_path / 'c.db'}", cluster=options, batch_size=2, progress=False)

        with Client(cluster) as watcher:
            thread = threading.Thread(target=run)
            thread.start()
            time.sleep(1.5)
            assert thread.is_alive()
            cluster.scale(3)  # two more workers join mid-audit
            thread.join(300)
            executed = watcher.run(lambda dask_worker: dask_worker.state.executed_count)
    result = box["result"]
    assert result.summary["outcome"] == "completed" and result.summary["simulations"] == 400
    assert result.summary["workers"] == 3 and len(executed) == 3 and all(n > 0 for n in executed.values()), executed


class SignalsWhenSerialized:
    """A task argument that sends this process SIGUSR1 while Dask serializes the task carrying it."""

    def __reduce__(self) -> tuple[type, tuple[int]]:
        os.kill(os.getpid(), signal.SIGUSR1)
        return (int, (3,))


def test_a_stop_signal_while_a_task_is_serialized_is_interrupted_not_a_dask_error() -> None:
    """A walltime signal that lands while Dask pickles a task: Dask wraps whatever is raised there in its
    own TypeError ('Could not serialize object'), which the CLI reported as an internal error (exit 2)
    instead of an interruption (exit 3, requeued by the sbatch scripts)."""
    installed = STOP.install()
    try:
        with Fanout(ClusterOptions(workers=1, dashboard=False)) as fan, pytest.raises(Interrupted, match="stopped by SIGUSR1"):
            for _ in fan.stream(square, [SignalsWhenSerialized(), 1, 2], in_flight=1):
                pass
    finally:
        if installed:
            STOP.uninstall()
        STOP.reset()
