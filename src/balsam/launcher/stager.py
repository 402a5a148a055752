"""Stage-in and stage-out copies, done by helper threads off the launcher's loop.

A copy can take minutes (a big output directory, a slow file system); done in the loop it
would stall every other job's start, kill and state change. The launcher hands each copy to
one of ``THREADS`` daemon threads and goes on; a finished copy is reported through a pipe the
loop's selector watches, and collected there (:meth:`Stager.collect`), so everything else a
copy leads to (recording the state, the next step) still happens in the loop, in one thread.

Copies only touch files: what needs the database (a job's parents, for stage-in) is looked up
by the loop before the copy is handed over. A launcher that stops while a copy runs leaves it
(the thread dies with the process) and hands the job back in its state; the next launcher
copies again from the start, which overwrites what the first one left.
"""

from __future__ import annotations

import contextlib
import os
import queue
import selectors
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

#: Copies that can run at once.
THREADS = 4

K = TypeVar("K")


@dataclass
class Done(Generic[K]):
    """One finished copy: who asked, and its summary or the error it raised."""

    key: K
    summary: str = ""
    error: Exception | None = None


class Stager(Generic[K]):
    """Runs copies in helper threads; their ends wake ``selector`` (data: the stager)."""

    def __init__(self, selector: selectors.BaseSelector, threads: int = THREADS) -> None:
        self._todo: queue.SimpleQueue[tuple[K, Callable[[], str]] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Done[K]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selector
        selector.register(self._wake_r, selectors.EVENT_READ, self)
        self._threads = [
            threading.Thread(target=self._work, name=f"balsam-stager-{i}", daemon=True)
            for i in range(threads)
        ]
        #: Guards the wake pipe's write end against a write after close.
        self._lock = threading.Lock()
        for thread in self._threads:
            thread.start()
        self.busy = 0

    def submit(self, key: K, copy: Callable[[], str]) -> None:
        """Run ``copy`` (returns a summary for the job's history) in a helper thread."""
        self.busy += 1
        self._todo.put((key, copy))

    def collect(self) -> list[Done[K]]:
        """The copies that finished since the last call."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        finished = []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.busy -= len(finished)
        return finished

    def close(self) -> None:
        """Stop taking copies; those still running are left to die with the process."""
        for _ in self._threads:
            self._todo.put(None)
        self._selector.unregister(self._wake_r)
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    def _work(self) -> None:
        while (item := self._todo.get()) is not None:
            key, copy = item
            try:
                done = Done(key, summary=copy())
            except Exception as exc:  # reported on the job, in the loop
                done = Done(key, error=exc)
            self._done.put(done)
            with self._lock, contextlib.suppress(OSError):
                if self._wake_w >= 0:
                    os.write(self._wake_w, b"x")
