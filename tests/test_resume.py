"""Checkpoints and resume: a run killed with SIGKILL at an arbitrary step and then resumed ends
bit-identical to an uninterrupted run of the same seed (weights, buffers, optimizer states,
plugin states and every metrics.jsonl value but wall-clock times); checkpoints load weights-only
and are refused in one line when they belong to other code; every built-in plugin either saves
its state or keeps none."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ganbench
from ganbench import checkpoint
from ganbench.errors import UsageError
from ganbench.interrupt import StopRequest
from ganbench.registry import Registry
from ganbench.suite import load_suite
from ganbench.trainer import build_run, execute, train

CPU = torch.device("cpu")
GANBENCH = [sys.executable, "-m", "ganbench.cli"]
WALL_CLOCK = ("sec_per_step", "elapsed_s")  # the only values a resumed run may differ in

PARITY_SUITE = """
[suite]
name = "parity"
question = "Does a resumed run end where an uninterrupted one does?"
seeds = [3]

[dataset]
name = "mnist5k"

[defaults]
batch_size = 16
steps = 36
log_every = 4
eval_every = 12
checkpoint_every = 5
grid_size = 4
metrics = []

[[configs]]
name = "plain"
architecture = { name = "dcgan", width = 8 }
tricks = [{ name = "lr-decay", start_fraction = 0.25, final_scale = 0.1 }]  # the rate follows the step across a resume

[[configs]]
name = "stateful"
architecture = { name = "progressive-dcgan", width = 8 }
tricks = [{ name = "ema", decay = 0.9 }, { name = "adaptive-ratio", strong_acc = 0.6, weak_acc = 0.5 },
          { name = "unrolled", k = 2 }, { name = "instance-noise", sigma = 0.5 },
          { name = "d-lr-decay", loss_floor = 2.0 }]
"""


def ganbench_run(suite: Path, out: Path, config: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels in every process: bit-identical reruns
    return subprocess.Popen([*GANBENCH, "run", str(suite), "--out", str(out), "--scale", "default", "--only", config,
                             "--jobs", "0", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run_dir_of(out: Path) -> Path:
    (run,) = (out / "runs").iterdir()
    return run


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until metrics.jsonl has a train record at `step` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for metrics in (out / "runs").glob("*/metrics.jsonl"):
            lines = [json.loads(x) for x in metrics.read_text().splitlines()[:-1]]  # the last may be half-written
            if any(r.get("kind") == "train" and r["step"] >= step for r in lines):
                return
        time.sleep(0.05)
    raise AssertionError(f"no record at step {step} within {timeout} s")


def comparable(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in map(json.loads, path.read_text().splitlines())]


def assert_identical(a, b, where: str = "checkpoint") -> None:
    """Tensors equal bit for bit (NaN in the same places), everything else equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b) or torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("config,kill_at", [("plain", 13), pytest.param("stateful", 22, marks=pytest.mark.slow)])
def test_a_run_killed_with_sigkill_resumes_bit_identical(tmp_path, config, kill_at):
    suite = tmp_path / "parity.toml"
    suite.write_text(PARITY_SUITE)
    reference = ganbench_run(suite, tmp_path / "reference", config)

    killed = ganbench_run(suite, tmp_path / "killed", config)
    wait_for_step(tmp_path / "killed", kill_at, killed)
    os.killpg(killed.pid, signal.SIGKILL)  # the whole process group, as the OOM killer or a lost node would
    assert finish(killed)[0] == -signal.SIGKILL
    run = run_dir_of(tmp_path / "killed")
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # nothing could record the end
    saved_at = torch.load(run / checkpoint.FILE, weights_only=True)["meta"]["step"]
    assert 0 < saved_at < 36 and saved_at % 5 == 0

    code, err = finish(ganbench_run(suite, tmp_path / "killed", config))
    assert code == 0, err
    assert "resume from their checkpoints" in err
    assert finish(reference)[0] == 0

    ref_run = run_dir_of(tmp_path / "reference")
    assert ref_run.name == run.name
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 36
    assert [r["from_step"] for r in status["resumed"]] == [saved_at]
    a = torch.load(ref_run / checkpoint.FILE, weights_only=True)
    b = torch.load(run / checkpoint.FILE, weights_only=True)
    for part in ("models", "eval_generator", "optimizers", "updates", "plugins", "rng"):
        assert_identical(a[part], b[part], part)
    assert_identical({k: v for k, v in a["loop"].items() if k != "elapsed_s"},
                     {k: v for k, v in b["loop"].items() if k != "elapsed_s"}, "loop")
    assert comparable(ref_run / "metrics.jsonl") == comparable(run / "metrics.jsonl")
    incidents = [(r / "incidents.jsonl").read_text() if (r / "incidents.jsonl").exists() else None for r in (ref_run, run)]
    assert incidents[0] == incidents[1]
    if config == "plain":  # the resumed run went on at the decayed rate, not the configured one
        rates = [r["lr_g"] for r in comparable(run / "metrics.jsonl") if r["kind"] == "train"]
        assert min(rates) < 0.2 * max(rates)
    if config == "stateful":  # the tricks did act, so their state was worth carrying over
        records = [r for r in comparable(run / "metrics.jsonl") if r["kind"] == "train"]
        assert {r["g_updates"] for r in records} != {1}
        assert min(r["d_lr_scale"] for r in records) < 1
        assert len({r["resolution"] for r in records}) > 1


