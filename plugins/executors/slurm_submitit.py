"""The slurm executor: one SLURM job per run (a job array by default), through submitit
(facebookincubator/submitit, 2020).

Pre-emption and time limits: SLURM signals the job (USR2 `signal_delay_s` before its time limit
with submitit's defaults; some sites send USR1; pre-emption sends TERM). The run stops at the end
of its step, writes its checkpoint and ends as `interrupted`; only then is submitit's
checkpoint-and-requeue handler called, whose `checkpoint()` hook resubmits the same run, and the
requeued job resumes from that checkpoint (`run_job` always does). Calling submitit's handler at
once, from inside the signal, would requeue a run halfway through a step with nothing saved.

`ganbench run` in the foreground polls the jobs and reads progress from the run folders (the jobs
train elsewhere); `--detach` submits and returns, and `ganbench status OUT` reads the same folders.
submitit's LocalExecutor (`cluster = "local"`) runs each job as real local processes on the same
code path, signals and requeues included, and its DebugExecutor (`cluster = "debug"`) in this process.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ganbench
from ganbench.executors import (EXECUTOR_DIR, SUBMITTED, Executor, Job, Work, new_train_records, note_submitted,
                                 run_job)
from ganbench.interrupt import StopRequest
from ganbench.rundir import read_json

# What asks a job to checkpoint and requeue. SIGINT (submitit's cancel of a local job, a Ctrl-C)
# checkpoints and stops without a requeue.
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)

# sacct's states of a job that will still train its run: such a job is followed, not submitted again.
ALIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"})


@dataclass(frozen=True)
class Params:
    cluster: Literal["auto", "slurm", "local", "debug"] = "auto"  # auto: SLURM where sbatch exists, else local processes; local and debug are submitit's test executors
    partition: str = ""  # the SLURM partition ("": the cluster's default)
    timeout_min: ganbench.PositiveInt = 60  # each job's time limit; a run still training then checkpoints and is requeued
    gpus_per_node: ganbench.NonNegativeInt = 1  # GPUs each job asks for on a GPU device; none on the CPU
    cpus_per_task: ganbench.PositiveInt = 1  # CPUs each job asks for; the run's torch threads follow it
    mem_gb: ganbench.NonNegativeFloat = 0.0  # memory each job asks for (0: the partition's default)
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {account = "gan", qos = "low"}
    array: bool = True  # submit the suite's runs as one job array (false: one job each)
    array_parallelism: ganbench.PositiveInt = 256  # jobs of the array running at once, at most
    max_requeues: ganbench.NonNegativeInt = 3  # time-outs a run may be requeued after (pre-emptions do not count)
    signal_delay_s: ganbench.PositiveInt = 120  # seconds before the time limit that the job is signalled to checkpoint
    folder: str = ""  # submitit's job files and logs (default: OUT/submitit)
    poll_s: ganbench.PositiveFloat = 2.0  # seconds between looks at the jobs and run folders in the foreground


class RunJob:
    """One run as a submitit job: callable, and checkpointable (submitit calls `checkpoint` on
    pre-emption or a time-out, through the handler this job calls once the run has saved)."""

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        stop, requeue = StopRequest(), []
        submitit_handler = signal.getsignal(_submitit_signal())  # its checkpoint-and-requeue, in a real job

        def on_signal(signum: int, frame: Any) -> None:
            if signum in REQUEUE_SIGNALS:
                requeue.append(signum)
            stop.request(signum)  # checkpoint at the end of this step; raises in interruptible set-up work

        # A job's process runs this in its main thread; the DebugExecutor may not (signals cannot be set there).
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, on_signal) for sig in (*REQUEUE_SIGNALS, signal.SIGINT)} if main else {}
        try:
            result = run_job(payload, stop=stop)
        finally:  # the DebugExecutor runs jobs in the suite's own process: give its handlers back
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if requeue and result["status"] == "interrupted" and _is_submitit(submitit_handler):
            submitit_handler(requeue[0], None)  # calls self.checkpoint, requeues the job and exits
        return result

    def checkpoint(self, payload: dict[str, Any]) -> Any:
        """submitit's hook: resubmit the same run. The trainer has already written its checkpoint,
        and the requeued job's `run_job` resumes from it."""
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(), payload)


def earlier_job(job: Job) -> Any | None:
    """A handle on the job an earlier `ganbench run` submitted for this run, if the scheduler still
    has it queued or running (SLURM: its sacct state; submitit's local executor: its controller
    process); None when there is none, or it has ended, or its state cannot be read."""
    submitted = read_json(job.run_dir / EXECUTOR_DIR / SUBMITTED)
    if not isinstance(submitted, dict) or submitted.get("executor") != "slurm" or not submitted.get("job_id"):
        return None
    job_id, cluster = str(submitted["job_id"]), submitted.get("cluster")
    if cluster == "slurm" and submitted.get("log"):
        import submitit

        handle = submitit.SlurmJob(folder=Path(str(submitted["log"])).parent, job_id=job_id)
        # Forced: `handle.state` reads submitit's cache, which holds nothing yet for a job this process
        # has not watched, so every job after the first would read UNKNOWN. One sacct call per run.
        state = handle.get_info(mode="force").get("State") or "UNKNOWN"  # UNKNOWN: sacct unreachable, job forgotten
        return handle if (state.split() or ["UNKNOWN"])[0].upper() in ALIVE_STATES else None
    if cluster == "local" and _local_alive(job_id):
        return LocalJobFollower(job_id)
    return None  # the debug executor's jobs ended with the process that ran them


