"""Loggers: trackers (TensorBoard, MLflow) fed each metrics.jsonl record while a run trains.

The helpers here turn a record into scalar tags and a run's config.json into flat settings, the
shapes trackers take; both read only what is already on the host.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

from ganbench.rundir import read_json
from ganbench.state import Run

# Record keys that are not curves: what the record is, where its grid lies, nested explanations.
NOT_SCALARS = ("kind", "step", "sample_grid", "provenance", "nonfinite")


@contextlib.contextmanager
def random_streams_kept() -> Iterator[None]:
    """Python's and numpy's global random streams as they were before a tracker's client ran.
    ganbench seeds both per run and checkpoints them; MLflow draws from Python's (names and
    ids), which would make a logged run differ from an unlogged one."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def missing(module: str, extra: str) -> str | None:
    """A logger's check(): the one-line reason it cannot run when `module` is not installed."""
    try:
        importlib.import_module(module)
    except ImportError:
        return f"it needs the {module} package, which is not installed: pip install 'ganbench[{extra}]'"
    return None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """Every number of a record by tag: "d_loss", "layers/d/1/grad" (nested tables joined with "/").
    Booleans, None and text are left out."""
    out: dict[str, float] = {}

    def walk(tag: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{tag}/{key}", sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[tag] = float(value)

    for key, value in record.items():
        if key not in NOT_SCALARS:
            walk(key, value)
    return out


def flat_settings(run: Run) -> dict[str, bool | int | float | str]:
    """The run's resolved settings (its config.json) as flat dotted keys: "optimizer.d.lr",
    "loss" = "bce", "tricks" = "ema,spectral-norm", "tricks.ema.decay", plus suite, config, seed."""
    config = read_json(run.dir / "config.json") or {}
    flat: dict[str, bool | int | float | str] = {
        "suite": str(config.get("suite", "")), "config": run.settings.config, "seed": run.seed,
        "scale": str(config.get("scale", "")), "run_id": run.id}

    def is_choice(value: Any) -> bool:
        return isinstance(value, dict) and set(value) == {"name", "params"}

    def walk(key: str, value: Any) -> None:
        if is_choice(value):
            flat[key] = value["name"]
            for param, item in value["params"].items():
                walk(f"{key}.{param}", item)
        elif isinstance(value, dict):
            for sub, item in value.items():
                walk(f"{key}.{sub}" if key else sub, item)
        elif isinstance(value, list) and all(is_choice(v) for v in value):
            flat[key] = ",".join(v["name"] for v in value)
            for v in value:
                for param, item in v["params"].items():
                    walk(f"{key}.{v['name']}.{param}", item)
        elif isinstance(value, (bool, int, float, str)):
            flat[key] = value
        else:  # None, lists of numbers (betas): as text
            flat[key] = json.dumps(value)

    walk("", config.get("settings", {}))
    if "dataset" in config:
        walk("dataset", config["dataset"])
    flat.pop("loggers", None)
    return flat
