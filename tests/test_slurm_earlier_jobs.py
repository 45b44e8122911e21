"""Which earlier SLURM jobs `ganbench run` keeps instead of submitting a run again, by the state
sacct gives them. No SLURM here: `FakeSlurmJob` is a test double for submitit's SlurmJob (its
`state` is what sacct would say); the real path through submitit's local executor is
tests/test_executors_engines.py::test_a_second_run_of_a_detached_suite_follows_its_jobs_instead_of_submitting_them_again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganbench.executors import Job

submitit = pytest.importorskip("submitit")
slurm = pytest.importorskip("ganbench_plugins.executors.slurm_submitit")


class FakeSlurmJob:
    """Test double: submitit.SlurmJob with the state sacct is pretending to report. Like the real one,
    its cached `state` knows nothing of a job this process never watched; only a forced look asks sacct."""

    sacct_state = "PENDING"

    def __init__(self, folder: Path, job_id: str) -> None:
        self.folder, self.job_id = folder, job_id

    @property
    def state(self) -> str:
        return "UNKNOWN"

    def get_info(self, mode: str = "force") -> dict[str, str]:
        return {"State": self.sacct_state} if mode == "force" else {}


def job(tmp_path: Path, **submitted: object) -> Job:
    run_dir = tmp_path / "runs" / "a-s0"
    (run_dir / "executor").mkdir(parents=True, exist_ok=True)
    if submitted:
        (run_dir / "executor" / "submitted.json").write_text(json.dumps({"executor": "slurm", **submitted}))
    return Job("a-s0", "a seed 0", {}, run_dir, 10)


@pytest.mark.parametrize("state, kept", [("PENDING", True), ("RUNNING", True), ("REQUEUED", True),
                                         ("COMPLETED", False), ("CANCELLED by 1234", False), ("FAILED", False),
                                         ("TIMEOUT", False), ("UNKNOWN", False), ("", False)])
def test_a_queued_or_running_slurm_job_is_kept_and_an_ended_one_is_not(tmp_path, monkeypatch, state, kept):
    monkeypatch.setattr(FakeSlurmJob, "sacct_state", state)
    monkeypatch.setattr(submitit, "SlurmJob", FakeSlurmJob)
    log = tmp_path / "submitit" / "4242_7" / "4242_7_0_log.out"
    handle = slurm.earlier_job(job(tmp_path, cluster="slurm", job_id="4242_7", log=str(log)))
    assert (handle is not None) == kept
    if kept:
        assert handle.job_id == "4242_7" and handle.folder == log.parent


def test_no_earlier_submission_or_another_executors_is_not_a_job(tmp_path):
    assert slurm.earlier_job(job(tmp_path)) is None
    other = job(tmp_path)
    (other.run_dir / "executor" / "submitted.json").write_text(json.dumps({"executor": "ray", "job_id": "1"}))
    assert slurm.earlier_job(other) is None


def test_a_local_job_is_alive_while_its_submitit_controller_runs(tmp_path):
    # a process whose command line names submitit stands in for the local controller
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 30
        while cmdline.exists() and b"submitit" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has exec'd: before that its command line is pytest's
        handle = slurm.earlier_job(job(tmp_path, cluster="local", job_id=str(proc.pid)))
        assert handle is not None and not handle.done()
    finally:
        proc.kill()
        proc.wait()
    assert handle.done()
    assert slurm.earlier_job(job(tmp_path, cluster="local", job_id=str(proc.pid))) is None


def test_a_pid_reused_by_another_program_is_not_the_job(tmp_path):
    # this test's own process is alive, but it is not a submitit controller
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("no /proc: the pid check cannot tell programs apart here")
    assert slurm.earlier_job(job(tmp_path, cluster="local", job_id=str(os.getpid()))) is None
