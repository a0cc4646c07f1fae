"""Signal a process at a moment of the test's choosing, without racing it to the end of its work.

A small campaign is audited (or repaired) in about a second, faster than a loaded machine lets a
test notice a moment and signal it. So the process is stopped (SIGSTOP) at that moment, the signal is
sent, and the process continues only once the signal is pending on it: it handles the signal before
it can do any more work.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def stopped(pid: int) -> bool:
    """Whether every thread of `pid` has stopped (a signal sent before that may be handled first)."""
    try:
        return all("State:\tT" in (task / "status").read_text() for task in Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # a thread ended while we looked
        return False


def pending(pid: int, sig: int) -> bool:
    """Whether `sig` waits on process `pid` (its main thread's or its process's pending set)."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [line.split()[1] for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(int(mask, 16) & (1 << (sig - 1)) for mask in masks)


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def signal_held(pid: int, sig: int, send: Callable[[], None] | None = None, timeout: float = 60) -> None:
    """Stop `pid`, deliver `sig` (by `send()`, e.g. through Slurm, or os.kill), and continue it once the
    signal is pending. Raises AssertionError when the process is gone or the signal never arrives."""
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait(f"process {pid} to stop", lambda: stopped(pid), timeout)
        (send or (lambda: os.kill(pid, sig)))()
        _wait(f"signal {sig} pending on process {pid}", lambda: pending(pid, sig), timeout)
    finally:
        os.kill(pid, signal.SIGCONT)