# ---- in-process unit tests ------------------------------------------------------------------------

# Config keys override the conftest suite's [defaults] (2 steps, logged at every step).
LONGER = """
steps = {steps}
log_every = 2
eval_every = 4
checkpoint_every = 3
"""


@pytest.fixture
def tiny_spec(tiny_suite):
    """tiny_spec(extra, steps) -> the one run of conftest's tiny suite, with checkpoints every 3 steps."""

    def make(extra: str = "", steps: int = 6):
        return load_suite(tiny_suite(LONGER.format(steps=steps) + extra)).runs("default")[0]

    return make


def test_checkpoints_load_weights_only_and_name_the_code_that_wrote_them(tmp_path, one_thread, tiny_spec):
    spec = tiny_spec()
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    state = torch.load(tmp_path / "run" / checkpoint.FILE, weights_only=True)
    assert state["meta"]["run_id"] == spec.run_id and state["meta"]["ganbench"] == ganbench.__version__
    assert state["meta"]["plugin_code"] == checkpoint.plugin_code_hash(spec.settings)
    assert state["meta"]["resumable"] and state["meta"]["step"] == 6
    assert oct((tmp_path / "run" / checkpoint.FILE).stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_checkpoint_of_other_plugin_code_is_refused_in_one_line(tmp_path, one_thread, tiny_spec):
    spec = tiny_spec()
    run_dir = tmp_path / "run"
    assert execute(spec, run_dir, CPU) == "completed"
    state = torch.load(run_dir / checkpoint.FILE, weights_only=True)
    state["meta"]["plugin_code"] = "0" * 16
    torch.save(state, run_dir / checkpoint.FILE)
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(UsageError) as err:
        checkpoint.plan(spec, run_dir)
    message = str(err.value)
    assert "\n" not in message and "plugin code hash" in message and "--restart" in message
    assert checkpoint.plan(spec, run_dir, restart=True).state is None


def test_a_checkpoint_of_another_device_type_is_refused_in_one_line(tmp_path, one_thread, tiny_spec):
    spec = tiny_spec()
    run_dir = tmp_path / "run"
    assert execute(spec, run_dir, CPU) == "completed"
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    assert checkpoint.plan(spec, run_dir, device=CPU).state is not None
    with pytest.raises(UsageError, match=r"written on cpu and would continue on cuda.*--restart"):
        checkpoint.plan(spec, run_dir, device=torch.device("cuda"))


def test_a_checkpoint_that_is_not_one_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "ran"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"payload": Payload(marker)}, run_dir / checkpoint.FILE)  # a pickle that would create `marker`
    with pytest.raises(UsageError, match="not a readable ganbench checkpoint"):
        checkpoint.read(run_dir)
    assert not marker.exists()


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_resumed_run_continues_the_interrupted_one_in_process(tmp_path, one_thread, tiny_spec):
    """The same parity as the SIGKILL test, in one process: stopped after step 4 by a stop request."""
    spec = tiny_spec(steps=10, extra='tricks = [{ name = "ema", decay = 0.5 }]')
    reference = build_run(spec, tmp_path / "ref", CPU)
    assert train(reference) == ("completed", None)

    stop = StopRequest()
    records = []

    def progress(record):
        records.append(record)
        if record["step"] == 4:
            stop.request(signal.SIGTERM)

    assert execute(spec, tmp_path / "run", CPU, progress=progress, stop=stop) == "interrupted"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["step"] == 4
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    resumed = torch.load(tmp_path / "run" / checkpoint.FILE, weights_only=True)
    for name, tensor in reference.models.generator.state_dict().items():
        assert torch.equal(tensor, resumed["models"]["generator"][name]), name
    ema = reference.plugins["trick:ema"].generator.state_dict()
    for name, tensor in ema.items():
        assert torch.equal(tensor, resumed["plugins"]["trick:ema"]["generator"][name]), name
    assert comparable(tmp_path / "ref" / "metrics.jsonl") == comparable(tmp_path / "run" / "metrics.jsonl")


