"""The one error type for mistakes a user can fix: a bad suite, a bad flag, a missing file."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """A user error. The CLI prints it as one line, with no traceback, and exits with code 2.

    A bug in a plugin is not a UsageError: it keeps its traceback.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def one_of(choices: Iterable[str]) -> str:
    """'allowed: a, b, c' with the choices sorted, for error messages."""
    return "allowed: " + ", ".join(sorted(choices))
