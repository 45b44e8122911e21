"""The training loop: every built-in plugin trains a step, seeds reproduce, failures are contained,
divergence is caught at its step, and no value is read from the device between log intervals."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ganbench.executor import run_suite
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import build_run, execute, train

CPU = torch.device("cpu")

# (id, [dataset] table, config lines): one run of 2 steps each, covering every built-in plugin.
STEP_CASES = [
    ("dcgan-bce-gaussian", 'name = "mnist5k"', ""),
    ("mlp-images", 'name = "mnist5k"', 'architecture = { name = "mlp", width = 16, hidden_layers = 1 }'),
    ("mlp-ring8", 'name = "ring8"', 'architecture = { name = "mlp", width = 16 }'),
    ("mlp-grid25", 'name = "grid25"', 'architecture = { name = "mlp", width = 16 }'),
    ("minimax", 'name = "mnist5k"', 'loss = "minimax"'),
    ("lsgan", 'name = "mnist5k"', 'loss = "lsgan"'),
    ("hinge", 'name = "mnist5k"', 'loss = "hinge"'),
    ("wgan", 'name = "mnist5k"', 'loss = "wgan"'),
    ("wgan-gp", 'name = "mnist5k"', 'loss = "wgan-gp"'),
    ("uniform-latent", 'name = "mnist5k"', 'latent = "uniform"'),
    ("one-sided-label-smoothing", 'name = "mnist5k"', 'tricks = ["one-sided-label-smoothing"]'),
    ("two-sided-label-smoothing", 'name = "mnist5k"', 'tricks = ["two-sided-label-smoothing"]'),
    ("noisy-labels", 'name = "mnist5k"', 'tricks = [{ name = "noisy-labels", p = 0.5 }]'),
    ("instance-noise", 'name = "mnist5k"', 'tricks = ["instance-noise"]'),
    ("spectral-norm", 'name = "mnist5k"', 'tricks = ["spectral-norm"]'),
    ("ttur", 'name = "mnist5k"', 'tricks = ["ttur"]'),
    ("ema", 'name = "mnist5k"', 'tricks = [{ name = "ema", decay = 0.9 }]'),
    ("all-label-tricks-combined-batch", 'name = "mnist5k"',
     'd_batch = "combined"\ntricks = ["two-sided-label-smoothing", "noisy-labels", "instance-noise", "ema"]'),
    ("image-folder", 'name = "image-folder"\npath = "images"\nresolution = 32\nchannels = 3', ""),
    ("torchvision-mnist", 'name = "mnist"\nroot = "tv"', ""),
]

SUITE = """
[suite]
name = "steps"
question = "Does each plugin train?"
[dataset]
{dataset}
[defaults]
architecture = {{ name = "dcgan", width = 8 }}
batch_size = 8
steps = 2
log_every = 1
eval_every = 2
grid_size = 4
d_updates = 1
metrics = []
[[configs]]
name = "case"
{config}
"""


def make_inputs(tmp_path):
    from PIL import Image
    from test_datasets import write_fake_mnist_raw_folder

    for label in ("cats", "dogs"):
        folder = tmp_path / "images" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 36), (40 * i, 200 if label == "cats" else 10, 90)).save(folder / f"{i}.png")
    from ganbench_plugins.datasets.torchvision_sets import Mnist

    write_fake_mnist_raw_folder(tmp_path / "tv", Mnist.folder, 16)


@pytest.mark.gpu
@pytest.mark.parametrize("dataset,config", [(d, c) for _, d, c in STEP_CASES], ids=[i for i, _, _ in STEP_CASES])
def test_every_builtin_plugin_trains_a_step(write_suite, tmp_path, dataset, config, device):
    make_inputs(tmp_path)
    spec = load_suite(write_suite(SUITE.format(dataset=dataset, config=config))).runs("default")[0]
    run_dir = tmp_path / "run"
    assert execute(spec, run_dir, device) == "completed", (run_dir / "error.txt").read_text()
    records = read_jsonl(run_dir / "metrics.jsonl")
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2]
    for r in train_records:
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert math.isfinite(r[key]), (key, r)
    assert (run_dir / "samples" / "step-0000002.png").stat().st_size > 100
    state = torch.load(run_dir / "checkpoints" / "generator.pt")
    assert state["step"] == 2
    run = build_run(spec, tmp_path / "shape-check", device)
    z = run.hook.ganbench_sample_latent(run=run, n=3)
    assert z.shape == (3, spec.settings.z_dim)
    fake = run.models.generator(z)
    assert fake.shape == (3, *spec.settings.data.shape)
    assert run.models.discriminator(fake).shape == (3,)


@pytest.mark.gpu
def test_the_same_seed_gives_identical_final_weights(tiny_suite, tmp_path, device, deterministic):
    spec = load_suite(tiny_suite('tricks = ["instance-noise", "noisy-labels"]\nsteps = 3')).runs("default")[0]
    weights = []
    for name in ("one", "two"):
        run = build_run(spec, tmp_path / name, device)
        assert train(run)[0] == "completed"
        weights.append({k: v.clone() for k, v in [*run.models.generator.state_dict().items(),
                                                  *(("D." + k, v) for k, v in run.models.discriminator.state_dict().items())]})
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    again = load_suite(tiny_suite('tricks = ["instance-noise", "noisy-labels"]\nsteps = 3', "copy.toml"))
    assert again.runs("default")[0].run_id == spec.run_id  # derived from the resolved config and seed


def test_a_different_seed_gives_different_weights_and_id(tiny_suite, tmp_path):
    path = tiny_suite()
    path.write_text(path.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    a, b = load_suite(path).runs("default")
    assert a.run_id != b.run_id
    runs = [build_run(s, tmp_path / s.run_id, CPU) for s in (a, b)]
    w = [next(iter(r.models.generator.parameters())) for r in runs]
    assert not torch.equal(w[0], w[1])


FAILING_TRICK = '''
"""Test double: a trick that raises at a chosen step, to check that a failed run is contained."""
import ganbench

class RaiseAtStepDouble:
    """Raises RuntimeError at step 1."""
    name = "raise-at-step-double"
    params = None

    @ganbench.hookimpl
    def ganbench_step_end(self, step):
        if step.index == 1:
            raise RuntimeError("injected failure at step 1")

@ganbench.hookimpl
def ganbench_register_tricks():
    return [RaiseAtStepDouble]
'''

NAN_TRICK = '''
"""Test double: a penalty that turns D's loss into NaN from step 3 on."""
import torch
import ganbench

