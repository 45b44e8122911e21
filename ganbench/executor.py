"""Run a suite's runs through an executor plugin, with a live progress line per active run.

The executor (`local` processes by default, or Ray tasks, SLURM jobs: `ganbench.executors` holds
the API) decides where each run trains; this module decides which runs train (completed ones are
skipped, interrupted ones resume), shows their progress, and turns how each ended into an `Outcome`
for the summary table, the same for every executor.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ganbench import checkpoint, executors
from ganbench.console import stderr_console
from ganbench.interrupt import SIGNALS, StopRequest
from ganbench.rundir import read_json, read_status, write_json
from ganbench.suite import RunSpec, Suite

# A stopped suite waits this long for a run that still holds its trainer lock to record its own end.
STOPPING_WAIT_S = 30.0


@dataclass
class Outcome:
    spec: RunSpec
    run_dir: Path
    status: str
    reason: str | None
    skipped: bool = False


class SuiteStop:
    """SIGINT and SIGTERM in the suite's process. The first asks every run to stop (they checkpoint
    and end as `interrupted`) and starts no new run; a second SIGINT kills them at once."""

    def __init__(self) -> None:
        self.stop = StopRequest()  # also the stop of a run trained in this process (--jobs 0)
        self.children: dict[str, Any] = {}  # run id -> process
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SuiteStop:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.requested and signum == signal.SIGINT:
            for proc in self.children.values():
                proc.kill()
            print("ganbench: killed at once by a second Ctrl-C; each run resumes from its last checkpoint "
                  "when the same command is run again", file=sys.stderr, flush=True)
            os._exit(130)
        for proc in self.children.values():  # the signal may have reached this process alone
            if proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)
        self.stop.request(signum)  # raises Interrupted inside interruptible work of an in-process run


def stale_code(spec: RunSpec, run_dir: Path) -> list[str]:
    """How the code of the plugins a completed run used has changed since (env.json's `plugins`
    against now), one line each; [] when unchanged, or when the run predates the record."""
    env = read_json(run_dir / "env.json")
    recorded = env.get("plugins") if isinstance(env, dict) else None
    return checkpoint.code_changes(recorded, checkpoint.plugin_code(spec.settings))


def check_resumable(specs: list[RunSpec], out: Path, restart: bool, device: torch.device) -> dict[str, int]:
    """Refuse, before anything trains, a checkpoint that cannot continue its run (UsageError);
    return {run id: step} of the runs that will resume."""
    resuming = {}
    for spec in specs:
        plan = checkpoint.plan(spec, out / "runs" / spec.run_id, restart, device)
        if plan.state is not None:
            resuming[spec.run_id] = plan.state["meta"]["step"]
    return resuming


def run_suite(suite: Suite, specs: list[RunSpec], out: Path, device: torch.device, jobs: int = 1,
              console: Console | None = None, restart: bool = False,
              suite_stop: SuiteStop | None = None, threads: int | None = None,
              reuse_completed: bool = False, executor: str | None = None,
              executor_options: dict[str, Any] | None = None, detach: bool = False) -> list[Outcome]:
    """Run every spec not already completed under `out`/runs, resuming interrupted runs from their
    checkpoints (unless `restart`), through `executor` (default: the suite's [executor] table, else
    `local`) with `executor_options` over the table's. jobs=0 runs in this process (local only).
    Stops early, with every active run checkpointed, when `suite_stop` sees a signal. `threads`:
    torch CPU threads in each run process (`ganbench.threads.per_run`; None leaves torch's default).
    With `detach`, the runs are submitted and only the skipped runs' outcomes are returned."""
    console = console or stderr_console()
    suite_stop = suite_stop or SuiteStop()
    ids = [spec.run_id for spec in specs]
    if len(set(ids)) != len(ids):  # two processes would train one folder; the caller must merge them
        raise ValueError(f"run_suite: a run is listed twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    engine = executors.choose(suite, executor, executor_options, detach, jobs)
    outcomes: list[Outcome] = []
    todo: list[RunSpec] = []
    redone: list[str] = []
    for spec in specs:
        run_dir = out / "runs" / spec.run_id
        status = read_status(run_dir)
        changed = stale_code(spec, run_dir) if isinstance(status, dict) and status.get("status") == "completed" else None
        if changed == [] or (changed and reuse_completed):
            outcomes.append(Outcome(spec, run_dir, "completed", None, skipped=True))
            if changed:
                console.print(f"[yellow]{spec.config} seed {spec.seed}: kept (--reuse-completed), though its plugin "
                              f"code changed since it ran: {'; '.join(changed)}[/yellow]")
        else:
            todo.append(spec)
            if changed:
                redone.append(f"{spec.config} seed {spec.seed}: {'; '.join(changed)}")
    if outcomes:
        console.print(f"[dim]{len(outcomes)} run(s) already completed in {out / 'runs'}; skipping them[/dim]")
    if redone:
        console.print(f"[yellow]{len(redone)} completed run(s) trained again from step 0, because the code of a plugin "
                      "they use changed since they ran (--reuse-completed keeps them):[/yellow]")
        for line in redone:
            console.print(f"[yellow]  {line}[/yellow]")
    resuming = check_resumable(todo, out, restart, device)
    if resuming:
        steps = ", ".join(str(step) for step in resuming.values())
        console.print(f"[dim]{len(resuming)} run(s) resume from their checkpoints (at steps {steps})[/dim]")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[losses]}"), TimeRemainingColumn())
    specs_by_id = {spec.run_id: spec for spec in todo}
    with Progress(*columns, console=console, transient=False, disable=detach) as progress:
        tasks: dict[str, Any] = {}

        def started(job: executors.Job) -> None:
            if job.run_id not in tasks:  # a retried run keeps its bar
                tasks[job.run_id] = progress.add_task(job.label, total=job.steps, losses="",
                                                      completed=resuming.get(job.run_id, 0))

        def on_record(run_id: str, record: dict[str, Any]) -> None:
            if record.get("kind") == "error" or run_id not in tasks:
                return
            losses = f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}" if record.get("d_loss") is not None else "non-finite"
            progress.update(tasks[run_id], completed=record["step"], losses=losses)

        def finished(job: executors.Job, died: str | None = None, error: str | None = None) -> None:
            outcome = _outcome(specs_by_id[job.run_id], job.run_dir, died, error, suite_stop.stop.requested)
            outcomes.append(outcome)
            # No live bars in a log: one line per finished run instead. A failure gets its line
            # either way, since the summary table has no room for where to find its traceback.
            if not console.is_terminal or outcome.status == "failed":
                console.print(finished_line(outcome), highlight=False)
            if outcome.status == "failed" and jobs == 0 and engine.name == "local":
                _print_traceback(outcome)  # in this process is for debugging: show the whole traceback

        work = executors.Work(
            jobs=[executors.Job(s.run_id, f"{s.config} seed {s.seed}", s.resolved(), out / "runs" / s.run_id,
                                s.settings.steps, spec=s) for s in todo],
            out=out, request=executors.Request(str(device), threads), restart=restart,
            plugin_files=[str((suite.path.parent / f).resolve()) for f in suite.header.plugins],
            stop=suite_stop.stop, started=started, record=on_record, finished=finished, console=console,
            jobs_at_once=jobs, detach=detach, children=suite_stop.children, token=uuid.uuid4().hex[:12])
        if todo:
            engine.run(work)
    order = {s.run_id: i for i, s in enumerate(specs)}
    outcomes.sort(key=lambda o: order[o.spec.run_id])
    return outcomes


