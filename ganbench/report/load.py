"""Read a suite's output folder (suite.json, runs/<run-id>/) into pandas. Files only, never live objects.

Everything may be missing or half-written: a suite still running, or interrupted, lists runs that
have no folder yet (status "missing") or no final status ("running"), and a metrics file may end in
a line that is being written (skipped, and said in `notes`). Anything of the wrong JSON type is
checked out by `damage.py`, skipped and listed in `damaged`; nothing is raised, except when the
folder is not a suite output folder at all (a `UsageError`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ganbench.errors import UsageError
from ganbench.report.damage import (SEVERITIES, Damage, check_config, check_env, check_incident, check_record,
                                    check_status, check_suite, png_problem, run_id_problem, summarize)

SUITE_FILE = "suite.json"
MISSING = "missing"  # listed in suite.json, no status.json yet
RUNNING = "running"
INTERRUPTED = "interrupted"  # stopped by a signal; a re-run finishes it
DAMAGED = "damaged"  # a status.json the report cannot read
UNFINISHED = (RUNNING, INTERRUPTED, MISSING)
# Statuses that end a run; failures are what the ranking's failure column counts.
FINISHED = ("completed", "stopped", "collapsed", "diverged", "failed")
FAILURES = ("failed", "diverged", "collapsed")
# The direction of the built-in metric keys, for runs whose status.json is not written yet.
KNOWN_BETTER = {"fid": "min", "kid_mean": "min", "class_fd": "min", "classes_covered": "max", "class_kl": "min",
                "modes_covered": "max", "mode_kl": "min", "digit_fd": "min", "high_quality_fraction": "max",
                "class_confidence": "max", "diversity_ratio": "max", "duplicate_rate": "min"}
# Eval-record keys that are not metric values.
EVAL_BOOKKEEPING = ("kind", "step", "images_seen", "sample_grid", "provenance")
RUN_ID = re.compile(r"^(?P<slug>.+)-s(?P<seed>\d+)-[0-9a-f]{10}$")
SAMPLE = re.compile(r"^step-(\d+)\.png$")


@dataclass(frozen=True)
class Check:
    """One run's final value against one declared convergence bound (`ganbench.Convergence`)."""

    key: str  # the value that tells converged samples apart: high_quality_fraction, class_confidence, digit_fd
    limit: float  # the bound: a floor, or a ceiling when `ceiling`
    guards: tuple[str, ...]  # the values it guards
    why: str
    value: float | None  # the run's final value of `key`; None when it has none
    ceiling: bool = False  # True: converged at most `limit` (a distance); False: at least `limit`

    @property
    def ok(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.ceiling else self.value >= self.limit


def convergence_checks(provenance: dict[str, dict[str, Any]], row: dict[str, Any]) -> list[Check]:
    """The convergence bounds the final values' metrics declared, each with the run's final value."""
    checks: dict[tuple[str, float, bool], Check] = {}
    for prov in provenance.values():
        declared = prov.get("convergence")
        if not isinstance(declared, dict) or not isinstance(declared.get("key"), str):
            continue
        ceiling = declared.get("at_least") is None
        limit = declared.get("at_most" if ceiling else "at_least")
        if not isinstance(limit, (int, float)) or isinstance(limit, bool):
            continue
        guards = tuple(g for g in declared.get("guards") or [] if isinstance(g, str))
        value = row.get(f"final_{declared['key']}")
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        checks.setdefault((declared["key"], float(limit), ceiling), Check(
            declared["key"], float(limit), guards, str(declared.get("why") or ""), value, ceiling))
    return list(checks.values())


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
    notes: list[str] = field(default_factory=list)  # what is incomplete, but not wrong (a line being written)
    damaged: list[Damage] = field(default_factory=list)  # files, or parts of files, of the wrong type: skipped
    # run id -> what its metrics declared "converged" to mean, each with the run's final value
    convergence: dict[str, list[Check]] = field(default_factory=dict)
    # train-record keys asked for in the diagnostics figure (suite.json's "plot", then each run's
    # config.json "plot", which its plugins declared), each with who asked
    plot: dict[str, str] = field(default_factory=dict)

    @property
    def primary(self) -> str | None:
        """The metric key the suite chose to rank by (suite.json's "primary"), or None."""
        return self.suite.get("primary") or None

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


def read_json_file(path: Path) -> tuple[Any, str | None]:
    """(value, None), (None, None) when the file is absent, or (None, why it cannot be read)."""
    if not path.exists():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, "is not valid JSON; ignored"
    except OSError as exc:
        return None, f"cannot be read ({type(exc).__name__}); ignored"


def read_lines(path: Path, check: Callable[[Any], tuple[dict[str, Any] | None, list[str]]],
               ) -> tuple[list[dict[str, Any]], list[str], int | None]:
    """JSON lines, each checked: (records, problems, the number of a cut-off last line or None).

    A last line without its newline that does not parse is a record still being written, or cut
    off when the run was killed (`append_jsonl` writes a line and its newline at once): it is
    skipped, and only noted. Any other line that does not parse, or does not check, is damage."""
    if not path.exists():
        return [], [], None
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return [], [f"cannot be read ({type(exc).__name__})"], None
    lines = text.splitlines()
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    records, problems, cut = [], [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == last and not text.endswith(("\n", "\r")):
                cut = number
            else:
                problems.append(f"line {number} is not JSON; skipped")
            continue
        clean, found = check(record)
        problems += [f"line {number}: {p}" + ("; line skipped" if clean is None else "") for p in found]
        if clean is not None:
            records.append(clean)
    return records, problems, cut


@dataclass
class _Reader:
    """Reads one run folder's files through their checks, collecting damage and notes."""

    run_id: str | None
    run_dir: Path
    damaged: list[Damage]
    notes: list[str]

    def json(self, name: str, check: Callable[[Any], tuple[dict[str, Any], list[str]]]) -> dict[str, Any]:
        value, problem = read_json_file(self.run_dir / name)
        if problem:
            self.damaged.append(Damage(self.run_id, name, problem))
            return {}
        if value is None and not (self.run_dir / name).exists():
            return {}
        clean, problems = check(value)
        if problems:
            whole = not isinstance(value, dict)
            self.damaged.append(Damage(self.run_id, name, summarize(problems) + ("; ignored" if whole else
                                                                                  "; those values ignored")))
        return clean

    def lines(self, name: str, check: Callable[[Any], tuple[dict[str, Any] | None, list[str]]]) -> list[dict[str, Any]]:
        records, problems, cut = read_lines(self.run_dir / name, check)
        if problems:
            self.damaged.append(Damage(self.run_id, name, summarize(problems)))
        if cut is not None:
            self.notes.append(f"runs/{self.run_id}/{name}: line {cut} is not complete JSON (still being written, or "
                              "cut off when the run was stopped); skipped")
        return records

    def samples(self) -> list[tuple[int, Path]]:
        """The run's sample grids (samples/step-N.png), each a PNG file inside the run folder."""
        found: dict[int, Path] = {}
        problems = []
        for path in sorted((self.run_dir / "samples").glob("step-*.png")):
            match = SAMPLE.match(path.name)
            if not match:
                continue
            problem = png_problem(path, self.run_dir)
            if problem:
                problems.append(f"{path.name} {problem}")
            else:
                found.setdefault(int(match[1]), path.resolve())
        if problems:
            self.damaged.append(Damage(self.run_id, "samples", summarize(problems)))
        return sorted(found.items())


def load(root: Path | str) -> SuiteResults:
    """Read `root`, a folder `ganbench run` wrote. Raises UsageError when it is not one."""
    root = Path(root)
    expected = f"a suite output folder, as `ganbench run` writes: {SUITE_FILE} beside runs/<run-id>/"
    if not root.exists():
        raise UsageError(f"{root}: no such folder; expected {expected}")
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder; expected {expected}")
    notes: list[str] = []
    damaged: list[Damage] = []
    suite, _ = read_json_file(root / SUITE_FILE)
    if not isinstance(suite, dict) or not isinstance(suite.get("runs"), list):
        what = "has no" if not (root / SUITE_FILE).exists() else "has an unreadable"
        raise UsageError(f"{root}: {what} {SUITE_FILE}; expected {expected}")
    suite, problems = check_suite(suite)

    run_ids: list[str] = []
    for run_id in suite["runs"]:
        problem = run_id_problem(run_id)
        if problem:
            problems.append(problem + "; skipped")
        elif run_id not in run_ids:
            run_ids.append(run_id)
    if problems:
        damaged.append(Damage(None, SUITE_FILE, summarize(problems)))
    runs_dir = root / "runs"
    on_disk = sorted(p.name for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.is_dir() else []
    rows, train, evals, incidents = [], [], [], []
    better: dict[str, str] = {}
    provenance: dict[str, dict[str, dict[str, Any]]] = {}
    envs: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[tuple[int, Path]]] = {}
    convergence: dict[str, list[Check]] = {}
    plot = {key: "the suite's plot" for key in suite["plot"]}
    slugs = {slug(c): c for c in suite.get("configs") or []}

    for run_id in run_ids:
        run_dir = runs_dir / run_id
        if run_dir.exists() and not run_dir.is_dir():
            damaged.append(Damage(run_id, "", "is not a folder; skipped"))
        read = _Reader(run_id, run_dir, damaged, notes)
        config = read.json("config.json", check_config)
        status = read.json("status.json", check_status)
        envs[run_id] = read.json("env.json", check_env)
        for key, source in (config.get("plot") or {}).items():
            plot.setdefault(key, source)
        name, seed = config.get("config"), config.get("seed")
        if name is None or seed is None:  # not started (or config.json damaged): the run id names both
            match = RUN_ID.match(run_id)
            name = name or (slugs.get(match["slug"], match["slug"]) if match else run_id)
            seed = seed if seed is not None else (int(match["seed"]) if match else None)
        ident = {"run_id": run_id, "config": name, "seed": seed}
        records = read.lines("metrics.jsonl", lambda r, d=run_dir: check_record(r, d))
        run_train = [{**ident, **r} for r in records if r.get("kind") == "train"]
        run_evals = [r for r in records if r.get("kind") == "eval"]
        train += run_train
        evals += [{**ident, **{k: v for k, v in r.items() if k != "provenance"}} for r in run_evals]
        run_incidents = [{**ident, **r} for r in read.lines("incidents.jsonl", check_incident)]
        incidents += run_incidents
        summary = status.get("metrics") or {}
        for key, direction in (summary.get("better") or {}).items():
            better.setdefault(key, direction)
        for key, direction in recorded_better(run_evals).items():  # a run still training
            better.setdefault(key, direction)
        provenance[run_id] = final_provenance(run_evals)
        samples[run_id] = read.samples()
        if "status" in status:
            state = status["status"]
        elif (run_dir / "status.json").exists():
            state = DAMAGED
        else:
            state = RUNNING if (run_dir / "config.json").exists() else MISSING
        row = run_row(ident, state, config, status, run_train, run_evals, run_incidents, summary)
        convergence[run_id] = convergence_checks(provenance[run_id], row)
        if convergence[run_id]:
            row["converged"] = all(c.ok for c in convergence[run_id])
        rows.append(row)

    for key in {k for r in evals for k in r} - set(EVAL_BOOKKEEPING) - set(better):
        if key in KNOWN_BETTER:
            better[key] = KNOWN_BETTER[key]
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys([*ROW_COLUMNS, *(k for r in rows for k in r)])))
    return SuiteResults(
        root=root, suite=suite, runs=frame,
        train=_frame(train), evals=_frame(evals), incidents=_frame(incidents, INCIDENT_COLUMNS),
        better=better, provenance=provenance, envs=envs, samples=samples,
        unlisted=[r for r in on_disk if r not in run_ids], notes=notes, damaged=damaged, convergence=convergence,
        plot=plot,
    )


