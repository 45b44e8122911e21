"""A suite's output folder: checked writable before anything trains, and locked while a suite runs.

The lock is `filelock`'s (an flock on `.ganbench.lock`), so the kernel frees it when its process
dies however it dies; `.ganbench.lock.json` beside it names the holder (pid, host, start, command),
for the message a second `ganbench run` gets, and for the note when a dead holder's lock is taken over.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ganbench.errors import UsageError
from ganbench.rundir import read_json, write_json

LOCK = ".ganbench.lock"
HOLDER = ".ganbench.lock.json"


def check_writable(out: Path, flag: str = "--out") -> None:
    """Create `out` and a scratch file in it, or refuse in one line (exit 2): read-only, below a
    file, no permission, a full disk."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".ganbench-write-check."):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{flag} {out}: cannot write there ({reason}"
                         f"{f': {exc.filename}' if exc.filename and str(exc.filename) != str(out) else ''}); "
                         f"give a folder this user can create and write") from None


class OutputLock:
    """Held by one `ganbench run` per output folder at a time."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = FileLock(str(out / LOCK), timeout=0)
        self.note: str | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(f"{self.out}: in use by another ganbench run ({describe(read_json(self.out / HOLDER))}); "
                             "wait for it to finish, stop it, or give another --out") from None
        previous = read_json(self.out / HOLDER)
        if isinstance(previous, dict) and previous.get("pid") != os.getpid():
            self.note = (f"took over the lock of {self.out} from {describe(previous)}, "
                         "which is no longer running")
        write_json(self.out / HOLDER, holder())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            (self.out / HOLDER).unlink(missing_ok=True)
        except OSError:
            pass
        self.lock.release()


def holder() -> dict[str, Any]:
    from ganbench.trainer import now

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now(),
            "command": " ".join(["ganbench", *sys.argv[1:]])}


def describe(info: Any) -> str:
    if not isinstance(info, dict):
        return "holder unknown"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}: "
            f"{info.get('command', '?')}")
