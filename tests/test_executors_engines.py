"""The executors on their real engines, through `ganbench run` in a subprocess: a local Ray instance
with 2 CPUs, and submitit's LocalExecutor (real processes, signals and requeues, the code path of
SLURM). On one CPU thread per run, every executor gives the numbers the local one gives; a Ray
worker killed with SIGKILL is retried and resumes; a submitit job signalled mid-run checkpoints,
is requeued and resumes; a run that raises fails once, with its reason, and the others complete.
Identity is what tests/test_resume.py checks: metrics.jsonl without wall-clock times, and every
checkpoint tensor, bit for bit (between two runs on this machine, never against stored numbers)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from test_executors import BOOM, comparable
from test_resume import assert_identical

pytest.importorskip("ray")
pytest.importorskip("submitit")

GANBENCH = [sys.executable, "-m", "ganbench.cli"]
SUITE = """
[suite]
name = "engines"
question = "Does every executor give the same answers?"
seeds = {seeds}
{plugins}

[dataset]
name = "ring8"

[defaults]
architecture = {{ name = "mlp", width = 16 }}
batch_size = 16
steps = {steps}
log_every = 10
eval_every = 100
checkpoint_every = 20
grid_size = 16
metrics = []

[[configs]]
name = "a"
{extra}
"""
# Report columns that are times, not results.
WALL_COLUMNS = ("wall_s", "sec_per_step", "started", "finished")


def write(tmp_path: Path, steps: int, seeds: str = "[0, 1]", boom: bool = False) -> Path:
    if boom:
        (tmp_path / "boom.py").write_text(BOOM)
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(steps=steps, seeds=seeds, plugins='plugins = ["boom.py"]' if boom else "",
                                 extra='[[configs]]\nname = "boom"\ntricks = ["boom"]\n' if boom else ""))
    return path


@pytest.fixture
def ray_dir():
    """A short session folder for each test's Ray instance (its socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="gbr", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ray_flags(ray_dir: str) -> list[str]:
    return ["--executor", "ray", "--executor-option", "num_cpus=2", "--executor-option", f"temp_dir={ray_dir}"]


SLURM_LOCAL = ["--executor", "slurm", "--executor-option", "cluster=local", "--executor-option", "poll_s=0.5"]


