"""The local executor: a pool of processes on this machine, one per run (`--jobs N`), the default.

Each run gets its own process (forkserver on Linux: torch is imported once in the server, so a
run starts in milliseconds), so a crash in one run cannot take the suite down. The child gets the
run's resolved settings as plain JSON (what config.json holds) and the suite's plugin files, and
rebuilds its spec from them: nothing unpicklable crosses the process boundary, and editing the
suite while it runs changes nothing already planned. `--jobs 0` trains in this process.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
from typing import Any

import ganbench
from ganbench.executors import Executor, Job, Work, run_job
from ganbench.interrupt import StopRequest

# A stopped suite waits this long for its runs to checkpoint and exit before it kills them.
GRACE_S = 30.0


def _child(payload: dict[str, Any], messages: Any, suite_pid: int) -> None:
    """One run, in its own process."""
    run_id = payload["run_id"]
    try:
        stop = StopRequest()
        # SIGINT/SIGTERM, or the suite's process gone: checkpoint and stop. Once the suite is gone,
        # nobody reads the progress queue: exiting must not wait for its pipe to drain (it would hang).
        stop.install(watch_pid=suite_pid, on_orphaned=messages.cancel_join_thread)
        run_job(payload, progress=lambda record: messages.put((run_id, record)), stop=stop)
    except KeyboardInterrupt:  # a Ctrl-C before the handler was installed: no traceback
        sys.exit(130)
    except Exception as exc:  # the run could not start, or record its own end (a full disk): tell the suite, in one line
        messages.put((run_id, {"kind": "error", "reason": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)


def _context() -> mp.context.BaseContext:
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        # torch, torchvision, pyplot and every installed plugin module, imported once in the server:
        # a run process importing them itself spent seconds before its first step (preload.py).
        ctx.set_forkserver_preload(["ganbench_plugins.executors.preload"])
        return ctx
    return mp.get_context("spawn")


class Local(Executor):
    """Runs on this machine, --jobs at once, one process each (0: in this process)."""

    name = "local"
    params = None

    def run(self, work: Work) -> None:
        if work.jobs_at_once == 0:
            self._in_process(work)
        else:
            self._pool(work)

    def _in_process(self, work: Work) -> None:
        import torch

        from ganbench.trainer import execute

        for job in work.jobs:
            if work.stop.requested:
                break
            work.started(job)
            error = None
            try:  # the suite's own spec: nothing to rebuild, and a plugin's bug shows its whole traceback
                execute(job.spec, job.run_dir, torch.device(work.request.device), stop=work.stop, restart=work.restart,
                        progress=lambda r, i=job.run_id: work.record(i, r))
            except OSError as exc:  # the run could not record its own end (a full disk)
                error = f"{type(exc).__name__}: {exc}"
            work.finished(job, "the run" if error else None, error)

    def _payload(self, work: Work, job: Job) -> dict[str, Any]:
        # In this process the suite already chose the threads (ganbench.threads.chosen).
        return job.payload(work.request, work.plugin_files, work.restart, work.token)

    def _pool(self, work: Work) -> None:
        from ganbench.executor import describe_exit

        ctx = _context()
        messages = ctx.Queue()
        pending, active = list(work.jobs), work.children
        by_id = {job.run_id: job for job in work.jobs}
        errors: dict[str, str] = {}
        deadline = None

        def on_message(run_id: str, record: dict[str, Any]) -> None:
            if record.get("kind") == "error":
                errors[run_id] = record["reason"]
            work.record(run_id, record)

        while (pending and not work.stop.requested) or active:
            while pending and len(active) < work.jobs_at_once and not work.stop.requested:
                job = pending.pop(0)
                proc = ctx.Process(target=_child, args=(self._payload(work, job), messages, os.getpid()))
                proc.start()
                active[job.run_id] = proc
                work.started(job)
            if work.stop.requested and deadline is None:
                deadline = time.monotonic() + GRACE_S
                work.console.print(f"[yellow]{work.stop.name}: stopping; {len(active)} active run(s) "
                                   "checkpoint and stop[/yellow]")
            if deadline is not None and time.monotonic() > deadline:
                for proc in active.values():
                    proc.kill()  # it did not checkpoint in time: its last checkpoint stands
            try:
                on_message(*messages.get(timeout=0.2))
            except queue_mod.Empty:
                pass
            for run_id, proc in list(active.items()):
                if proc.exitcode is not None:
                    _drain(messages, on_message)
                    work.finished(by_id[run_id], describe_exit(proc.exitcode), errors.get(run_id))
                    del active[run_id]


def _drain(messages: Any, on_message: Any) -> None:
    while True:
        try:
            on_message(*messages.get_nowait())
        except queue_mod.Empty:
            return


@ganbench.hookimpl
def ganbench_register_executors() -> list[type]:
    return [Local]
