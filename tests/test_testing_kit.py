"""`ganbench.testing`, the plugin author's kit: its builders make real objects, `run_plugin` trains a
tiny real run, `check_plugin` refuses each kind of broken plugin (the test doubles below, one
fault each) and passes every built-in plugin of every kind that runs offline in a second."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ganbench
import ganbench.testing as gt
from ganbench.registry import Registry
from ganbench_plugins.tricks import diff_augment, ema, instance_noise


# ---- the builders ---------------------------------------------------------------------------------


def test_tiny_run_is_a_real_run_ready_to_train(one_thread):
    run = gt.tiny_run()
    assert isinstance(run, ganbench.Run) and run.data.shape == (2,) and run.settings.z_dim == 4
    assert run.settings.architecture.name == "mlp" and run.settings.loss.name == "bce"
    assert run.models.generator(torch.zeros(3, 4)).shape == (3, 2)
    assert run.dir.is_dir()
    images = gt.tiny_run(data="images")
    assert images.data.shape == (1, 28, 28) and images.data.num_classes == 10
    assert images.settings.architecture.name == "dcgan"


def test_tiny_batch_draws_like_the_loop(one_thread):
    run = gt.tiny_run()
    batch = gt.tiny_batch(run, n=5)
    assert batch.real.shape == batch.fake.shape == (5, 2) and batch.real_labels.shape == (5,)
    assert batch.fake_labels is None and not batch.fake.requires_grad
    assert gt.tiny_batch(run, phase="g").fake.requires_grad


def test_tiny_scores_targets_and_step():
    scores = gt.tiny_scores(real=[1.0, -1.0], fake=[0.5, 0.0], requires_grad=True)
    assert scores.real.tolist() == [1.0, -1.0] and scores.fake.requires_grad
    drawn = gt.tiny_scores(n=6, seed=3)
    assert drawn.real.shape == (6,) and torch.equal(drawn.fake, gt.tiny_scores(n=6, seed=3).fake)
    targets = gt.tiny_targets(4, real=0.9)
    assert targets.real.tolist() == [pytest.approx(0.9)] * 4 and targets.fake.tolist() == [0.0] * 4
    assert gt.tiny_step(3, "g") == ganbench.Step(3, "g", 0)


# ---- run_plugin -----------------------------------------------------------------------------------


def test_run_plugin_trains_a_module_with_its_params(one_thread):
    result = gt.run_plugin(instance_noise, steps=3, params={"sigma": 0.5})
    assert result.status == "completed" and result.setup == "points"
    assert [r["step"] for r in result.records] == [1, 2, 3] and len(result.losses) == 3
    assert result.evals[-1]["step"] == 3
    assert isinstance(result.plugin, instance_noise.InstanceNoise) and result.plugin.p.sigma == 0.5


def test_run_plugin_refuses_bad_params_as_a_suite_would(one_thread):
    with pytest.raises(ganbench.UsageError, match=r"tricks\[0\]\.sigma = -1\.0: .*greater than 0"):
        gt.run_plugin(instance_noise, params={"sigma": -1.0})
    with pytest.raises(ganbench.UsageError, match='unknown key \\(did you mean "sigma"\\?\\)'):
        gt.run_plugin(instance_noise, params={"sigmaa": 0.1})


def test_run_plugin_moves_to_images_when_the_plugin_refuses_points(one_thread):
    assert gt.run_plugin(diff_augment, steps=1).setup == "images"


def test_a_plugin_class_that_is_not_installed_needs_its_kind(one_thread):
    with pytest.raises(ValueError, match="pass kind="):
        gt.run_plugin(CountingDouble)
    assert gt.run_plugin(CountingDouble, steps=2, kind="trick").plugin.count == 2


# ---- check_plugin on broken test doubles: one fault each ---------------------------------------------


class NanInputsDouble:
    """Test double: makes D's fake inputs NaN."""

    name = "nan-inputs"
    params = None

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, batch):
        batch.fake = batch.fake * float("nan")


UNSEEDED = torch.Generator().manual_seed(0)  # shared by every run, so no two runs draw alike


class UnseededNoiseDouble:
    """Test double: noise drawn from a generator of its own instead of run.rng."""

    name = "unseeded-noise"
    params = None

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, batch):
        batch.real = batch.real + 0.1 * torch.randn(batch.real.shape, generator=UNSEEDED)


class CountingDouble:
    """Test double: counts steps in an attribute and saves nothing."""

    name = "counting"
    params = None

    def __init__(self):
        self.count = 0

    @ganbench.hookimpl
    def ganbench_step_end(self):
        self.count += 1


class ForgetfulScheduleDouble:
    """Test double: a schedule whose step count is declared a cache, so a resumed run restarts it."""

    name = "forgetful-schedule"
    params = None
    transient = ("count",)

    def __init__(self):
        self.count = 0

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, batch):
        batch.real = batch.real * (1.0 + 0.1 * self.count)

    @ganbench.hookimpl
    def ganbench_step_end(self):
        self.count += 1


class NoHooksDouble:
    """Test double: a trick that does nothing."""

    name = "no-hooks"
    params = None


class NoDocstringDouble:
    name = "no-docstring"
    params = None

    @ganbench.hookimpl
    def ganbench_step_end(self):
        pass


class MisspeltHookDouble:
    """Test double: a hook name that is not a hookspec."""

    name = "misspelt-hook"
    params = None

    @ganbench.hookimpl
    def ganbench_step_ends(self):
        pass


