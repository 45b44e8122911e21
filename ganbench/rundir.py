"""Files a run writes, each written atomically: to a temporary file first, then os.replace."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

STATUSES = ("running", "completed", "failed", "diverged", "collapsed", "stopped", "interrupted")


def file_mode() -> int:
    """The mode a plain `open()` would give a new file: 0o666 less the umask (0644 under umask 022)."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, then move it into place. A failed write
    (a full disk) leaves the old file as it was, and no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600 files: a shared report must be readable
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(value: Any) -> Any:
    """NaN and inf are not JSON: write them as null (the record says what was non-finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(json_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # missing, a folder, unreadable or not JSON
        return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One record per line, written with a single write so a reader never sees half a line."""
    line = (json.dumps(json_safe(record), allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: wrote {written} of {len(line)} bytes", str(path))
        except OSError:  # a full disk: cut the half-written line off again, so the log stays whole
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line of a process killed mid-write: not a record yet
                continue
            raise
        records.append(record)
    return records


def read_status(run_dir: Path) -> dict[str, Any] | None:
    return read_json(run_dir / "status.json")
