"""Where a suite's runs execute: the executor plugin API, and the one function every executor runs.

An executor (`ganbench_register_executors`) receives the runs to train as `Job`s (each run's
resolved settings, the JSON config.json holds), a `Request` (the device and the CPU threads each
run gets) and the output folder, all in a `Work`. It reports back through the `Work`'s callbacks:
`started`, `record` (each train record, for the live progress bars) and `finished`; ganbench's
progress display, summary table and report are the same whichever executor ran the runs.

Whatever the engine (a local process, a Ray task, a SLURM job), the run itself is `run_job(payload)`:
it rebuilds the spec from its resolved settings, and trains from the run's last checkpoint when it
has one. So a run that a dead worker, a pre-empted node or a time limit stopped resumes wherever the
engine starts it again, as long as the run folder is on storage that place can reach.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganbench.errors import UsageError
from ganbench.interrupt import StopRequest
from ganbench.params import parse
from ganbench.rundir import read_json, write_json

# Files an executor keeps in each run's folder, beside what the run writes: how it was submitted,
# and the process that trains it now (its pid and host, and which attempt this is).
EXECUTOR_DIR = "executor"
SUBMITTED = "submitted.json"
WORKER = "worker.json"
TRAINER_LOCK = "trainer.lock"  # held by the process training the run, released when it exits or dies


class RunBusy(RuntimeError):
    """Another process is training this run: a second trainer would interleave its records and
    checkpoints with the first's (a job submitted twice, a suite re-run while detached jobs train)."""


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, so a Job keys a dict of engine handles
class Job:
    """One run to train: what `run_job` needs, all plain JSON, so it can cross to any machine."""

    run_id: str
    label: str  # "config seed N", for messages
    resolved: dict[str, Any]  # the run's resolved settings (RunSpec.resolved(), config.json)
    run_dir: Path
    steps: int
    spec: Any = field(default=None, repr=False)  # the RunSpec, for a run in this process only

    def payload(self, request: Request, plugin_files: list[str], restart: bool, token: str) -> dict[str, Any]:
        """The argument of `run_job`: no torch object, no path that is not absolute."""
        return {"run_id": self.run_id, "resolved": self.resolved, "run_dir": str(self.run_dir.resolve()),
                "plugin_files": plugin_files, "device": request.device, "threads": request.threads,
                "restart": restart, "token": token}


