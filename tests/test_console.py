"""ganbench's stderr console keeps each message on one line when stderr is not a terminal."""
from __future__ import annotations

import io

from rich.console import Console

from ganbench.console import stderr_console

REASON = ("run failed: [Errno 28] No space left on device: '/very/long/run/folder/of/a/suite/on/a/cluster/"
          "scratch/disk/runs/vanilla-s0-0123456789/checkpoints/state.pt.tmp'")


def test_on_a_pipe_a_long_message_stays_one_line(capsys):
    console = stderr_console()  # pytest's capture stands in for a pipe: not a terminal
    assert not console.is_terminal
    console.print(REASON)
    assert capsys.readouterr().err.splitlines() == [REASON]


def test_rich_alone_would_wrap_it_at_80_columns():
    # the reason for stderr_console: a plain Console on a non-terminal file splits the message
    plain = Console(file=io.StringIO(), width=80)
    plain.print(REASON)
    assert len(plain.file.getvalue().splitlines()) > 1


def test_on_a_terminal_it_still_wraps_at_the_window(monkeypatch):
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert not stderr_console().soft_wrap
