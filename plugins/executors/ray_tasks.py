"""The ray executor: each run a Ray task (Moritz et al. 2018, "Ray: A Distributed Framework for
Emerging AI Applications"), on a running cluster or a local instance.

Ray schedules: each task asks for `cpus_per_run` CPUs and `gpus_per_run` GPUs (a fraction packs
several small runs on one GPU). A worker that dies (kill -9, a lost node, the OOM killer) is
retried by Ray up to `max_retries` times, and the retry resumes from the run's last checkpoint,
because `run_job` always starts from the checkpoint in the run's folder. A run that raises records
its failure and is not retried: retrying a bug gives the same bug. Train records reach the progress
bars through a Ray queue (an actor), sent without waiting on it, so a worker never blocks on the driver.
"""
from __future__ import annotations

import logging
import queue as queue_mod
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ganbench
from ganbench.errors import UsageError
from ganbench.executors import Executor, Job, Work, run_job


@dataclass(frozen=True)
class Params:
    address: str = ""  # a running cluster ("auto", "ray://head:10001", "10.0.0.1:6379"); "" starts a local instance
    num_cpus: ganbench.NonNegativeInt = 0  # CPUs of a local instance (0: this process's usable cores)
    cpus_per_run: ganbench.PositiveFloat = 1.0  # CPUs each run's task asks for; its torch threads follow it
    gpus_per_run: ganbench.NonNegativeFloat = 1.0  # GPUs each run asks for on a GPU device (0.25: four runs per GPU); none on the CPU
    max_retries: ganbench.NonNegativeInt = 3  # times a run whose worker died is started again (each resumes)
    temp_dir: str = ""  # a local instance's session folder (default: Ray's /tmp/ray); keep it short, Ray's sockets live there


def _task(payload: dict[str, Any], messages: Any) -> dict[str, Any]:
    """One run, in a Ray worker."""
    run_id = payload["run_id"]
    # A put is a remote call that is not waited on: a slow driver never holds up a training step.
    return run_job(payload, progress=lambda record: messages.actor.put_nowait.remote((run_id, record)))


def _read_marker(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


class Ray(Executor):
    """Each run a Ray task, on a Ray cluster or a local instance; dead workers retried, resuming."""

    name = "ray"
    params = Params
    requires = ("ray", "ray")

    def threads(self) -> int:
        """Torch threads per run: OMP_NUM_THREADS when set, else the task's CPUs (no oversubscription)."""
        from ganbench.threads import per_run

        return per_run(1, cores=max(1, int(self.p.cpus_per_run)))[0]

    def run(self, work: Work) -> None:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        try:
            self._check_storage(ray, work.out)
            self._run(ray, work)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if self.p.address:
            kwargs["address"] = self.p.address
        else:
            from ganbench.threads import usable_cores

            kwargs["num_cpus"] = self.p.num_cpus or usable_cores()
            if self.p.temp_dir:
                kwargs["_temp_dir"] = self.p.temp_dir
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise UsageError(f'--executor-option address="{self.p.address}": no Ray cluster answered ({exc}); '
                             "start one with `ray start --head`, or leave address out for a local instance") from None

    def _check_storage(self, ray: Any, out: Path) -> None:
        """Every node that may train a run must see the output folder: the driver writes a marker,
        and a task on each node reads it back. Refused in one line before anything trains."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        out.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        marker = (out / f".ganbench-storage-check-{token[:8]}").resolve()
        marker.write_text(token)
        try:
            read = ray.remote(num_cpus=0)(_read_marker)
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
            # Keyed by node id: two raylets on one address are two nodes to check.
            refs = {(n["NodeID"], n["NodeManagerAddress"]): read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                n["NodeID"], soft=False)).remote(str(marker)) for n in nodes}
            for (node, address), ref in refs.items():
                host = f"{address} ({node[:8]})"
                try:
                    seen = ray.get(ref, timeout=120)
                except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as exc:
                    raise UsageError(f"--out {out}: Ray node {host} did not answer the storage check within 120 s "
                                     f"({type(exc).__name__}); check that the node is healthy and has a free CPU "
                                     "slot") from None
                if seen != token:
                    raise UsageError(f"--out {out}: Ray node {host} cannot read the output folder ({marker} is "
                                     f"{seen if seen.startswith('unreadable') else 'another file there'}); put --out "
                                     "on storage every node mounts at the same path (NFS, a shared disk)")
        finally:
            marker.unlink(missing_ok=True)

    def _run(self, ray: Any, work: Work) -> None:
        from ray.util.queue import Queue

        messages = Queue(actor_options={"num_cpus": 0})
        gpus = self.p.gpus_per_run if work.request.gpu else 0
        # Ray hides the other GPUs from a task (CUDA_VISIBLE_DEVICES): its GPU is always "cuda".
        device = "cuda" if work.request.gpu else work.request.device
        request = type(work.request)(device, self.threads())
        task = ray.remote(_task)
        resources = {"num_cpus": self.p.cpus_per_run, "num_gpus": gpus, "max_retries": self.p.max_retries,
                     "retry_exceptions": False}
        refs: dict[Any, Job] = {}
        for job in work.jobs:
            payload = job.payload(request, work.plugin_files, work.restart, work.token)
            refs[task.options(name=f"ganbench {job.label}", **resources).remote(payload, messages)] = job
            work.started(job)
        cancelled_at = None
        try:
            while refs:
                if work.stop.requested and cancelled_at is None:
                    work.console.print(f"[yellow]{work.stop.name}: stopping; {len(refs)} Ray task(s) cancelled; "
                                       "each run resumes from its last checkpoint[/yellow]")
                    for ref in refs:
                        ray.cancel(ref, force=True)
                    cancelled_at = time.monotonic()
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.2, fetch_local=False)
                self._drain(messages, work)
                for ref in done:
                    job = refs.pop(ref)
                    self._drain(messages, work)
                    died, error = self._result(ray, ref)
                    work.finished(job, died, error)
        finally:
            ray.kill(messages.actor)

    def _result(self, ray: Any, ref: Any) -> tuple[str | None, str | None]:
        """(how the run's process ended, the error) for a finished task; (None, None) when it returned."""
        from ray import exceptions as rex

        try:
            ray.get(ref)
            return None, None
        except rex.TaskCancelledError:
            return "the run's Ray task was cancelled", None
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError) as exc:
            tries = self.p.max_retries + 1
            return (f"the run's Ray worker died {tries} time{'s' * (tries > 1)} (max_retries = {self.p.max_retries})",
                    " ".join(str(exc).split())[:300])
        except rex.RayTaskError as exc:  # run_job raised: its settings could not be rebuilt
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return "the run's Ray task", f"{type(cause).__name__}: {cause}"

    def _drain(self, messages: Any, work: Work) -> None:
        while True:
            try:
                items = messages.get_nowait_batch(messages.qsize())
            except (queue_mod.Empty, ValueError):
                return
            if not items:
                return
            for run_id, record in items:
                work.record(run_id, record)


@ganbench.hookimpl
def ganbench_register_executors() -> list[type]:
    return [Ray]