def _outcome(spec: RunSpec, run_dir: Path, died: str | None = None, error: str | None = None,
             stopping: bool = False) -> Outcome:
    """How a run ended, from its status.json; a run that could not record its end (`died` says how
    its process ended, `error` the engine's or the run's last word) is recorded here for it."""
    status = read_status(run_dir)
    status = status if isinstance(status, dict) else {}
    if status.get("status") in (None, "running") and executors.trainer_busy(run_dir):
        if stopping:
            # The process still checkpoints: a forkserver killed with the suite (a signal to the whole
            # group) reports its children as ended while they are not. Their own status is the true one.
            deadline = time.monotonic() + STOPPING_WAIT_S
            while executors.trainer_busy(run_dir) and time.monotonic() < deadline:
                time.sleep(0.2)
            status = read_status(run_dir)
            status = status if isinstance(status, dict) else {}
            if status.get("status") not in (None, "running"):
                return Outcome(spec, run_dir, status["status"], status.get("reason"))
            return Outcome(spec, run_dir, "interrupted", "still checkpointing when the suite stopped")
        # Another process trains it (this job ended at once, RunBusy): its status is that process's to write.
        return Outcome(spec, run_dir, "failed", error or "another process is training this run; it was left alone")
    if status.get("status") in (None, "running"):
        # The process died without recording an end (killed, segfault, a full disk): record it for it.
        if stopping:
            state, reason = "interrupted", "stopped with the suite before it could record its end"
        else:
            state, reason = "failed", f"{died or 'the run'} before recording a status"
        detail = error or _last_line(run_dir / "error.txt")
        if detail:
            reason += f" ({detail})"
        try:
            write_json(run_dir / "status.json", {**status, "status": state, "reason": reason})
        except OSError:  # the disk is still full: the summary and the exit code carry the reason
            pass
        return Outcome(spec, run_dir, state, reason)
    return Outcome(spec, run_dir, status["status"], status.get("reason"))


