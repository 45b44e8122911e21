"""Signals and the output-folder lock, with real processes and real signals: SIGTERM to the suite's
pid and to its group, Ctrl-C once and twice, the suite's process killed outright, and two
`ganbench run` into one folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ganbench import checkpoint
from test_resume import GANBENCH, PARITY_SUITE, finish, run_dir_of, wait_for_step

LONG = PARITY_SUITE.replace("steps = 36", "steps = 2000")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(tmp_path: Path, out: str = "out", *extra: str) -> tuple[subprocess.Popen, list[str]]:
    suite = tmp_path / "long.toml"
    suite.write_text(LONG)
    cmd = [*GANBENCH, "run", str(suite), "--out", str(tmp_path / out), "--scale", "default", "--only", "plain", *extra]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            text=True), cmd


def group_is_gone(pgid: int, timeout: float = 10) -> bool:
    """No process of the group is left: nothing keeps training as an orphan."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def last_step(out: Path) -> int:
    lines = (run_dir_of(out) / "metrics.jsonl").read_text().splitlines()[:-1]  # the last may be half-written
    return max(json.loads(x)["step"] for x in lines)


def interrupted_status(out: Path) -> dict:
    run = run_dir_of(out)
    status = json.loads((run / "status.json").read_text())
    meta = torch.load(run / checkpoint.FILE, weights_only=True)["meta"]
    assert status["status"] == "interrupted", status
    assert meta["step"] == status["step"] > 0 and meta["resumable"]
    return status


def test_sigterm_to_the_group_checkpoints_the_run_writes_the_report_and_exits_143(tmp_path):
    """What SLURM and Kubernetes send: SIGTERM to every process of the job."""
    proc, _ = start(tmp_path)
    wait_for_step(tmp_path / "out", 8, proc)
    seen = last_step(tmp_path / "out")
    os.killpg(proc.pid, signal.SIGTERM)
    code, err = finish(proc)
    assert code == 143, err
    # It stopped at the next step boundary, not at the end of its 2,000 steps (a count of steps,
    # not seconds: this machine's speed varies too much for a timed assertion).
    assert interrupted_status(tmp_path / "out")["step"] <= seen + 40
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("ganbench: stopped by SIGTERM")]
    assert "0 run(s) finished, 1 interrupted (checkpointed at step " in line and "Run the same command again" in line
    assert "SIGTERM" in interrupted_status(tmp_path / "out")["reason"]
    assert (tmp_path / "out" / "report.html").is_file()  # the report is still written, over what exists
    assert group_is_gone(proc.pid)


@pytest.mark.slow
def test_sigterm_to_the_suite_alone_stops_its_runs_too(tmp_path):
    """`kill PID`: only the suite's process gets the signal, and passes it on."""
    proc, _ = start(tmp_path)
    wait_for_step(tmp_path / "out", 8, proc)
    os.kill(proc.pid, signal.SIGTERM)
    code, err = finish(proc)
    assert code == 143 and "Traceback" not in err, err
    interrupted_status(tmp_path / "out")
    assert group_is_gone(proc.pid)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_resumes_from_the_checkpoint(tmp_path):
    proc, cmd = start(tmp_path)
    wait_for_step(tmp_path / "out", 8, proc)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole foreground group
    code, err = finish(proc)
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert any(x.startswith("ganbench: stopped by SIGINT") for x in err.splitlines())
    step = interrupted_status(tmp_path / "out")["step"]

    again = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                             text=True)
    wait_for_step(tmp_path / "out", step + 4, again)
    os.killpg(again.pid, signal.SIGTERM)
    code, err = finish(again)
    assert code == 143, err
    assert f"resume from their checkpoints (at steps {step})" in err
    status = interrupted_status(tmp_path / "out")
    assert [r["from_step"] for r in status["resumed"]] == [step] and status["step"] > step
    records = [json.loads(x) for x in (run_dir_of(tmp_path / "out") / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # cut back to the checkpoint, then continued: no step twice


def test_a_second_ctrl_c_kills_at_once(tmp_path):
    proc, _ = start(tmp_path)
    wait_for_step(tmp_path / "out", 8, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    code, err = finish(proc, timeout=10)
    assert code == 130 and "Traceback" not in err, err
    assert group_is_gone(proc.pid, timeout=5)


@pytest.mark.slow
def test_a_killed_suite_leaves_no_run_training(tmp_path):
    """SIGKILL to the suite's process alone: its run notices within seconds, checkpoints and stops."""
    proc, _ = start(tmp_path)
    wait_for_step(tmp_path / "out", 8, proc)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert group_is_gone(proc.pid, timeout=20)
    interrupted_status(tmp_path / "out")


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    first, cmd = start(tmp_path)
    wait_for_step(tmp_path / "out", 4, first)
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    (line,) = [x for x in second.stderr.splitlines() if x.startswith("ganbench: error:")]
    assert f"in use by another ganbench run (pid {first.pid} on " in line and "started 20" in line
    os.killpg(first.pid, signal.SIGKILL)  # the holder dies without releasing anything
    finish(first)
    assert group_is_gone(first.pid, timeout=20)
    metrics = run_dir_of(tmp_path / "out") / "metrics.jsonl"
    reached = max(json.loads(x)["step"] for x in metrics.read_text().splitlines()[:-1])

    third, _ = start(tmp_path)
    wait_for_step(tmp_path / "out", reached + 4, third)  # beyond what the first run wrote
    os.killpg(third.pid, signal.SIGTERM)
    code, err = finish(third)
    assert code == 143, err
    assert f"took over the lock of {tmp_path / 'out'} from pid {first.pid}" in " ".join(err.split())  # rich wraps lines
