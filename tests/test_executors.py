"""The executor plugin kind: the [executor] table and --executor flags are validated like every
other input (one line, a did-you-mean, exit 2), a missing engine names its extra, the executor
never enters a run's identity, `ganbench status` reads run folders alone, and submitit's
DebugExecutor trains a suite to the same numbers as the local executor. The engines' end-to-end
tests (real Ray, submitit's LocalExecutor, faults) are in test_executors_engines.py."""
from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

import pytest
import torch

from ganbench import executors
from ganbench.cli import main
from ganbench.errors import UsageError
from ganbench.executor import run_suite
from ganbench.registry import Registry
from ganbench.rundir import write_json
from ganbench.status import run_state
from ganbench.suite import load_suite

CPU = torch.device("cpu")
WALL_CLOCK = ("sec_per_step", "elapsed_s")

# Two seeds of a tiny MLP on the 8-Gaussian ring: a couple of seconds each on one CPU thread.
SUITE = """
[suite]
name = "exec"
question = "Does every executor give the same answers?"
seeds = [0, 1]
{plugins}

[dataset]
name = "ring8"

[defaults]
architecture = {{ name = "mlp", width = 16 }}
batch_size = 16
steps = {steps}
log_every = 5
eval_every = 20
checkpoint_every = 10
grid_size = 16
metrics = []

[[configs]]
name = "a"
{extra}
{table}
"""

# A trick that raises at step 3: the run fails with its reason, and the suite goes on.
BOOM = '''"""Raises at step 3, so a test sees one run fail and the others complete."""
import ganbench


class Boom:
    """Raises ValueError at step 3."""

    name = "boom"
    params = None

    def __init__(self, params=None):
        pass

    @ganbench.hookimpl
    def ganbench_step_end(self, run, step):
        if step.index == 3:
            raise ValueError("boom at step 3")


@ganbench.hookimpl
def ganbench_register_tricks():
    return [Boom]
'''


def write(tmp_path: Path, steps: int = 40, table: str = "", boom: bool = False) -> Path:
    extra = '\n[[configs]]\nname = "boom"\ntricks = ["boom"]\n' if boom else ""
    if boom:
        (tmp_path / "boom.py").write_text(BOOM)
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(steps=steps, table=table, extra=extra,
                                 plugins='plugins = ["boom.py"]' if boom else ""))
    return path


def comparable(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in map(json.loads, path.read_text().splitlines())]


def test_the_executor_kind_lists_the_builtins():
    registry = Registry()
    assert {"local", "ray", "slurm"} <= set(registry.names("executor"))
    assert registry.table["executor"]["ray"].source.startswith("ganbench ")


def test_an_executor_table_is_validated_with_a_did_you_mean(tmp_path):
    path = write(tmp_path, table='[executor]\nname = "ray"\nmax_retires = 2\n')
    with pytest.raises(UsageError, match=r'executor\.max_retires: unknown key \(did you mean "max_retries"\?\)'):
        load_suite(path)
    path = write(tmp_path, table='[executor]\nname = "rey"\n')
    with pytest.raises(UsageError, match=r'executor.name = "rey": unknown executor \(did you mean "ray"\?\)'):
        load_suite(path)
    path = write(tmp_path, table='[executor]\nname = "slurm"\ntimeout_min = "an hour"\n')
    with pytest.raises(UsageError, match=r"executor\.timeout_min = \"an hour\".*expected int"):
        load_suite(path)


def test_the_executor_is_not_part_of_a_run_id(tmp_path):
    plain = load_suite(write(tmp_path)).runs("default")
    ray = load_suite(write(tmp_path, table='[executor]\nname = "ray"\nmax_retries = 1\ncpus_per_run = 2\n'))
    assert ray.executor.name == "ray" and ray.executor.options == {"max_retries": 1, "cpus_per_run": 2}
    assert [s.run_id for s in ray.runs("default")] == [s.run_id for s in plain]
    assert [s.resolved() for s in ray.runs("default")] == [s.resolved() for s in plain]


