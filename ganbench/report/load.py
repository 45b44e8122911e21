"""Read a suite's output folder (suite.json, runs/<run-id>/) into pandas. Files only, never live objects.

Everything may be missing or half-written: a suite still running, or interrupted, lists runs that
have no folder yet (status "missing") or no final status ("running"), and a metrics file may end in
a line that is being written. What cannot be read is reported in `notes`, never raised, except
when the folder is not a suite output folder at all (a `UsageError`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ganbench.errors import UsageError

SUITE_FILE = "suite.json"
MISSING = "missing"  # listed in suite.json, no status.json yet
RUNNING = "running"
# Statuses that end a run; failures are what the ranking's failure column counts.
FINISHED = ("completed", "stopped", "collapsed", "diverged", "failed")
FAILURES = ("failed", "diverged", "collapsed")
SEVERITIES = ("info", "warning", "critical")  # in increasing order
# The direction of the built-in metric keys, for runs whose status.json is not written yet.
KNOWN_BETTER = {"fid": "min", "kid_mean": "min", "class_fd": "min", "classes_covered": "max", "class_kl": "min",
                "modes_covered": "max", "mode_kl": "min", "high_quality_fraction": "max",
                "diversity_ratio": "max", "duplicate_rate": "min"}
# Eval-record keys that are not metric values.
EVAL_BOOKKEEPING = ("kind", "step", "images_seen", "sample_grid", "provenance")
RUN_ID = re.compile(r"^(?P<slug>.+)-s(?P<seed>\d+)-[0-9a-f]{10}$")
SAMPLE = re.compile(r"^step-(\d+)\.png$")


@dataclass
class SuiteResults:
    """A suite's output folder, read."""

    root: Path
    suite: dict[str, Any]
    runs: pd.DataFrame  # one row per run that suite.json lists, in its order
    train: pd.DataFrame  # every train record, with run_id, config and seed
    evals: pd.DataFrame  # every eval record (without provenance), with run_id, config and seed
    incidents: pd.DataFrame  # every incident, with run_id, config and seed
    better: dict[str, str]  # metric key -> "min" or "max"
    provenance: dict[str, dict[str, dict[str, Any]]]  # run id -> metric key -> provenance of its final value
    envs: dict[str, dict[str, Any]]  # run id -> env.json
    samples: dict[str, list[tuple[int, Path]]]  # run id -> (step, sample PNG), in step order
    unlisted: list[str] = field(default_factory=list)  # run folders that suite.json does not list
    notes: list[str] = field(default_factory=list)  # what could not be read

    @property
    def configs(self) -> list[str]:
        """Configurations in the suite's order (suite.json's, then any others the runs name)."""
        names = list(self.suite.get("configs") or [])
        return names + [c for c in dict.fromkeys(self.runs["config"]) if c not in names]

    @property
    def baseline(self) -> str | None:
        baseline = self.suite.get("baseline")
        configs = self.configs
        return baseline if baseline in configs else (configs[0] if configs else None)

    def metric_keys(self) -> list[str]:
        """Metric keys with at least one value in an eval record, in first-seen order."""
        if self.evals.empty:
            return []
        keys = [c for c in self.evals.columns if c not in (*EVAL_BOOKKEEPING, "run_id", "config", "seed")]
        return [k for k in keys if pd.to_numeric(self.evals[k], errors="coerce").notna().any()]


def slug(name: str) -> str:
    """The config part of a run id (`RunSpec.run_id`'s rule)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "config"


def read_json_file(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        notes.append(f"{path}: unreadable JSON ({exc}); ignored")
        return None


def read_records(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """JSON lines; a line that does not parse (being written, or cut by a crash) is skipped and noted."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            notes.append(f"{path}: line {number} is not complete JSON; skipped")
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def load(root: Path | str) -> SuiteResults:
    """Read `root`, a folder `ganbench run` wrote. Raises UsageError when it is not one."""
    root = Path(root)
    expected = f"a suite output folder, as `ganbench run` writes: {SUITE_FILE} beside runs/<run-id>/"
    if not root.exists():
        raise UsageError(f"{root}: no such folder; expected {expected}")
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder; expected {expected}")
    notes: list[str] = []
    suite = read_json_file(root / SUITE_FILE, notes)
    if not isinstance(suite, dict) or not isinstance(suite.get("runs"), list):
        what = "has no" if not (root / SUITE_FILE).exists() else "has an unreadable"
        raise UsageError(f"{root}: {what} {SUITE_FILE}; expected {expected}")

    run_ids = [str(r) for r in suite["runs"]]
    on_disk = sorted(p.name for p in (root / "runs").glob("*") if p.is_dir()) if (root / "runs").is_dir() else []
    rows, train, evals, incidents = [], [], [], []
    better: dict[str, str] = {}
    provenance: dict[str, dict[str, dict[str, Any]]] = {}
    envs: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[tuple[int, Path]]] = {}
    slugs = {slug(c): c for c in suite.get("configs") or []}

    for run_id in run_ids:
        run_dir = root / "runs" / run_id
        config = read_json_file(run_dir / "config.json", notes) or {}
        status = read_json_file(run_dir / "status.json", notes) or {}
        envs[run_id] = read_json_file(run_dir / "env.json", notes) or {}
        name, seed = config.get("config"), config.get("seed")
        if name is None or seed is None:  # not started: the run id still names its config and seed
            match = RUN_ID.match(run_id)
            name = name or (slugs.get(match["slug"], match["slug"]) if match else run_id)
            seed = seed if seed is not None else (int(match["seed"]) if match else None)
        ident = {"run_id": run_id, "config": name, "seed": seed}
        records = read_records(run_dir / "metrics.jsonl", notes)
        run_train = [{**ident, **r} for r in records if r.get("kind") == "train"]
        run_evals = [r for r in records if r.get("kind") == "eval"]
        train += run_train
        evals += [{**ident, **{k: v for k, v in r.items() if k != "provenance"}} for r in run_evals]
        run_incidents = [{**ident, **r} for r in read_records(run_dir / "incidents.jsonl", notes)]
        incidents += run_incidents
        summary = status.get("metrics") or {}
        for key, direction in (summary.get("better") or {}).items():
            better.setdefault(key, direction)
        provenance[run_id] = final_provenance(run_evals)
        samples[run_id] = sample_pngs(run_dir)
        rows.append(run_row(ident, config, status, run_train, run_evals, run_incidents, summary))

    for key in {k for r in evals for k in r} - set(EVAL_BOOKKEEPING) - set(better):
        if key in KNOWN_BETTER:
            better[key] = KNOWN_BETTER[key]
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(k for r in rows for k in r)) or ["run_id", "config", "seed"])
    return SuiteResults(
        root=root, suite=suite, runs=frame,
        train=_frame(train), evals=_frame(evals), incidents=_frame(incidents, INCIDENT_COLUMNS),
        better=better, provenance=provenance, envs=envs, samples=samples,
        unlisted=[r for r in on_disk if r not in run_ids], notes=notes,
    )


