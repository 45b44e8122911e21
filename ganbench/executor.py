"""Run a suite's runs, one process each, with a live progress line per active run.

Each run gets its own process (forkserver on Linux: torch is imported once in the server, so a
run starts in milliseconds), so a crash in one run cannot take the suite down. The child gets the
run's resolved settings as plain JSON (what config.json holds) and the suite's plugin files, and
rebuilds its spec from them: nothing unpicklable crosses the process boundary, and editing the
suite while it runs changes nothing already planned.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ganbench.rundir import read_json, read_status, write_json
from ganbench.suite import RunSpec, Suite


@dataclass
class Outcome:
    spec: RunSpec
    run_dir: Path
    status: str
    reason: str | None
    skipped: bool = False


def _child(run_id: str, resolved: dict[str, Any], plugin_files: list[str], run_dir: str, device: str,
           messages: Any) -> None:
    """One run, in its own process: rebuild the spec from its resolved settings and train."""
    from ganbench.registry import Registry
    from ganbench.suite import spec_from_resolved
    from ganbench.trainer import execute

    try:
        spec = spec_from_resolved(resolved, Registry([Path(f) for f in plugin_files]))
        if spec.run_id != run_id:  # a plugin's parameters changed on disk after the suite was planned
            raise RuntimeError(f"the run's settings changed between planning ({run_id}) and start ({spec.run_id}); "
                               "was plugin code edited while the suite ran? Run the suite again")
    except Exception:  # record why the run could not even start, then let the process fail
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "error.txt").write_text(traceback.format_exc())
        raise
    execute(spec, Path(run_dir), torch.device(device), progress=lambda record: messages.put((spec.run_id, record)))


def _context() -> mp.context.BaseContext:
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "ganbench.trainer"])
        return ctx
    return mp.get_context("spawn")


def run_suite(suite: Suite, specs: list[RunSpec], out: Path, device: torch.device, jobs: int = 1,
              console: Console | None = None) -> list[Outcome]:
    """Run every spec not already completed under `out`/runs. jobs=0 runs in this process."""
    console = console or Console(stderr=True)
    outcomes: list[Outcome] = []
    todo: list[RunSpec] = []
    for spec in specs:
        run_dir = out / "runs" / spec.run_id
        status = read_status(run_dir)
        if status and status.get("status") == "completed":
            outcomes.append(Outcome(spec, run_dir, "completed", None, skipped=True))
        else:
            todo.append(spec)
    if outcomes:
        console.print(f"[dim]{len(outcomes)} run(s) already completed in {out / 'runs'}; skipping them[/dim]")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[losses]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {}

        def start_task(spec: RunSpec) -> None:
            tasks[spec.run_id] = progress.add_task(f"{spec.config} seed {spec.seed}", total=spec.settings.steps, losses="")

        def on_record(run_id: str, record: dict[str, Any]) -> None:
            losses = f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}" if record.get("d_loss") is not None else "non-finite"
            progress.update(tasks[run_id], completed=record["step"], losses=losses)

        def finished(outcome: Outcome) -> None:
            outcomes.append(outcome)
            if not console.is_terminal:  # no live bars in a log: one line per finished run instead
                status = read_json(outcome.run_dir / "status.json") or {}
                console.print(f"{outcome.spec.config} seed {outcome.spec.seed}: {outcome.status}"
                              f"{f' ({outcome.reason})' if outcome.reason else ''} in {status.get('wall_s', '?')} s")

        if jobs == 0:
            from ganbench.trainer import execute

            for spec in todo:
                start_task(spec)
                run_dir = out / "runs" / spec.run_id
                execute(spec, run_dir, device, progress=lambda r, i=spec.run_id: on_record(i, r))
                finished(_outcome(spec, run_dir))
        else:
            ctx = _context()
            messages = ctx.Queue()
            plugin_files = [str((suite.path.parent / f).resolve()) for f in suite.header.plugins]
            pending, active = list(todo), {}
            while pending or active:
                while pending and len(active) < jobs:
                    spec = pending.pop(0)
                    run_dir = out / "runs" / spec.run_id
                    proc = ctx.Process(target=_child, args=(spec.run_id, spec.resolved(), plugin_files, str(run_dir),
                                                             str(device), messages))
                    proc.start()
                    active[spec.run_id] = (proc, spec, run_dir)
                    start_task(spec)
                try:
                    run_id, record = messages.get(timeout=0.2)
                    on_record(run_id, record)
                except queue_mod.Empty:
                    pass
                for run_id, (proc, spec, run_dir) in list(active.items()):
                    if proc.exitcode is not None:
                        _drain(messages, on_record)
                        finished(_outcome(spec, run_dir, proc.exitcode))
                        del active[run_id]
    order = {s.run_id: i for i, s in enumerate(specs)}
    outcomes.sort(key=lambda o: order[o.spec.run_id])
    return outcomes


def _drain(messages: Any, on_record: Any) -> None:
    while True:
        try:
            on_record(*messages.get_nowait())
        except queue_mod.Empty:
            return


def _outcome(spec: RunSpec, run_dir: Path, exitcode: int | None = 0) -> Outcome:
    status = read_status(run_dir) or {}
    if status.get("status") in (None, "running"):
        # The process died without recording an end (killed, segfault): record it for it.
        reason = f"the run's process exited with code {exitcode} before recording a status"
        if (run_dir / "error.txt").exists():
            reason += f" ({(run_dir / 'error.txt').read_text().strip().splitlines()[-1]})"
        write_json(run_dir / "status.json", {**status, "status": "failed", "reason": reason})
        return Outcome(spec, run_dir, "failed", reason)
    return Outcome(spec, run_dir, status["status"], status.get("reason"))


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="runs")
    for col in ("config", "seed", "status", "steps", "final D loss", "final G loss", "incidents", "wall s", "run dir"):
        table.add_column(col)
    colours = {"completed": "green", "failed": "red", "diverged": "magenta", "collapsed": "magenta",
               "stopped": "yellow", "running": "yellow"}
    for o in outcomes:
        records = [r for r in _train_records(o.run_dir)]
        last = records[-1] if records else {}
        status = read_json(o.run_dir / "status.json") or {}
        label = f"[{colours.get(o.status, 'white')}]{o.status}[/]" + (" (skipped)" if o.skipped else "")
        if o.reason:
            label += f"\n[dim]{o.reason[:120]}[/dim]"
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        incidents = status.get("incidents") or {}
        kinds = ", ".join(f"{k} {n}" for k, n in incidents.get("by_kind", {}).items()) or "-"
        table.add_row(o.spec.config, str(o.spec.seed), label, str(last.get("step", 0)), fmt(last.get("d_loss")),
                      fmt(last.get("g_loss")), kinds, str(status.get("wall_s", "-")), str(o.run_dir))
    return table


def _train_records(run_dir: Path) -> list[dict[str, Any]]:
    from ganbench.rundir import read_jsonl

    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "train"]