class NanAtStepDouble:
    """Adds NaN to D's loss from step 3."""
    name = "nan-at-step-double"
    params = None

    @ganbench.hookimpl
    def ganbench_discriminator_penalty(self, run, step):
        return torch.tensor(float("nan") if step.index >= 3 else 0.0, device=run.device)

@ganbench.hookimpl
def ganbench_register_tricks():
    return [NanAtStepDouble]
'''


def suite_with_plugin(tiny_suite, tmp_path, plugin_source, extra):
    (tmp_path / "double.py").write_text(plugin_source)
    path = tiny_suite(extra)
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nplugins = ["./double.py"]'))
    return load_suite(path)


@pytest.mark.gpu
def test_a_failing_run_is_recorded_and_the_suite_goes_on(tiny_suite, tmp_path, device):
    suite = suite_with_plugin(tiny_suite, tmp_path, FAILING_TRICK,
                              'tricks = ["raise-at-step-double"]\n[[configs]]\nname = "b"')
    outcomes = run_suite(suite, suite.runs("default"), tmp_path / "out", device, jobs=0)
    assert [(o.spec.config, o.status) for o in outcomes] == [("a", "failed"), ("b", "completed")]
    status = json.loads((outcomes[0].run_dir / "status.json").read_text())
    assert status["reason"] == ("RuntimeError: injected failure at step 1 (in ganbench_step_end of "
                                f"trick:raise-at-step-double, {tmp_path / 'double.py'}:13, during the G update of step 1)")
    assert "Traceback" in (outcomes[0].run_dir / "error.txt").read_text()


@pytest.mark.gpu
def test_a_nan_loss_marks_the_run_diverged_at_that_step(tiny_suite, tmp_path, device):
    suite = suite_with_plugin(tiny_suite, tmp_path, NAN_TRICK,
                              'tricks = ["nan-at-step-double"]\nsteps = 8\nlog_every = 5')
    spec = suite.runs("default")[0]
    assert execute(spec, tmp_path / "run", device) == "diverged"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["reason"] == "non-finite d_penalty at step 3"
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert records[-1]["step"] == 5 and records[-1]["d_penalty"] is None  # NaN is written as null


def test_rerunning_skips_completed_runs(tiny_suite, tmp_path):
    suite = load_suite(tiny_suite())
    first = run_suite(suite, suite.runs("default"), tmp_path / "out", CPU, jobs=0)
    second = run_suite(suite, suite.runs("default"), tmp_path / "out", CPU, jobs=0)
    assert [o.skipped for o in first] == [False] and [o.skipped for o in second] == [True]
    assert second[0].run_dir == first[0].run_dir


class SyncCounter:
    """Counts reads of tensor values on the host (item, tolist, bool/float/int conversion) made by
    ganbench and its plugins. torch's own CPU-side reads (Adam's step counter lives on the host) are
    not device syncs and are not counted."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__")
    TORCH_DIR = str(Path(torch.__file__).parent)

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if not sys._getframe(1).f_code.co_filename.startswith(self.TORCH_DIR):
                    self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("tricks", ['[]', '["instance-noise", "two-sided-label-smoothing", "noisy-labels", "ema"]',
                                    '["spectral-norm"]',
                                    '["conditional", "minibatch-std", "minibatch-discrimination", "r1", "diff-augment"]',
                                    '[{ name = "unrolled", k = 2 }, "adaptive-ratio", "d-lr-decay", "unit-range"]',
                                    # loggers get the records as written: no read of their own
                                    '[]\nloggers = ["tensorboard", "mlflow"]'])
@pytest.mark.gpu
def test_no_host_reads_between_log_intervals(tiny_suite, tmp_path, monkeypatch, tricks, device):
    """Training 12 steps reads the device exactly as often as training 4: once per log interval."""
    counts = []
    for steps in (4, 12):
        spec = load_suite(tiny_suite(f"tricks = {tricks}\nsteps = {steps}\nlog_every = {steps}\n"
                                     f"eval_every = {steps}")).runs("default")[0]
        run = build_run(spec, tmp_path / str(steps), device)
        with monkeypatch.context() as m:
            counter = SyncCounter(m)
            assert train(run)[0] == "completed"
        counts.append(counter.count)
    assert counts[0] == counts[1], counts


def test_wgan_gp_runs_five_critic_steps_per_generator_step(tiny_suite, tmp_path):
    spec = load_suite(tiny_suite('loss = "wgan-gp"')).runs("default")[0]
    assert spec.settings.d_updates == 5
    execute(spec, tmp_path / "run", CPU)
    record = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"][-1]
    assert record["images_seen"] == 2 * 5 * 8 and record["d_penalty"] > 0


def test_a_run_rebuilt_from_its_config_json_is_the_same_run():
    """Run processes rebuild their spec from config.json's content, never from the suite file."""
    from ganbench.suite import spec_from_resolved

    suite = load_suite("suites/stability.toml")
    for spec in suite.runs("smoke"):
        again = spec_from_resolved(json.loads(json.dumps(spec.resolved())), suite.registry)
        assert again.run_id == spec.run_id
        assert again.settings == spec.settings