INCIDENT_COLUMNS = ["run_id", "config", "seed", "step", "kind", "severity", "detector", "policy", "message", "evidence"]


def _frame(records: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    for column in columns or ["run_id", "config", "seed", "step"]:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object)
    return frame


def final_provenance(evals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """metric key -> the provenance of its last value. The record's provenance is keyed by metric
    plugin; a key belongs to the plugin present in every record that holds the key."""
    owners: dict[str, set[str]] = {}
    last: dict[str, dict[str, Any]] = {}
    for record in evals:
        plugins = record.get("provenance") or {}
        if not isinstance(plugins, dict):
            continue
        for key, value in record.items():
            if key in EVAL_BOOKKEEPING or not isinstance(value, (int, float)):
                continue
            owners[key] = owners.get(key, set(plugins)) & set(plugins)
            last[key] = plugins
    result = {}
    for key, plugins in last.items():
        owner = owners.get(key, set())
        if len(owner) == 1:
            result[key] = dict(plugins[next(iter(owner))])
        else:  # cannot tell which plugin measured it: compare everything the record says
            result[key] = {f"{p}.{k}": v for p, prov in sorted(plugins.items()) for k, v in prov.items()}
    return result


def sample_pngs(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (run_dir / "samples").glob("step-*.png"):
        match = SAMPLE.match(path.name)
        if match:
            found.append((int(match[1]), path))
    return sorted(found)


def run_row(ident: dict[str, Any], config: dict[str, Any], status: dict[str, Any], train: list[dict[str, Any]],
            evals: list[dict[str, Any]], incidents: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """One run's line of results.csv: identity, status, timing, incidents, final and best metrics."""
    state = status.get("status") or (RUNNING if config else MISSING)
    settings = config.get("settings") or {}
    # The first interval holds warm-up, and an interval right after an eval point holds the evaluation.
    eval_steps = {r.get("step") for r in evals}
    timed = [r for prev, r in zip(train, train[1:]) if prev.get("step") not in eval_steps] or train
    speeds = [r["sec_per_step"] for r in timed if isinstance(r.get("sec_per_step"), (int, float))]
    recorded = status.get("incidents") or {}
    worst = recorded.get("worst") or max((i.get("severity") for i in incidents if i.get("severity") in SEVERITIES),
                                         key=SEVERITIES.index, default=None)
    row: dict[str, Any] = {
        **ident,
        "status": state,
        "data_kind": (config.get("data") or {}).get("kind"),
        "reason": status.get("reason"),
        "started": status.get("started"),
        "finished": status.get("finished"),
        "wall_s": status.get("wall_s"),
        "steps": settings.get("steps"),
        "last_step": max((r.get("step", 0) for r in train), default=None),
        "sec_per_step": float(np.median(speeds)) if speeds else None,
        "incidents": int(recorded.get("count", len(incidents))),
        "worst_incident": worst,
    }
    best_recorded = summary.get("best") or {}
    keys = dict.fromkeys(k for r in evals for k, v in r.items()
                         if k not in EVAL_BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool))
    direction = {**KNOWN_BETTER, **(summary.get("better") or {})}
    for key in keys:
        points = [(r["step"], r[key]) for r in evals if isinstance(r.get(key), (int, float))]
        row[f"final_{key}"], row[f"final_{key}_step"] = points[-1][1], points[-1][0]
        if key in best_recorded:
            row[f"best_{key}"], row[f"best_{key}_step"] = best_recorded[key]["value"], best_recorded[key]["step"]
        elif key in direction:
            step, value = (min if direction[key] == "min" else max)(points, key=lambda p: p[1])
            row[f"best_{key}"], row[f"best_{key}_step"] = value, step
    return row
