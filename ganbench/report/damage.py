"""What the report accepts from a suite's files, checked before anything reads them.

A run folder may come from anywhere (a crash, a disk that filled up, a hand edit, a tarball from
someone else), so every value is checked for its JSON type first. Each `check_*` returns the
fields that passed and one problem per field that did not; the report drops those fields, lists
the problems as damage, and builds everything else. Run ids name folders and files, so one that
is not a name ganbench writes is never joined to a path.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEVERITIES = ("info", "warning", "critical")  # in increasing order
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # the characters of a run id (`RunSpec.run_id`)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LARGEST_INT = 2**53  # beyond this a step or count is not a number a run wrote
SHOWN_PROBLEMS = 3  # problems spelled out per damaged file; the rest are counted


@dataclass(frozen=True)
class Damage:
    """One file the report could not use, wholly or in part, and why (one line)."""

    run_id: str | None  # None: the suite's own suite.json
    file: str  # relative to the run folder; "" for the folder itself
    reason: str

    @property
    def where(self) -> str:
        if self.run_id is None:
            return self.file
        return f"runs/{self.run_id}" + (f"/{self.file}" if self.file else "")


def summarize(problems: list[str]) -> str:
    """One line from a file's problems: the first few, then how many more."""
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def json_kind(value: Any) -> str:
    """A value's JSON type, as a reader of the file would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def wrong(key: str, value: Any, expected: str) -> str:
    return f'"{key}" is {json_kind(value)}, expected {expected}'


def is_number(value: Any) -> bool:
    """A finite JSON number (not a boolean, not NaN or Infinity, which ganbench never writes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_count(value: Any) -> bool:
    """A step, seed or count: a whole number of a size a run can reach."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < LARGEST_INT


def run_id_problem(run_id: Any) -> str | None:
    """Why `run_id` cannot name a folder under runs/, or None when it can."""
    if not isinstance(run_id, str):
        return f"a run id in suite.json is {json_kind(run_id)}, expected a string"
    if not SAFE_NAME.fullmatch(run_id) or run_id in (".", ".."):
        shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
        return f"run id {shown!r} is not a run folder name (letters, digits, '.', '_', '-')"
    return None


def safe_name(text: str) -> str:
    """A file-name stem from any text: only SAFE_NAME characters, never "." or ".."."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:80]
    return name or "unnamed"


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links resolved, lies inside `folder` (also resolved)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL in the name
        return False


def check_suite(suite: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """suite.json: `runs` is known to be a list; the lists the report iterates must be lists."""
    clean, problems = dict(suite), []
    for key in ("configs", "seeds"):
        value = suite.get(key)
        if value is not None and not isinstance(value, list):
            problems.append(wrong(key, value, "a list"))
            clean[key] = []
    names = clean.get("configs") or []
    clean["configs"] = [c for c in names if isinstance(c, str)]
    if len(clean["configs"]) < len(names):
        problems.append(f'{len(names) - len(clean["configs"])} entry(s) of "configs" are not strings')
    if clean.get("baseline") is not None and not isinstance(clean["baseline"], str):
        problems.append(wrong("baseline", clean["baseline"], "a string"))
        clean["baseline"] = None
    if clean.get("primary") is not None and not isinstance(clean["primary"], str):
        problems.append(wrong("primary", clean["primary"], "a metric key (a string)"))
        clean["primary"] = None
    clean["plot"], found = string_list(suite.get("plot"), "plot")
    problems += found
    return clean, problems


def string_list(value: Any, key: str) -> tuple[list[str], list[str]]:
    """The strings of a list of keys (suite.json's "plot"), and a problem when it is anything else."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        return [], [wrong(key, value, "a list of keys")]
    keys = [k for k in value if isinstance(k, str)]
    return keys, [f'{len(value) - len(keys)} entry(s) of "{key}" are not strings'] if len(keys) < len(value) else []


def check_config(data: Any) -> tuple[dict[str, Any], list[str]]:
    """config.json: the run's config name and seed, its planned steps and data kind."""
    if not isinstance(data, dict):
        return {}, [f"holds {json_kind(data)}, not an object"]
    clean: dict[str, Any] = {}
    problems = []
    if isinstance(data.get("config"), str) and data["config"]:
        clean["config"] = data["config"]
    else:
        problems.append('no "config"' if "config" not in data else wrong("config", data["config"], "a name"))
    if is_count(data.get("seed")):
        clean["seed"] = data["seed"]
    else:
        problems.append('no "seed"' if "seed" not in data else wrong("seed", data["seed"], "an integer"))
    settings, kind = data.get("settings"), data.get("data")
    if isinstance(settings, dict):
        steps = settings.get("steps")
        if is_count(steps) and steps >= 0:
            clean["settings"] = {"steps": steps}
        elif steps is not None:
            problems.append(wrong("settings.steps", steps, "an integer"))
    elif settings is not None:
        problems.append(wrong("settings", settings, "an object"))
    if isinstance(kind, dict):
        if isinstance(kind.get("kind"), str):
            clean["data"] = {"kind": kind["kind"]}
        elif kind.get("kind") is not None:
            problems.append(wrong("data.kind", kind["kind"], "a string"))
    elif kind is not None:
        problems.append(wrong("data", kind, "an object"))
    plot = data.get("plot")  # train-record keys the run's plugins asked the report to draw -> who asked
    if isinstance(plot, dict):
        clean["plot"] = {k: v for k, v in plot.items() if isinstance(v, str)}
        if len(clean["plot"]) < len(plot):
            problems.append(f'{len(plot) - len(clean["plot"])} entry(s) of "plot" are not strings')
    elif plot is not None:
        problems.append(wrong("plot", plot, "an object"))
    return clean, problems


def _optional(data: dict[str, Any], clean: dict[str, Any], problems: list[str], key: str, ok: Any,
              expected: str) -> None:
    value = data.get(key)
    if value is None:
        return
    if ok(value):
        clean[key] = value
    else:
        problems.append(wrong(key, value, expected))


def check_status(data: Any) -> tuple[dict[str, Any], list[str]]:
    """status.json: a status string, text and timing fields, the metric and incident summaries."""
    if not isinstance(data, dict):
        return {}, [f"holds {json_kind(data)}, not an object"]
    clean: dict[str, Any] = {}
    problems: list[str] = []
    if isinstance(data.get("status"), str) and data["status"]:
        clean["status"] = data["status"]
    else:
        problems.append('no "status"' if "status" not in data else wrong("status", data["status"], "a status name"))
    for key in ("reason", "started", "finished"):
        _optional(data, clean, problems, key, lambda v: isinstance(v, str), "a string")
    _optional(data, clean, problems, "wall_s", is_number, "a number")
    _optional(data, clean, problems, "step", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "a step count")
    _optional(data, clean, problems, "metrics", lambda v: isinstance(v, dict), "an object")
    _optional(data, clean, problems, "incidents", lambda v: isinstance(v, dict), "an object")
    if "metrics" in clean:
        clean["metrics"] = _metric_summary(clean["metrics"], problems)
    if "incidents" in clean:
        clean["incidents"] = _incident_summary(clean["incidents"], problems)
    return clean, problems


def _metric_summary(summary: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    better, best = summary.get("better"), summary.get("best")
    if isinstance(better, dict):
        clean["better"] = {k: v for k, v in better.items() if v in ("min", "max")}
        if len(clean["better"]) < len(better):
            problems.append('"metrics.better" has directions other than "min" and "max"')
    elif better is not None:
        problems.append(wrong("metrics.better", better, "an object"))
    if isinstance(best, dict):
        clean["best"] = {k: v for k, v in best.items()
                         if isinstance(v, dict) and is_number(v.get("value")) and is_count(v.get("step"))}
        if len(clean["best"]) < len(best):
            problems.append('"metrics.best" has entries without a number "value" and an integer "step"')
    elif best is not None:
        problems.append(wrong("metrics.best", best, "an object"))
    return clean


def _incident_summary(summary: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    count, worst = summary.get("count"), summary.get("worst")
    if is_count(count) and count >= 0:
        clean["count"] = count
    elif count is not None:
        problems.append(wrong("incidents.count", count, "an integer"))
    if worst in SEVERITIES:
        clean["worst"] = worst
    elif worst is not None:
        problems.append(wrong("incidents.worst", worst, f"one of {', '.join(SEVERITIES)}")
                        if not isinstance(worst, str) else '"incidents.worst" is not a severity')
    return clean


def check_env(data: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(data, dict):
        return {}, [f"holds {json_kind(data)}, not an object"]
    return data, []


IDENTITY = ("run_id", "config", "seed")  # the columns the report adds to every record


def check_record(record: Any, run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """One metrics.jsonl record. None (skip the line) without an object, a kind or an integer step;
    otherwise the record without the values of the wrong type."""
    if not isinstance(record, dict):
        return None, [f"is {json_kind(record)}, not an object"]
    kind = record.get("kind")
    if not isinstance(kind, str):
        return None, ['no "kind"' if "kind" not in record else wrong("kind", kind, "a string")]
    if kind not in ("train", "eval"):  # a kind this report does not read
        return record, []
    step = record.get("step")
    if not (is_count(step) and step >= 0):
        return None, ['no "step"' if "step" not in record else wrong("step", step, "an integer")]
    clean, problems = {"kind": kind, "step": step}, []
    for key, value in record.items():
        if key in clean:
            continue
        if key in IDENTITY:  # the report's own columns: a record cannot rename its run
            problems.append(f'"{key}" is not a record field')
        elif key == "sample_grid":
            if isinstance(value, str) and not Path(value).is_absolute() and inside(run_dir / value, run_dir):
                clean[key] = value
            else:
                problems.append('"sample_grid" is not a path inside the run folder' if isinstance(value, str)
                                else wrong(key, value, "a path"))
        elif key == "provenance":
            if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
                clean[key] = value
            else:
                problems.append(wrong(key, value, "an object of objects") if not isinstance(value, dict)
                                else '"provenance" has entries that are not objects')
        elif isinstance(value, (str, bool)) or (isinstance(value, (int, float)) and not is_number(value)):
            problems.append(wrong(key, value, "a number") if not isinstance(value, (int, float))
                            else f'"{key}" is not a finite number')
        else:  # a number, null, or a nested record (the trainer's "nonfinite"), which the report skips
            clean[key] = value
    return clean, problems


INCIDENT_TEXT = ("severity", "detector", "policy", "message")


def check_incident(record: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """One incidents.jsonl entry: None (skip the line) without an object, an integer step and a kind."""
    if not isinstance(record, dict):
        return None, [f"is {json_kind(record)}, not an object"]
    step, kind = record.get("step"), record.get("kind")
    if not (is_count(step) and step >= 0):
        return None, ['no "step"' if "step" not in record else wrong("step", step, "an integer")]
    if not (isinstance(kind, str) and kind):
        return None, ['no "kind"' if "kind" not in record else wrong("kind", kind, "a string")]
    clean: dict[str, Any] = {"step": step, "kind": kind, "evidence": record.get("evidence")}
    problems = []
    for key in INCIDENT_TEXT:
        value = record.get(key)
        if value is None or (isinstance(value, str) and (key != "severity" or value in SEVERITIES)):
            clean[key] = value
        else:
            clean[key] = None
            problems.append(wrong(key, value, "a string") if not isinstance(value, str)
                            else f'"severity" is not one of {", ".join(SEVERITIES)}')
    return clean, problems


def png_problem(path: Path, run_dir: Path) -> str | None:
    """Why a sample grid cannot be shown: outside the run folder once links resolve, not a file, not a PNG."""
    if not inside(path, run_dir):
        return "leads outside the run folder (a link); not shown"
    try:
        if not path.is_file():
            return "is not a file; not shown"
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__}); not shown"
    return None if head == PNG_SIGNATURE else "is not a PNG; not shown"