def _local_alive(job_id: str) -> bool:
    """Whether submitit's local controller with this pid still runs (its command line names submitit,
    so a pid the kernel has since given to another process does not count)."""
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, someone else's: not ours
        return False
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc (macOS): the pid exists, so trust it
        return True


class LocalJobFollower:
    """An earlier local job, which this process did not start and so cannot wait on: done when its
    controller process has ended. The run's own status.json tells how it ended."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def done(self) -> bool:
        return not _local_alive(self.job_id)

    def result(self) -> None:
        return None


def _ids(handles: list[Any]) -> str:
    return ", ".join(str(h.job_id) for h in handles[:5]) + (", ..." if len(handles) > 5 else "")


def _submitit_signal() -> int:
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()


def _is_submitit(handler: Any) -> bool:
    from submitit.core.job_environment import SignalHandler

    return isinstance(getattr(handler, "__self__", None), SignalHandler)


class Slurm(Executor):
    """One SLURM job per run through submitit (job arrays, pre-emption requeue with resume)."""

    name = "slurm"
    params = Params
    detachable = True
    requires = ("submitit", "slurm")

    def threads(self) -> int:
        """Torch threads per run: OMP_NUM_THREADS when set, else the job's CPUs (no oversubscription)."""
        from ganbench.threads import per_run

        return per_run(1, cores=self.p.cpus_per_task)[0]

    def executor(self, work: Work) -> Any:
        import submitit

        folder = Path(self.p.folder) if self.p.folder else work.out / "submitit"
        cluster = None if self.p.cluster == "auto" else self.p.cluster
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster, slurm_max_num_timeout=self.p.max_requeues)
        options: dict[str, Any] = {"name": "ganbench", "timeout_min": self.p.timeout_min,
                                   "cpus_per_task": self.p.cpus_per_task,
                                   "gpus_per_node": self.p.gpus_per_node if work.request.gpu else 0,
                                   "slurm_signal_delay_s": self.p.signal_delay_s,
                                   "slurm_array_parallelism": self.p.array_parallelism}
        if self.p.mem_gb:
            options["mem_gb"] = self.p.mem_gb
        if self.p.partition:
            options["slurm_partition"] = self.p.partition
        if self.p.slurm_additional_parameters:
            options["slurm_additional_parameters"] = dict(self.p.slurm_additional_parameters)
        ex.update_parameters(**options)
        return ex

    def run(self, work: Work) -> None:
        ex = self.executor(work)
        # A run whose earlier job is still queued or running (a second `ganbench run` of a detached
        # suite) keeps that job: submitting it again would queue a job that ends at once.
        earlier = {job.run_id: handle for job in work.jobs if (handle := earlier_job(job)) is not None}
        fresh = [job for job in work.jobs if job.run_id not in earlier]
        if earlier:
            work.console.print(f"{len(earlier)} run(s) still queued or running as earlier jobs "
                               f"({_ids(list(earlier.values()))}): not submitted again")
        # SLURM hides the other GPUs from a job (CUDA_VISIBLE_DEVICES): its GPU is always "cuda".
        request = type(work.request)("cuda" if work.request.gpu else work.request.device, self.threads())
        payloads = [job.payload(request, work.plugin_files, work.restart, work.token) for job in fresh]
        if self.p.array and len(fresh) > 1:
            with ex.batch():
                handles = [ex.submit(RunJob(), payload) for payload in payloads]
        else:
            handles = [ex.submit(RunJob(), payload) for payload in payloads]
        for job, handle in zip(fresh, handles):
            note_submitted(job, "slurm", cluster=ex.cluster, job_id=str(handle.job_id),
                           log=str(handle.paths.stdout))
        if work.detach:
            if handles:
                work.console.print(f"submitted {len(handles)} run(s) to {ex.cluster} (jobs {_ids(handles)}); "
                                   f"follow them with: ganbench status {work.out}")
            return
        active = {**{job: earlier[job.run_id] for job in work.jobs if job.run_id in earlier},
                  **dict(zip(fresh, handles))}
        for job in active:
            work.started(job)
        self._follow(work, active)

    def _follow(self, work: Work, active: dict[Job, Any]) -> None:
        offsets = {job.run_id: 0 for job in active}
        while active:
            if work.stop.requested:  # the jobs are the cluster's now: leave them, say how to follow them
                work.console.print(f"[yellow]{work.stop.name}: no longer waiting; {len(active)} job(s) go on "
                                   f"(ganbench status {work.out}; scancel to stop them)[/yellow]")
                return
            for job, handle in list(active.items()):
                records, offsets[job.run_id] = new_train_records(job.run_dir / "metrics.jsonl", offsets[job.run_id])
                for record in records:
                    work.record(job.run_id, record)
                if handle.done():
                    del active[job]
                    work.finished(job, *self._result(handle))
            if active:
                time.sleep(self.p.poll_s)

    def _result(self, handle: Any) -> tuple[str | None, str | None]:
        try:
            handle.result()
            return None, None
        except Exception as exc:  # the job failed or was killed: submitit's words, first line
            lines = str(exc).strip().splitlines()
            return f"the run's job {handle.job_id}", (lines[0] if lines else type(exc).__name__)[:300]


@ganbench.hookimpl
def ganbench_register_executors() -> list[type]:
    return [Slurm]