def test_the_cli_refuses_bad_executor_flags_in_one_line(tmp_path, capsys):
    path = str(write(tmp_path))
    cases = [
        (["--executor", "rey"], r'--executor = "rey": unknown executor \(did you mean "ray"\?\)'),
        (["--executor", "ray", "--executor-option", "max_retires=2"],
         r'--executor-option max_retires: unknown key \(did you mean "max_retries"\?\)'),
        (["--executor", "ray", "--executor-option", "max_retries"], r"expected KEY=VALUE"),
        (["--executor", "slurm", "--executor-option", "cluster=slrum"], r"--executor-option cluster = \"slrum\""),
        (["--detach"], r"--detach: the local executor trains while"),
        (["--executor", "ray", "--jobs", "0"], r"--jobs 0 trains in this process"),
    ]
    for flags, message in cases:
        code = main(["run", path, "--out", str(tmp_path / "out"), "--scale", "default", *flags])
        err = capsys.readouterr().err
        assert code == 2, (flags, err)
        assert len(err.strip().splitlines()) == 1 and re_search(message, err), (flags, err)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


@pytest.mark.parametrize("name,module,extra", [("ray", "ray", "ray"), ("slurm", "submitit", "slurm")])
def test_an_engine_that_is_not_installed_names_its_extra(tmp_path, capsys, monkeypatch, name, module, extra):
    real = importlib.import_module

    def without(target, *args, **kwargs):
        if target == module or target.startswith(module + "."):
            raise ModuleNotFoundError(f"No module named '{module}'")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(executors.importlib, "import_module", without)
    code = main(["run", str(write(tmp_path)), "--out", str(tmp_path / "out"), "--executor", name])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (f'ganbench: error: --executor = "{name}": the {name} executor needs the {module} package, '
                           f"which is not installed: pip install 'ganbench[{extra}]'")
    load_suite(write(tmp_path, table=f'[executor]\nname = "{name}"\n'))  # validating a suite needs no engine


def test_option_values_read_as_toml():
    assert executors.parse_options(["a=2", "b=0.5", "c=true", "d=auto", 'e="x y"', "f={account = \"g\"}"]) == {
        "a": 2, "b": 0.5, "c": True, "d": "auto", "e": "x y", "f": {"account": "g"}}


def test_a_retry_of_one_submission_never_restarts_twice(tmp_path):
    assert executors.first_attempt(tmp_path, "t1") is True
    assert executors.first_attempt(tmp_path, "t1") is False  # the worker died; its retry resumes
    assert executors.first_attempt(tmp_path, "t2") is True  # a new `ganbench run --restart`


