"""Stopping a run cleanly on SIGINT or SIGTERM.

A run's process installs `StopRequest.install()`. The first signal asks the run to stop: the
training loop finishes its step, writes a checkpoint and ends as `interrupted`. Work that can
take minutes (set-up, an eval point) is marked interruptible, and a signal there raises
`Interrupted` at once; the loop then checkpoints the last finished step. A second SIGINT
(a second Ctrl-C) ends the process at once.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised inside interruptible work when a stop was requested."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class StopRequest:
    """Whether this run was asked to stop, and by which signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._interruptible = 0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def request(self, signum: int) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self._interruptible and first:
            raise Interrupted(signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A signal inside this block raises `Interrupted` instead of waiting for the step's end."""
        if self.requested:
            raise Interrupted(self.signum or signal.SIGTERM)
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    def install(self, watch_pid: int | None = None, on_orphaned: Callable[[], None] | None = None) -> None:
        """Handle SIGINT and SIGTERM in this process (main thread only). With `watch_pid`, also stop
        when that process (the suite's) disappears, so no run trains on as an orphan; `on_orphaned`
        is called first (to stop waiting on pipes nobody reads)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT and self.requested:
                os._exit(130)  # the second Ctrl-C: at once
            self.request(signum)

        for sig in SIGNALS:
            signal.signal(sig, handler)
        if watch_pid is not None:
            threading.Thread(target=_watch, args=(watch_pid, on_orphaned), daemon=True).start()


def _watch(pid: int, on_orphaned: Callable[[], None] | None) -> None:
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if _gone(pid) or os.getppid() != parent:  # a forkserver child's parent exits with the suite
            if on_orphaned:
                on_orphaned()
            os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, like a real SIGTERM
            return


def _gone(pid: int) -> bool:
    """True when `pid` is no longer running: no such process, or a zombie not yet reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # the pid was reused by another user's process: ours is gone
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): the kill(0) above is all there is
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