@dataclass(frozen=True)
class UntypedParams:
    scale: Any = 1.0  # takes anything at all


@dataclass(frozen=True)
class UndescribedParams:
    scale: float = 1.0


@dataclass(frozen=True)
class BadDefaultParams:
    p: ganbench.Probability = 1.5  # a probability out of its own range


@dataclass
class MutableParams:
    scale: float = 1.0  # a field of a dataclass that is not frozen


def params_double(params_cls: type) -> type:
    """Test double: a trick whose params class is `params_cls`."""

    class ParamsDouble:
        """Test double: scales D's real inputs."""

        name = f"params-{params_cls.__name__.lower()}"
        params = params_cls

        def __init__(self, params):
            self.p = params

        @ganbench.hookimpl
        def ganbench_step_end(self):
            pass

    return ParamsDouble


class VectorLossDouble:
    """Test double: a loss whose G loss is one value per sample, not a scalar."""

    name = "vector-loss"
    params = None
    uses_targets = False
    scores = "logit"

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores):
        return F.softplus(-scores.real).mean() + F.softplus(scores.fake).mean()

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores):
        return F.softplus(-scores.fake)


class KindlessDetectorDouble:
    """Test double: a detector that declares no incident kinds."""

    name = "kindless"
    params = None

    @ganbench.hookimpl
    def ganbench_detect(self, record):
        return None


def misspelt_registration_module() -> ModuleType:
    """Test double: a plugin module whose registration hook is misspelt."""
    module = ModuleType("misspelt_registration_double")
    module.ganbench_register_trick = ganbench.hookimpl(lambda: [NoHooksDouble])
    return module


BROKEN = [
    (NanInputsDouble, "trick", "trains", "ended diverged: non-finite"),
    (UnseededNoiseDouble, "trick", "seeded", r"two runs of seed 0 differ: run\.records\[0\]\."),
    (CountingDouble, "trick", "stateless", r"trick:counting \(attributes count\)"),
    (ForgetfulScheduleDouble, "trick", "resumes", "a run resumed at step 1 ends otherwise"),
    (NoHooksDouble, "trick", "hooks", "it changes nothing"),
    (NoDocstringDouble, "trick", "summary", "no docstring"),
    (MisspeltHookDouble, "trick", "loads", 'did you mean "ganbench_step_end"'),
    (params_double(UntypedParams), "trick", "params", "field scale .* accepts"),
    (params_double(UndescribedParams), "trick", "params", "field scale has no description"),
    (params_double(BadDefaultParams), "trick", "params", r"a default does not validate: params\.p = 1\.5"),
    (params_double(MutableParams), "trick", "params", "not a frozen dataclass"),
    (VectorLossDouble, "loss", "trains", "RuntimeError: grad can be implicitly created only for scalar"),
    (KindlessDetectorDouble, "detector", "detector", "kinds = None"),
]


@pytest.mark.parametrize("double,kind,check,why", BROKEN, ids=[f"{b[2]}-{b[0].name}" for b in BROKEN])
def test_check_plugin_refuses_a_broken_plugin(one_thread, double, kind, check, why):
    with pytest.raises(gt.PluginCheckFailed, match=rf'{check}: .*{why}'):
        gt.check_plugin(double, kind)


def test_a_misspelt_registration_hook_fails_to_load():
    with pytest.raises(gt.PluginCheckFailed, match="misspelt_registration_double: loads: .*ganbench_register_trick"):
        gt.check_plugin(misspelt_registration_module())


def test_check_plugin_passes_a_good_module_and_says_what_it_checked(one_thread):
    (checked,) = gt.check_plugin(ema)
    assert (checked.kind, checked.name, checked.setup) == ("trick", "ema", "points")
    assert checked.checks == ("loads", "summary", "params", "hooks", "trains (points, 3 steps)", "trick",
                              "seeded", "stateless", "resumes")


# ---- every built-in plugin passes ---------------------------------------------------------------------

# Not checked here: fid (needs offline Inception weights), classifier (trains a CNN and caches it
# in the user's cache folder; tests/test_classifier.py covers it), and the datasets whose files
# must be downloaded first.
SKIPPED = {("metric", "fid"), ("metric", "classifier"), ("dataset", "mnist"), ("dataset", "fashion-mnist"),
           ("dataset", "cifar10"), ("dataset", "celeba"), ("dataset", "image-folder")}
PARAMS = {("architecture", "dcgan"): {"width": 4}, ("architecture", "progressive-dcgan"): {"width": 4}}


def _builtins() -> list[tuple[str, str]]:
    registry = Registry()
    return [(e.kind, e.name) for e in registry.entries()
            if e.source.startswith("ganbench ") and (e.kind, e.name) not in SKIPPED]


@pytest.mark.parametrize("kind,name", _builtins(), ids=[f"{k}-{n}" for k, n in _builtins()])
def test_every_builtin_plugin_conforms(one_thread, kind, name):
    cls = Registry().table[kind][name].cls
    (checked,) = gt.check_plugin(cls, kind, params=PARAMS.get((kind, name)))
    if kind == "check":  # a doctor check diagnoses a run; it never trains in one
        assert checked.checks[-1] == "diagnoses"
    elif kind == "executor":  # it trains whole runs in its engine: tests/test_executors*.py run each one
        assert checked.checks[-1] == "hooks"
    else:
        assert "seeded" in checked.checks and "resumes" in checked.checks