def finished_line(outcome: Outcome) -> str:
    """"a seed 0: failed in 1.2 s: ValueError: boom (in ...); traceback: runs/.../error.txt", as rich markup."""
    status = read_json(outcome.run_dir / "status.json")
    wall = status.get("wall_s", "?") if isinstance(status, dict) else "?"
    head = f"{escape(outcome.spec.config)} seed {outcome.spec.seed}: "
    if outcome.status != "failed":
        return head + f"{outcome.status}{f' ({escape(outcome.reason)})' if outcome.reason else ''} in {wall} s"
    error = outcome.run_dir / "error.txt"
    where = f"; traceback: {escape(str(error))}" if error.is_file() else ""
    return head + f"[red]failed[/red] in {wall} s: {escape(outcome.reason or 'no reason recorded')}{where}"


def _print_traceback(outcome: Outcome) -> None:
    error = outcome.run_dir / "error.txt"
    try:
        text = error.read_text(errors="replace")
    except OSError:  # not written (a full disk): the reason in the summary is all there is
        return
    print(f"ganbench: {outcome.spec.config} seed {outcome.spec.seed} failed; its traceback (also in {error}):\n"
          f"{text.rstrip()}", file=sys.stderr, flush=True)


def describe_exit(exitcode: int | None) -> str:
    """"the run's process was killed by SIGKILL", "the run's process exited with code 1"."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"the run's process was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"the run's process exited with code {exitcode}"


def _last_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="runs")
    for col in ("config", "seed", "status", "steps", "final D loss", "final G loss", "incidents", "wall s", "run dir"):
        table.add_column(col)
    colours = {"completed": "green", "failed": "red", "diverged": "magenta", "collapsed": "magenta",
               "stopped": "yellow", "running": "yellow", "interrupted": "yellow"}
    for o in outcomes:
        records = [r for r in _train_records(o.run_dir)]
        last = records[-1] if records else {}
        status = read_json(o.run_dir / "status.json")
        status = status if isinstance(status, dict) else {}
        label = f"[{colours.get(o.status, 'white')}]{o.status}[/]" + (" (skipped)" if o.skipped else "")
        if o.reason:
            label += f"\n[dim]{escape(o.reason[:120])}[/dim]"
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        incidents = status.get("incidents") or {}
        kinds = ", ".join(f"{k} {n}" for k, n in incidents.get("by_kind", {}).items()) or "-"
        # status.json's step is the steps done; train records stop at the last log_every multiple.
        steps = status.get("step") if isinstance(status.get("step"), int) else last.get("step", 0)
        table.add_row(o.spec.config, str(o.spec.seed), label, str(steps), fmt(last.get("d_loss")),
                      fmt(last.get("g_loss")), kinds, str(status.get("wall_s", "-")), str(o.run_dir))
    return table


def _train_records(run_dir: Path) -> list[dict[str, Any]]:
    from ganbench.rundir import read_jsonl

    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "train"]
