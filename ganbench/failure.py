"""What failed a run: the plugin and hook in its traceback, and where the training loop was.

The trainer calls every hook through pluggy's relay, so the traceback of a plugin's exception runs
through that plugin's hookimpl. Attribution walks it from the innermost frame outwards and takes
the first frame that is a registered plugin's `ganbench_*` hookimpl: a helper the hook called, or
torch code it passed bad tensors to, is then charged to the hook that made the call.
"""
from __future__ import annotations

import inspect
import os
import traceback
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# Where the loop can be when something raises; the words are for the reason line.
PHASES = {
    "setup": "set-up",
    "d": "the D update",
    "g": "the G update",
    "log": "the log record",
    "eval": "the eval point",
    "checkpoint": "the checkpoint",
    "end": "the run's end",
}


@dataclass
class Position:
    """Where a run is, read only when it fails. The trainer sets the phase with plain attribute
    writes, so following it costs a step nothing."""

    phase: str = "setup"  # a key of PHASES
    plugins: dict[str, Any] = field(default_factory=dict)  # registered name -> object, once registered


def is_core(name: str) -> bool:
    """The core registers its own defaults and diagnostics as plugins; a failure there is the core's."""
    return name == "core" or name.startswith("core:")


def _files(plugin: Any) -> set[str]:
    """The source files a plugin's hookimpls can live in: its module, or its class and bases."""
    owners = [plugin] if inspect.ismodule(plugin) else type(plugin).__mro__[:-1]
    files = set()
    for owner in owners:
        try:
            files.add(os.path.realpath(inspect.getfile(owner)))
        except TypeError:  # a built-in class or module has no file
            pass
    return files


def attribute(tb: TracebackType | None, plugins: dict[str, Any]) -> dict[str, Any]:
    """{plugin, hook, file, line} for the innermost frame of `tb` that is the hookimpl of one of
    `plugins` (registered name -> object). `plugin` is None when that frame is the core's, or when
    no hookimpl is in the traceback; `file` and `line` are then those of the innermost frame."""
    frames = list(traceback.walk_tb(tb))
    files = {name: _files(obj) for name, obj in plugins.items()}
    for frame, line in reversed(frames):
        code = frame.f_code
        if not code.co_name.startswith("ganbench_"):
            continue
        path = os.path.realpath(code.co_filename)
        owners = [name for name, found in files.items() if path in found]
        if not owners:
            continue
        # Two plugins may share a file (a module and its class); `self` tells instances apart.
        this = frame.f_locals.get("self")
        name = next((n for n in owners if plugins[n] is this), owners[0])
        return {"plugin": None if is_core(name) else name, "hook": code.co_name,
                "file": code.co_filename, "line": line}
    if frames:
        frame, line = frames[-1]
        return {"plugin": None, "hook": None, "file": frame.f_code.co_filename, "line": line}
    return {"plugin": None, "hook": None, "file": None, "line": None}


def record(exc: BaseException, plugins: dict[str, Any], step: int, phase: str,
           traceback_file: str | None) -> dict[str, Any]:
    """status.json's `failure`: the error, its attribution, the step and phase, and the traceback's
    file (relative to the run folder; None when it could not be written)."""
    return {"error": type(exc).__name__, "message": str(exc), **attribute(exc.__traceback__, plugins),
            "step": step, "phase": phase, "traceback": traceback_file}


def reason(failure: dict[str, Any]) -> str:
    """"ValueError: boom (in ganbench_discriminator_loss of trick:boom, /x/boom.py:23, during the D
    update of step 5)": status.json's reason for a failed run, as the console and the report show it."""
    where = []
    if failure.get("plugin"):
        where.append(f"in {failure['hook']} of {failure['plugin']}, {failure['file']}:{failure['line']}")
    elif failure.get("hook"):
        where.append(f"in the core's {failure['hook']}")
    phase = failure.get("phase")
    during = f"during {PHASES.get(phase, phase)}"
    if phase != "setup":  # a D or G update is part of its step; the rest happen once a step is done
        during += f" {'of' if phase in ('d', 'g') else 'at'} step {failure.get('step')}"
    where.append(during)
    return f"{failure['error']}: {failure['message']} ({', '.join(where)})"
