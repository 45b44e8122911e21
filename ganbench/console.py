"""The console that `ganbench` writes its progress, notes and failures to."""
from __future__ import annotations

from rich.console import Console


def stderr_console() -> Console:
    """Rich on stderr. On a terminal it wraps at the window's width; on a pipe or file (a CI log,
    `nohup ... > log`) rich would wrap at 80 columns, splitting a run's failure reason or a path over
    lines, so there every message stays one line, whole, for grep."""
    console = Console(stderr=True)
    console.soft_wrap = not console.is_terminal
    return console