STATEFUL_TRICK = '''
import ganbench

class Counter:
    """Counts steps in an attribute, and saves nothing."""
    name = "counter"
    params = None

    def __init__(self):
        self.count = 0

    @ganbench.hookimpl
    def ganbench_step_end(self):
        self.count += 1

@ganbench.hookimpl
def ganbench_register_tricks():
    return [Counter]
'''


def test_a_plugin_with_undeclared_state_makes_its_run_restart_and_say_why(tmp_path, one_thread, tiny_suite):
    (tmp_path / "counter.py").write_text(STATEFUL_TRICK)
    path = tiny_suite(LONGER.format(steps=6) + 'tricks = ["counter"]')
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nplugins = ["counter.py"]'))
    spec = load_suite(path).runs("default")[0]
    run_dir = tmp_path / "run"
    assert execute(spec, run_dir, CPU) == "completed"
    meta = torch.load(run_dir / checkpoint.FILE, weights_only=True)["meta"]
    assert not meta["resumable"] and "trick:counter (attributes count)" in meta["not_resumable_because"][0]
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    plan = checkpoint.plan(spec, run_dir)
    assert plan.state is None and "trick:counter" in plan.note and "ganbench_state_dict" in plan.note


def _builtin_trick_cases() -> list[tuple[str, str]]:
    """(trick, extra config lines) for every built-in trick, each in a setting it accepts."""
    needs = {"conditional": 'tricks = ["conditional"]',
             "minibatch-discrimination": 'tricks = ["minibatch-discrimination"]',
             "r1": 'tricks = ["r1"]'}
    names = Registry().names("trick")
    return [(name, needs.get(name, f'tricks = ["{name}"]')) for name in names]


@pytest.mark.parametrize("name,extra", _builtin_trick_cases(), ids=[n for n, _ in _builtin_trick_cases()])
def test_every_builtin_trick_resumes(tmp_path, one_thread, tiny_spec, name, extra):
    """A built-in trick either saves its state through the hook pair or keeps none: its run's
    checkpoints are resumable, and a run resumed at step 3 ends where an uninterrupted one does."""
    spec = tiny_spec(extra=extra)
    reference = build_run(spec, tmp_path / "ref", CPU)
    assert train(reference)[0] == "completed"
    meta = torch.load(tmp_path / "ref" / checkpoint.FILE, weights_only=True)["meta"]
    assert meta["resumable"], meta["not_resumable_because"]

    stop = StopRequest()
    assert execute(spec, tmp_path / "run", CPU, stop=stop,
                   progress=lambda r: r["step"] == 2 and stop.request(signal.SIGTERM)) == "interrupted"
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    resumed = torch.load(tmp_path / "run" / checkpoint.FILE, weights_only=True)
    for network in ("generator", "discriminator"):
        for key, tensor in getattr(reference.models, network).state_dict().items():
            assert torch.equal(tensor, resumed["models"][network][key]), f"{network}.{key}"
    assert comparable(tmp_path / "ref" / "metrics.jsonl") == comparable(tmp_path / "run" / "metrics.jsonl")


def test_plain_state_round_trips_detector_helpers():
    from ganbench.detection import Baseline, Sustained

    class Detector:
        def __init__(self):
            self.p = object()
            self.sustained = Sustained(3)
            self.baselines = {"g": Baseline(1, 2)}
            self.active = {"x"}
            self.best = None

    a = Detector()
    a.sustained.update(True, 10)
    a.baselines["g"].update(1.0), a.baselines["g"].update(2.0), a.baselines["g"].update(4.0)
    a.active.add("y")
    a.best = (5, 0.5)
    state = ganbench.plain_state(a)
    checkpoint.check_safe(state, "state")
    b = Detector()
    ganbench.load_plain_state(b, state)
    assert (b.sustained.streak, b.sustained.start_step) == (1, 10)
    assert b.baselines["g"].value == 3.0 and isinstance(b.baselines["g"], Baseline)
    assert b.active == {"x", "y"} and b.best == (5, 0.5)
