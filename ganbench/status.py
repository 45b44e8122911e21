"""`ganbench status OUT`: which runs of a suite output folder are queued, running and done, read
from the run folders alone (no scheduler is asked), so it works the same for runs trained here,
on Ray workers or in SLURM jobs, detached or not.

A run's state comes from its status.json (written by the run) and executor/submitted.json
(written when an executor submitted it): submitted with no status yet is `queued`; `running` says
how long ago its metrics.jsonl last grew, since a process killed outright cannot record its end.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ganbench.errors import UsageError
from ganbench.executors import EXECUTOR_DIR, SUBMITTED, WORKER
from ganbench.rundir import read_json, read_status

DONE = ("completed", "diverged", "collapsed", "stopped")
ORDER = ("queued", "running", "interrupted", "failed", *DONE, "not started")


def run_state(run_dir: Path, now: float | None = None) -> dict[str, Any]:
    """One run's state, from its folder: {state, step, steps, reason, job, host, attempt, quiet_s}."""
    now = time.time() if now is None else now
    status = read_status(run_dir)
    status = status if isinstance(status, dict) else {}
    submitted = read_json(run_dir / EXECUTOR_DIR / SUBMITTED)
    submitted = submitted if isinstance(submitted, dict) else {}
    worker = read_json(run_dir / EXECUTOR_DIR / WORKER)
    worker = worker if isinstance(worker, dict) else {}
    state = status.get("status")
    if state is None:
        state = "queued" if submitted else "not started"
    elif state == "interrupted" and submitted and worker.get("started", 0) < submitted.get("submitted", 0):
        state = "queued"  # interrupted earlier, submitted again since: waiting for its job to start
    quiet = None
    if state == "running":
        latest = max((p.stat().st_mtime for p in (run_dir / "metrics.jsonl", run_dir / "status.json") if p.exists()),
                     default=None)
        quiet = round(now - latest) if latest is not None else None
    steps = status.get("steps")
    if steps is None:
        config = read_json(run_dir / "config.json")
        steps = config.get("settings", {}).get("steps") if isinstance(config, dict) else None
    return {"run": run_dir.name, "state": state, "step": status.get("step", 0), "steps": steps,
            "reason": status.get("reason"), "executor": submitted.get("executor"), "job": submitted.get("job_id"),
            "host": worker.get("host"), "attempt": worker.get("attempt"), "quiet_s": quiet}


def suite_runs(out: Path) -> list[Path]:
    """The run folders suite.json lists (in suite order), else every folder under runs/; then a
    search's trial runs (under search/runs/), which suite.json names but does not list."""
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder; give the output folder of a `ganbench run` (it holds suite.json)")
    listed = read_json(out / "suite.json")
    runs = listed.get("runs") if isinstance(listed, dict) else None
    if isinstance(runs, list) and runs:
        found = [out / "runs" / str(r) for r in runs]
    else:
        found = sorted(p for p in (out / "runs").glob("*") if p.is_dir()) if (out / "runs").is_dir() else []
    search = listed.get("search") if isinstance(listed, dict) else None
    trials = out / str(search.get("trial_runs", "")) if isinstance(search, dict) and search.get("trial_runs") else None
    if trials is not None and trials.is_dir():
        found += sorted(p for p in trials.glob("*") if p.is_dir())
    if not found:
        what = "suite.json lists no runs yet and there are no run folders" if isinstance(listed, dict) else \
            "no suite.json and no runs/ here"
        raise UsageError(f"{out}: {what}; give the output folder of a `ganbench run`")
    return found


def show_status(out: Path, as_json: bool = False) -> int:
    states = []
    for run_dir in suite_runs(out):
        state = run_state(run_dir)
        if run_dir.parent != out / "runs":  # a search's trial run: say so
            state["run"] = run_dir.relative_to(out).parent.parent.as_posix() + "/" + run_dir.name
        states.append(state)
    if as_json:
        for state in states:
            print(json.dumps(state))
        return 0
    console = Console()
    table = Table(title=f"runs in {escape(str(out))}")
    for col in ("run", "state", "step", "where", "note"):
        table.add_column(col)
    colours = {"completed": "green", "failed": "red", "running": "yellow", "queued": "cyan", "interrupted": "yellow"}
    for s in states:
        where = " ".join(x for x in (s["executor"] or "", f"job {s['job']}" if s["job"] else "",
                                      f"on {s['host']}" if s["host"] and s["state"] == "running" else "") if x)
        note = s["reason"] or ""
        if s["state"] == "running" and s["quiet_s"] is not None:
            note = f"last record {s['quiet_s']} s ago" + (f", attempt {s['attempt']}" if (s["attempt"] or 1) > 1 else "")
        colour = colours.get(s["state"], "magenta" if s["state"] in DONE else "white")
        table.add_row(escape(s["run"]), f"[{colour}]{s['state']}[/]", f"{s['step']}/{s['steps'] or '?'}",
                      escape(where), escape(note[:100]))
    console.print(table)
    counts = {state: sum(s["state"] == state for s in states) for state in ORDER}
    console.print(", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" (of {len(states)})")
    return 0