@dataclass(frozen=True)
class Request:
    """What each run asks of the machine that trains it."""

    device: str  # "cpu", "cuda", "cuda:1", "mps": the device `ganbench run` chose
    threads: int | None  # torch CPU threads per run (ganbench.threads), None: torch's default

    @property
    def gpu(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class Work:
    """A suite's runs handed to an executor, and the callbacks it reports through."""

    jobs: list[Job]
    out: Path
    request: Request
    restart: bool  # --restart: the first attempt of each run discards its checkpoint; retries resume
    plugin_files: list[str]  # absolute paths of the suite's plugin files
    stop: StopRequest  # the suite's: set by SIGINT/SIGTERM in `ganbench run`
    started: Callable[[Job], None]
    record: Callable[[str, dict[str, Any]], None]  # run id, a train record (or {"kind": "error", "reason"})
    # The job; how its process ended ("the run's process was killed by SIGKILL"), for a run that did
    # not record its own end; an error line from the engine or the run (None: none).
    finished: Callable[[Job, str | None, str | None], None]
    console: Any  # rich Console, for one-line notes
    jobs_at_once: int = 1  # --jobs: the local executor's pool size (0: in this process)
    detach: bool = False  # submit and return (only an executor with `detachable = True`)
    children: dict[str, Any] = field(default_factory=dict)  # run id -> local process, for a second Ctrl-C
    token: str = ""  # this invocation's id: a retry of the same submission never restarts again


class Executor:
    """What an executor plugin class provides (subclassing this is optional):

    name = "my-engine"; params = a frozen dataclass of its options (or None);
    detachable = True when `run` can submit and return (`ganbench run --detach`);
    requires = ("module", "extra"): refused in one line naming `pip install ganbench[extra]`
    when the module cannot be imported;
    run(work) -> None: train every `work.jobs`, calling `work.started`, `work.record` and
    `work.finished` for each, until all finished or `work.stop.requested` (then return promptly,
    every run stopped or left to checkpoint)."""

    name = ""
    params: type | None = None
    detachable = False
    requires: tuple[str, str] | None = None

    def __init__(self, params: Any = None) -> None:
        self.p = params

    def run(self, work: Work) -> None:
        raise NotImplementedError


def option_value(text: str) -> Any:
    """An --executor-option value as TOML reads it (3, 0.5, true, "x", {a = 1}), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """["max_retries=2", "address=auto"] -> {"max_retries": 2, "address": "auto"}."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f'--executor-option "{pair}": expected KEY=VALUE, like max_retries=2')
        options[key.strip()] = option_value(value.strip())
    return options


@dataclass(frozen=True)
class Choice:
    """A suite's [executor] table: the executor's name and its options, as written."""

    name: str
    options: dict[str, Any]
    file: str  # the suite file, for messages


def table(value: Any, registry: Any, file: str) -> Choice:
    """Validate a suite's [executor] table (name and options; the engine need not be installed to
    validate a suite, only to run it)."""
    if not isinstance(value, dict):
        raise UsageError(f"{file}: executor = {value!r}: expected a table [executor] with a name, like "
                         'name = "ray"')
    options = dict(value)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise UsageError(f'{file}: executor.name: missing; name the executor, like name = "ray" '
                         f"(installed: {', '.join(registry.names('executor'))})")
    choice = Choice(name, options, file)
    build(registry, choice.name, options, f"{file}: executor.name", {k: f"{file}: executor.{k}" for k in options},
          installed=False)
    return choice


def build(registry: Any, name: str, options: dict[str, Any], where: str, paths: dict[str, str],
          installed: bool = True) -> Executor:
    """The executor `name` with its options parsed (an unknown key refused with a did-you-mean) and,
    with `installed`, its engine importable (else a UsageError naming the extra to install)."""
    entry = registry.get("executor", name, where)
    requires = getattr(entry.cls, "requires", None)
    if installed and requires:
        module, extra = requires
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f'{where} = "{name}": the {name} executor needs the {module} package, which is not '
                             f"installed: pip install 'ganbench[{extra}]'") from None
    params = parse(getattr(entry.cls, "params", None), options, where, paths)
    return entry.cls(params)


def choose(suite: Any, name: str | None = None, options: dict[str, Any] | None = None, detach: bool = False,
           jobs: int = 1) -> Executor:
    """The executor a `ganbench run` uses: `name` (--executor), else the suite's [executor] table,
    else `local`; `options` (--executor-option) over the table's when both name the same executor."""
    from_table: Choice | None = getattr(suite, "executor", None)
    given = dict(options or {})
    if name is None:
        name = from_table.name if from_table else "local"
    base = from_table.options if from_table and from_table.name == name else {}
    paths = {**{k: f"{from_table.file}: executor.{k}" for k in base if from_table},
             **{k: f"--executor-option {k}" for k in given}}
    where = "--executor" if not from_table or name != from_table.name else f"{from_table.file}: executor.name"
    engine = build(suite.registry, name, {**base, **given}, where, paths)
    if detach and not getattr(engine, "detachable", False):
        raise UsageError(f'--detach: the {name} executor trains while `ganbench run` waits; --detach needs one that '
                         "submits to a queue and returns (slurm)")
    if jobs == 0 and name != "local":
        raise UsageError(f'--jobs 0 trains in this process, which only the local executor does; drop --jobs 0 '
                         f'or --executor {name}')
    return engine


# ---------------------------------------------------------------------------------------------
# The worker side: what a local process, a Ray task or a SLURM job runs for one run
# ---------------------------------------------------------------------------------------------


def first_attempt(run_dir: Path, token: str) -> bool:
    """True once per (run, submission): the first attempt of a `--restart` discards the checkpoint,
    and a retry of the same submission (a dead worker, a requeued job) resumes from it."""
    marker = run_dir / EXECUTOR_DIR / f"restarted-{token}"
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