def test_new_train_records_skip_half_written_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 5}\n{"kind": "eval", "step": 5}\n{"kind": "train", "st')
    records, offset = executors.new_train_records(path, 0)
    assert records == [{"kind": "train", "step": 5}]
    with path.open("a") as f:
        f.write('ep": 10}\n')
    records, offset = executors.new_train_records(path, offset)
    assert records == [{"kind": "train", "step": 10}] and offset == path.stat().st_size
    path.write_text('{"kind": "train", "step": 0}\n')  # trained again from step 0: the file shrank
    assert executors.new_train_records(path, offset)[0] == [{"kind": "train", "step": 0}]


def test_status_reads_each_state_from_the_run_folders(tmp_path, capsys):
    runs = tmp_path / "runs"
    now = time.time()
    folders = {name: runs / name for name in ("queued", "running", "done", "failed", "requeued", "new")}
    for name in ("queued", "requeued"):
        write_json(folders[name] / "executor" / "submitted.json", {"executor": "slurm", "job_id": "42", "submitted": now})
    write_json(folders["running"] / "status.json", {"status": "running", "step": 10})
    write_json(folders["running"] / "executor" / "worker.json", {"pid": 1, "host": "node7", "attempt": 2, "started": now})
    write_json(folders["done"] / "status.json", {"status": "completed", "step": 40, "steps": 40})
    write_json(folders["failed"] / "status.json", {"status": "failed", "step": 3, "reason": "ValueError: boom"})
    write_json(folders["requeued"] / "status.json", {"status": "interrupted", "step": 20})
    write_json(folders["requeued"] / "executor" / "worker.json", {"pid": 1, "started": now - 60})
    folders["new"].mkdir(parents=True)
    write_json(tmp_path / "suite.json", {"runs": list(folders)})
    states = {name: run_state(folder) for name, folder in folders.items()}
    assert {n: s["state"] for n, s in states.items()} == {
        "queued": "queued", "running": "running", "done": "completed", "failed": "failed", "requeued": "queued",
        "new": "not started"}
    assert states["running"]["host"] == "node7" and states["running"]["quiet_s"] is not None
    assert states["queued"]["job"] == "42"
    assert main(["status", str(tmp_path), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["run"] for x in lines] == list(folders)
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 queued, 1 running, 1 failed, 1 completed, 1 not started (of 6)" in " ".join(out.split())
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_submitit_debug_executor_gives_the_local_numbers(tmp_path, monkeypatch):
    """submitit's DebugExecutor runs each job in this process, through the same RunJob as SLURM;
    with one thread, its metrics.jsonl and checkpoints equal the in-process local run's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    suite = load_suite(write(tmp_path, steps=20))
    specs = suite.runs("default")
    try:
        torch.set_num_threads(1)
        local = run_suite(suite, specs, tmp_path / "local", CPU, jobs=0, threads=1)
        debug = run_suite(suite, specs, tmp_path / "debug", CPU, threads=1, executor="slurm",
                          executor_options={"cluster": "debug", "poll_s": 0.05})
    finally:
        torch.set_num_threads(before)
    assert [o.status for o in local] == [o.status for o in debug] == ["completed", "completed"]
    for spec in specs:
        a, b = tmp_path / "local" / "runs" / spec.run_id, tmp_path / "debug" / "runs" / spec.run_id
        assert comparable(a / "metrics.jsonl") == comparable(b / "metrics.jsonl")
        sa, sb = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (a, b))
        for part in ("models", "optimizers", "rng"):
            assert_equal(sa[part], sb[part])
        assert json.loads((b / "executor" / "submitted.json").read_text())["executor"] == "slurm"
    assert torch.get_num_threads() == before and os.environ["OMP_NUM_THREADS"] == "1"


def assert_equal(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal(x, y)
    else:
        assert a == b


def test_a_run_another_process_trains_is_left_alone(tmp_path, capsys):
    # A job submitted twice (a suite re-run while its detached jobs still train) must not put a second
    # trainer into the run's folder. A stand-in for the first trainer holds the run's lock from another
    # process; the suite's run then ends at once naming it, and writes nothing into the folder. Once that
    # process is killed (kill -9: the kernel drops its lock), the same command trains the run.
    import signal
    import subprocess
    import sys

    suite = write(tmp_path, steps=20)
    spec = load_suite(suite).runs("default")[0]
    run_dir = tmp_path / "out" / "runs" / spec.run_id
    (run_dir / executors.EXECUTOR_DIR).mkdir(parents=True)
    write_json(run_dir / executors.EXECUTOR_DIR / executors.WORKER, {"pid": 4242, "host": "node7", "attempt": 1})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from ganbench.executors import trainer_lock\n"
        f"with trainer_lock(Path({str(run_dir)!r})):\n    print('held', flush=True); time.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run_dir.rglob("*"))
        main(["run", str(suite), "--out", str(tmp_path / "out"), "--scale", "default", "--jobs", "1", "--only", "a"])
        err = capsys.readouterr().err
        assert "another process is training this run (pid 4242 on node7" in " ".join(err.split())
        assert sorted(p.name for p in run_dir.rglob("*")) == before  # no status, metrics or checkpoint written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--scale", "default", "--jobs", "1"]) == 0
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_stopping_the_wait_names_the_jobs_that_go_on(tmp_path, capsys):
    # Ctrl-C while following SLURM jobs leaves them to the cluster: the last line must say they go on and
    # how to follow them, not call them "not started" and ask for the command that would submit them twice.
    from types import SimpleNamespace

    from ganbench.cli import _stopped

    suite = write(tmp_path)
    specs = load_suite(suite).runs("default")
    out = tmp_path / "out"
    queued = out / "runs" / specs[0].run_id / executors.EXECUTOR_DIR
    queued.mkdir(parents=True)
    write_json(queued / executors.SUBMITTED, {"executor": "slurm", "submitted": time.time(), "job_id": "77"})
    stop_record = SimpleNamespace(name="SIGINT", signum=2)  # a stand-in for the suite's StopRequest
    assert _stopped(stop_record, [], specs, out) == 130
    line = " ".join(capsys.readouterr().err.split())
    assert "1 still queued or training under the executor, 1 not started" in line
    assert f"ganbench status {out}" in line and "once they have ended" in line
    (queued / executors.SUBMITTED).unlink()
    _stopped(stop_record, [], specs, out)
    assert "0 interrupted, 2 not started" in " ".join(capsys.readouterr().err.split())