def start(suite: Path, out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels in every process: bit-identical runs
    return subprocess.Popen([*GANBENCH, "run", str(suite), "--out", str(out), "--scale", "default", *flags], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, err


def runs(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((out / "runs").iterdir())}


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    assert comparable(a / "metrics.jsonl") == comparable(b / "metrics.jsonl")
    sa, sb = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (a, b))
    for part in ("models", "eval_generator", "optimizers", "updates", "plugins", "rng"):
        assert_identical(sa[part], sb[part], part)


def report_rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in WALL_COLUMNS} for row in csv.DictReader(f)]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def trained_past(run: Path, step: int) -> bool:
    """A checkpoint exists and metrics.jsonl has a train record at `step` or later."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()[:-1]  # the last may be half-written
    except OSError:
        return False
    return (run / "checkpoints" / "last.pt").is_file() and any(
        json.loads(x).get("kind") == "train" and json.loads(x)["step"] >= step for x in lines)


def worker(run: Path) -> dict:
    return json.loads((run / "executor" / "worker.json").read_text())


def test_ray_in_process_gives_the_local_numbers_and_a_raising_run_fails_alone(tmp_path, ray_dir, monkeypatch):
    """The quick version, through the API in this process (no CLI start-up, no report): a local Ray
    instance with 2 CPUs trains a run to the in-process local executor's numbers, and the run whose
    trick raises fails once with its reason while the other completes."""
    import ray

    from ganbench.executor import run_suite
    from ganbench.suite import load_suite

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the Ray workers inherit it: one thread, as here
    suite = load_suite(write(tmp_path, steps=20, seeds="[0]", boom=True))
    specs = suite.runs("default")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_suite(suite, specs, tmp_path / "local", torch.device("cpu"), jobs=0, threads=1)
        ray_outcomes = run_suite(suite, specs, tmp_path / "ray", torch.device("cpu"), threads=1, executor="ray",
                                 executor_options={"num_cpus": 2, "temp_dir": ray_dir})
    finally:
        torch.set_num_threads(before)
        ray.shutdown()  # run_suite stops the instance it started; this is for a test that failed halfway
    assert [o.status for o in local] == [o.status for o in ray_outcomes] == ["completed", "failed"]
    boom = ray_outcomes[1]
    assert "ValueError: boom at step 3" in boom.reason and worker(boom.run_dir)["attempt"] == 1
    assert_same_run(local[0].run_dir, ray_outcomes[0].run_dir)


@pytest.mark.slow
def test_ray_gives_the_local_numbers_and_a_raising_run_fails_alone(tmp_path, ray_dir):
    """A local Ray instance (2 CPUs) trains the runs to the local executor's numbers; the run whose
    trick raises fails once, with its reason, is not retried, and the others complete."""
    suite = write(tmp_path, steps=20, boom=True)
    assert finish(start(suite, tmp_path / "local", "--jobs", "0"))[0] == 1  # a failed run: exit 1
    code, err = finish(start(suite, tmp_path / "ray", *ray_flags(ray_dir)))
    assert code == 1, err
    local, ray = runs(tmp_path / "local"), runs(tmp_path / "ray")
    assert local.keys() == ray.keys()
    for name, run in ray.items():
        if name.startswith("boom"):
            assert status(run)["status"] == "failed"
            assert "ValueError: boom at step 3" in status(run)["reason"], status(run)
            assert worker(run)["attempt"] == 1  # a run that raises is not retried: a bug raises again
            assert "boom at step 3" in (run / "error.txt").read_text()
        else:
            assert status(run)["status"] == "completed"
            assert_same_run(local[name], run)
    assert "2/4 runs completed" in " ".join(err.split())


@pytest.mark.slow
def test_every_executor_gives_the_same_answers(tmp_path, ray_dir):
    """local (--jobs 2), ray (2 CPUs) and slurm (submitit's LocalExecutor): identical metrics.jsonl
    (times aside), identical checkpoints and an identical report table."""
    suite = write(tmp_path, steps=40)
    outs = {"local": ["--jobs", "2"], "ray": ray_flags(ray_dir), "slurm": SLURM_LOCAL}
    for name, flags in outs.items():
        code, err = finish(start(suite, tmp_path / name, *flags))
        assert code == 0, f"{name}: {err}"
    local = runs(tmp_path / "local")
    for name in ("ray", "slurm"):
        other = runs(tmp_path / name)
        assert other.keys() == local.keys()
        for run_id in local:
            assert_same_run(local[run_id], other[run_id])
        assert report_rows(tmp_path / name) == report_rows(tmp_path / "local")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_is_retried_and_resumes_identically(tmp_path, ray_dir):
    suite = write(tmp_path, steps=300, seeds="[0]")
    reference = start(suite, tmp_path / "reference", "--jobs", "0")
    proc = start(suite, tmp_path / "ray", *ray_flags(ray_dir), "--executor-option", "max_retries=2")
    wait_for(lambda: (tmp_path / "ray" / "runs").is_dir() and any(
        trained_past(r, 70) for r in (tmp_path / "ray" / "runs").iterdir()), proc, what="step 70 under Ray")
    (run,) = runs(tmp_path / "ray").values()
    pid = worker(run)["pid"]
    os.kill(pid, signal.SIGKILL)  # the worker process, as the OOM killer or a lost node would
    code, err = finish(proc)
    assert code == 0, err
    assert finish(reference)[0] == 0
    st = status(run)
    assert st["status"] == "completed" and len(st["resumed"]) == 1 and st["resumed"][0]["from_step"] >= 60
    assert worker(run)["attempt"] == 2 and worker(run)["pid"] != pid
    assert_same_run(runs(tmp_path / "reference")[run.name], run)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signalled_submitit_job_checkpoints_requeues_and_resumes(tmp_path, sig):
    suite = write(tmp_path, steps=300, seeds="[0]")
    reference = start(suite, tmp_path / "reference", "--jobs", "0")
    proc = start(suite, tmp_path / "slurm", *SLURM_LOCAL)
    wait_for(lambda: (tmp_path / "slurm" / "runs").is_dir() and any(
        trained_past(r, 70) for r in (tmp_path / "slurm" / "runs").iterdir()), proc, what="step 70 in the job")
    (run,) = runs(tmp_path / "slurm").values()
    pid = worker(run)["pid"]
    os.kill(pid, sig)  # what SLURM sends before a time limit (USR1/USR2) or on pre-emption (TERM)
    code, err = finish(proc)
    assert code == 0, err
    assert finish(reference)[0] == 0
    st = status(run)
    assert st["status"] == "completed" and len(st["resumed"]) == 1, st
    assert worker(run)["attempt"] == 2 and worker(run)["pid"] != pid  # the requeued job, a new process
    log = Path(json.loads((run / "executor" / "submitted.json").read_text())["log"])
    assert "Requeued job" in log.with_suffix(".err").read_text() + log.read_text()
    assert_same_run(runs(tmp_path / "reference")[run.name], run)


@pytest.mark.slow
def test_detach_submits_and_status_follows_the_jobs(tmp_path):
    suite = write(tmp_path, steps=40)
    code, err = finish(start(suite, tmp_path / "out", *SLURM_LOCAL, "--detach"))
    assert code == 0, err
    assert "ganbench status" in " ".join(err.split())  # rich wraps long lines (the tmp path's length varies)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = subprocess.run([*GANBENCH, "status", str(tmp_path / "out"), "--json"], capture_output=True, text=True)
        states = [json.loads(x)["state"] for x in done.stdout.splitlines()]
        assert states and set(states) <= {"queued", "running", "completed"}, done.stdout
        if states == ["completed", "completed"]:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the detached jobs did not complete: {states}")


GATE = '''"""Test double: holds every run at step 5 while the file named by GANBENCH_TEST_GATE exists."""
import os
import time
from pathlib import Path

import ganbench


class Gate:
    name = "gate"
    params = None

    def __init__(self, params=None):
        pass

    @ganbench.hookimpl
    def ganbench_step_end(self, run, step):
        while step.index == 5 and Path(os.environ["GANBENCH_TEST_GATE"]).exists():
            time.sleep(0.1)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [Gate]
'''


def detach(suite: Path, out: Path, err: Path, gate: Path) -> tuple[int, str]:
    """`ganbench run --detach`, returning when it exits (the jobs it leaves keep their own output:
    `finish` would wait for them, since they inherit its pipes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANBENCH_TEST_GATE": str(gate)}
    with err.open("w") as f:
        code = subprocess.run([*GANBENCH, "run", str(suite), "--out", str(out), "--scale", "default", *SLURM_LOCAL,
                               "--detach"], env=env, stdout=subprocess.DEVNULL, stderr=f, timeout=300).returncode
    return code, err.read_text()


def submitted(out: Path) -> dict[str, str]:
    return {name: json.loads((run / "executor" / "submitted.json").read_text())["job_id"]
            for name, run in runs(out).items()}


@pytest.mark.slow
def test_a_second_run_of_a_detached_suite_follows_its_jobs_instead_of_submitting_them_again(tmp_path):
    (tmp_path / "gate.py").write_text(GATE)
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(steps=40, seeds="[0, 1]", plugins='plugins = ["gate.py"]', extra='tricks = ["gate"]'))
    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.touch()  # the jobs wait at step 5 until the test removes it
    try:
        code, err = detach(suite, out, tmp_path / "first.err", gate)
        assert code == 0, err
        jobs = submitted(out)
        assert len(jobs) == 2
        # again, detached, while the jobs are queued or held: nothing is submitted
        code, err = detach(suite, out, tmp_path / "second.err", gate)
        assert code == 0, err
        assert "2 run(s) still queued or running as earlier jobs" in err and "not submitted again" in err, err
        assert "submitted 2 run(s)" not in err and submitted(out) == jobs
        # and in the foreground: it waits for those jobs and reports their runs
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GANBENCH_TEST_GATE": str(gate)}
        with (tmp_path / "third.err").open("w") as log:
            proc = subprocess.Popen([*GANBENCH, "run", str(suite), "--out", str(out), "--scale", "default",
                                     *SLURM_LOCAL], env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
            wait_for(lambda: "not submitted again" in (tmp_path / "third.err").read_text(), proc, what="the foreground")
            gate.unlink()
            assert proc.wait(timeout=300) == 0, (tmp_path / "third.err").read_text()
        err = (tmp_path / "third.err").read_text()
        assert "another process is training" not in err and "2/2 runs completed" in " ".join(err.split()), err
        assert submitted(out) == jobs
        for run in runs(out).values():
            assert status(run)["status"] == "completed" and worker(run)["attempt"] == 1  # one job trained it
        # once they have ended, a run that must train again gets a new job (it resumes from its last checkpoint)
        (next(iter(runs(out).values())) / "status.json").unlink()
        code, err = detach(suite, out, tmp_path / "fourth.err", gate)
        assert code == 0 and "submitted 1 run(s)" in err, err
        assert submitted(out) != jobs
    finally:  # a failed check must not leave jobs held at the gate
        gate.unlink(missing_ok=True)