def attempt(run_dir: Path) -> int:
    """Record this process as the one training the run (worker.json); returns the attempt number."""
    previous = read_json(run_dir / EXECUTOR_DIR / WORKER)
    number = (previous.get("attempt", 0) if isinstance(previous, dict) else 0) + 1
    write_json(run_dir / EXECUTOR_DIR / WORKER, {"pid": os.getpid(), "host": socket.gethostname(),
                                                 "attempt": number, "started": time.time()})
    return number


def run_job(payload: dict[str, Any], progress: Callable[[dict[str, Any]], None] | None = None,
            stop: StopRequest | None = None) -> dict[str, Any]:
    """Train one run from its payload (`Job.payload`), in this process; returns {"status", "reason"}.

    A run that fails records its reason and returns normally: an engine's retries are for workers
    that die, not for runs that raise. A run whose settings cannot even be rebuilt raises."""
    import torch

    if payload.get("threads"):  # a worker's torch defaults to one thread per core: see ganbench.threads
        torch.set_num_threads(int(payload["threads"]))
    run_dir = Path(payload["run_dir"])
    (run_dir / EXECUTOR_DIR).mkdir(parents=True, exist_ok=True)
    with trainer_lock(run_dir):
        return _run_locked(payload, run_dir, progress, stop)


@contextlib.contextmanager
def trainer_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's trainer lock, taken at once or RunBusy naming the process that holds it (an OS
    lock: the kernel releases it when that process exits, however it dies)."""
    import filelock

    lock = filelock.FileLock(run_dir / EXECUTOR_DIR / TRAINER_LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = read_json(run_dir / EXECUTOR_DIR / WORKER)
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, attempt {holder.get('attempt')}"
               if isinstance(holder, dict) else "unknown")
        raise RunBusy(f"{run_dir.name}: another process is training this run ({who}); this one left it "
                      "alone. Wait for it to end, or stop it, before starting the run again") from None
    try:
        yield
    finally:
        lock.release()


def trainer_busy(run_dir: Path) -> bool:
    """Whether a process holds the run's trainer lock now (probed by taking it and letting go)."""
    try:
        with trainer_lock(run_dir):
            return False
    except RunBusy:
        return True
    except OSError:  # no folder to lock in: nobody trains it
        return False


def _run_locked(payload: dict[str, Any], run_dir: Path, progress: Callable[[dict[str, Any]], None] | None,
                stop: StopRequest | None) -> dict[str, Any]:
    import torch

    from ganbench.registry import Registry
    from ganbench.suite import spec_from_resolved
    from ganbench.trainer import execute

    restart = bool(payload.get("restart")) and first_attempt(run_dir, payload.get("token", ""))
    attempt(run_dir)
    try:
        spec = spec_from_resolved(payload["resolved"], Registry([Path(f) for f in payload["plugin_files"]]))
        if spec.run_id != payload["run_id"]:  # a plugin's parameters changed on disk after the suite was planned
            raise RuntimeError(f"the run's settings changed between planning ({payload['run_id']}) and start "
                               f"({spec.run_id}); was plugin code edited while the suite ran? Run the suite again")
    except Exception:  # record why the run could not even start
        (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    device = payload["device"]
    status = execute(spec, run_dir, torch.device(device), progress=progress, stop=stop, restart=restart)
    recorded = read_json(run_dir / "status.json")
    return {"status": status, "reason": recorded.get("reason") if isinstance(recorded, dict) else None}


def note_submitted(job: Job, executor: str, **details: Any) -> None:
    """submitted.json in the run's executor/ folder: what `ganbench status` shows for a queued run."""
    write_json(job.run_dir / EXECUTOR_DIR / SUBMITTED, {"executor": executor, "submitted": time.time(), **details})


def new_train_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete train records metrics.jsonl gained after byte `offset`, and the new offset: live
    progress for runs that train elsewhere, read from their folders (a restarted run's file shrinks:
    read it from the start again)."""
    import json

    try:
        size = path.stat().st_size
    except OSError:
        return [], 0
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n") + 1  # a half-written last line waits for the next look
    records = []
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "train":
            records.append(record)
    return records, offset + end