ROW_COLUMNS = ["run_id", "config", "seed", "status", "data_kind", "reason", "started", "finished", "wall_s", "steps",
               "last_step", "sec_per_step", "incidents", "worst_incident", "converged"]
INCIDENT_COLUMNS = ["run_id", "config", "seed", "step", "kind", "severity", "detector", "policy", "message", "evidence"]


def _frame(records: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    for column in columns or ["run_id", "config", "seed", "step"]:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object)
    return frame


def recorded_better(evals: list[dict[str, Any]]) -> dict[str, str]:
    """The directions each metric recorded in its provenance ({key: "min" | "max"})."""
    found: dict[str, str] = {}
    for record in evals:
        for prov in (record.get("provenance") or {}).values():
            declared = prov.get("better") if isinstance(prov, dict) else None
            if isinstance(declared, dict):
                found.update({k: v for k, v in declared.items() if isinstance(k, str) and v in ("min", "max")})
    return found


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


def run_row(ident: dict[str, Any], state: str, config: dict[str, Any], status: dict[str, Any],
            train: list[dict[str, Any]], evals: list[dict[str, Any]], incidents: list[dict[str, Any]],
            summary: dict[str, Any]) -> dict[str, Any]:
    """One run's line of results.csv: identity, status, timing, incidents, final and best metrics."""
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
        # status.json's step counts the steps done; a run that failed between log records did more than logged
        "last_step": max([*(r.get("step", 0) for r in train), *([status["step"]] if "step" in status else [])],
                         default=None),
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
