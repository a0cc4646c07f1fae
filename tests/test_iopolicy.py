"""Adaptive I/O: cold reads are told by the reads themselves (RWF_NOWAIT), and set the reads in flight."""

from __future__ import annotations

import os

import pytest

from mdbatch.hashing import digest_file
from mdbatch.iopolicy import COLD_THREADS, SLOW_THREADS, WARM_THREADS, AdaptiveIO, threads_for


def evict(path) -> None:
    """Drop a file from the page cache, as a cold filesystem holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [1000, 3 << 20])
def test_a_read_tells_whether_the_file_was_in_the_page_cache(tmp_path, size):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    warm = digest_file(str(path))
    if warm.cold is None:
        pytest.skip("this filesystem cannot read without waiting (no RWF_NOWAIT)")
    assert warm.cold is False
    evict(path)
    cold = digest_file(str(path))
    assert cold.cold is True and cold.xxh3_128 == warm.xxh3_128 and not cold.changed
    assert digest_file(str(path)).cold is False  # read once: in the cache now


def test_threads_follow_the_cold_share_and_else_the_latency():
    assert threads_for(0.0, 1e-3) == WARM_THREADS  # warm reads on a loaded machine look slow: the share decides
    assert threads_for(0.5, 1e-4) == COLD_THREADS
    assert threads_for(0.5, 5e-3) == SLOW_THREADS
    assert threads_for(None, 10e-6) == WARM_THREADS and threads_for(None, 500e-6) == COLD_THREADS
    assert threads_for(None, 5e-3) == SLOW_THREADS and threads_for(None, None) == WARM_THREADS


def test_adaptive_io_starts_from_a_probe_and_follows_the_batches(make_campaign):
    camp = make_campaign(3, seed=3)
    sims = [str(camp.dest / s) for s in camp.simulations]
    for sim in sims:
        for name in os.listdir(sim):
            if os.path.isfile(os.path.join(sim, name)):
                evict(os.path.join(sim, name))
    io = AdaptiveIO()
    io.start(sims)
    if io.cold_share is None:
        pytest.skip("this filesystem cannot read without waiting (no RWF_NOWAIT)")
    assert io.cold_share == 1.0 and io.threads == COLD_THREADS
    io.observe(reads=100, read_s=0.001, known=100, cold=0)  # the campaign is warm now
    io.observe(reads=100, read_s=0.001, known=100, cold=0)
    assert io.threads == WARM_THREADS and io.history == [COLD_THREADS, WARM_THREADS]
    fixed = AdaptiveIO(fixed=3)
    fixed.start(sims)
    fixed.observe(reads=10, read_s=1.0, known=10, cold=10)
    assert fixed.threads == 3 and fixed.history == []


def test_a_filesystem_that_cannot_tell_does_not_blind_the_others(tmp_path):
    """procfs refuses reads without waiting: that says nothing of the campaign's filesystem."""
    assert digest_file("/proc/self/status").cold is None
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    digest_file(str(path))
    assert digest_file(str(path)).cold is False
