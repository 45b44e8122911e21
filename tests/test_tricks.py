"""Unit tests for the built-in tricks in plugins/tricks/: tiny CPU tensors, each test well under a second.

The trick modules are imported directly (not through ganbench.registry.Registry, which loads every
installed entry point) and driven with hand-built `ganbench.Run`/`Step`/`Batch`/`Targets` objects.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import ganbench
from ganbench.registry import new_plugin_manager, run_plugin_manager
from ganbench_plugins.tricks import (
    ema,
    instance_noise,
    noisy_labels,
    one_sided_label_smoothing,
    spectral_norm,
    ttur,
    two_sided_label_smoothing,
)

TRICK_MODULES = [
    one_sided_label_smoothing,
    two_sided_label_smoothing,
    noisy_labels,
    instance_noise,
    spectral_norm,
    ttur,
    ema,
]
LABEL_TRICKS = [
    one_sided_label_smoothing.OneSidedLabelSmoothing,
    two_sided_label_smoothing.TwoSidedLabelSmoothing,
    noisy_labels.NoisyLabels,
]


def make_run(seed: int = 0, steps: int = 100) -> ganbench.Run:
    settings_double = SimpleNamespace(steps=steps)
    return ganbench.Run(
        settings=settings_double,
        seed=seed,
        device=torch.device("cpu"),
        data=None,
        dir=Path("unused"),
        hook=None,
        rng=torch.Generator().manual_seed(seed),
    )


def make_targets(n: int) -> ganbench.Targets:
    return ganbench.Targets(real=torch.ones(n), fake=torch.zeros(n))


D_STEP = ganbench.Step(index=0, phase="d")


# --------------------------------------------------------------------------------------------------
# Registration: every module registers one class whose hooks match hookspecs.py
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", TRICK_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_registers_one_trick_with_valid_hooks(module: ModuleType) -> None:
    pm = new_plugin_manager()
    pm.register(module)
    (classes,) = pm.hook.ganbench_register_tricks()
    assert len(classes) == 1
    cls = classes[0]
    assert cls.name == module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    # pluggy refuses hookimpls whose argument names are not in the spec.
    new_plugin_manager().register(cls(cls.params()))
    assert module.__doc__ and cls.__doc__


# --------------------------------------------------------------------------------------------------
# Label tricks
# --------------------------------------------------------------------------------------------------


def test_one_sided_smoothing_sets_real_targets_only() -> None:
    targets = make_targets(8)
    original_real = targets.real
    trick = one_sided_label_smoothing.OneSidedLabelSmoothing(one_sided_label_smoothing.Params())
    trick.ganbench_discriminator_targets(targets=targets)
    assert torch.equal(targets.real, torch.full((8,), 0.9))
    assert torch.equal(targets.fake, torch.zeros(8))
    assert torch.equal(original_real, torch.ones(8))  # a tensor the core may reuse is not overwritten


def test_two_sided_smoothing_draws_per_sample_within_ranges() -> None:
    targets = make_targets(1000)
    trick = two_sided_label_smoothing.TwoSidedLabelSmoothing(two_sided_label_smoothing.Params())
    trick.ganbench_discriminator_targets(run=make_run(), targets=targets)
    assert targets.real.min() >= 0.7 and targets.real.max() <= 1.2
    assert targets.fake.min() >= 0.0 and targets.fake.max() <= 0.3
    assert targets.real.unique().numel() > 900 and targets.fake.unique().numel() > 900
    # Uniform on [0.7, 1.2] has mean 0.95 and std 0.5 / sqrt(12) ≈ 0.144.
    assert abs(targets.real.mean() - 0.95) < 0.02 and abs(targets.fake.mean() - 0.15) < 0.02


def test_two_sided_smoothing_refuses_bad_ranges() -> None:
    cls, Params = two_sided_label_smoothing.TwoSidedLabelSmoothing, two_sided_label_smoothing.Params
    setup_double = SimpleNamespace(loss=SimpleNamespace(name="bce", cls=TargetLossDouble))
    assert cls.check(Params(), setup_double) is None
    assert "low <= high" in cls.check(Params(real_low=1.1, real_high=0.9), setup_double)
    assert "low <= high" in cls.check(Params(fake_low=0.2, fake_high=0.1), setup_double)
    assert "fake_high" in cls.check(Params(fake_high=0.8), setup_double)


def flips_within_binomial_tolerance(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_noisy_labels_flip_about_p_of_samples_independently() -> None:
    n, p = 10_000, 0.05
    targets = make_targets(n)
    trick = noisy_labels.NoisyLabels(noisy_labels.Params(p=p))
    trick.ganbench_discriminator_targets(run=make_run(), targets=targets)
    flipped_real, flipped_fake = targets.real == 0, targets.fake == 1
    assert ((targets.real == 0) | (targets.real == 1)).all()
    assert flips_within_binomial_tolerance(int(flipped_real.sum()), n, p)
    assert flips_within_binomial_tolerance(int(flipped_fake.sum()), n, p)
    assert not torch.equal(flipped_real, flipped_fake)  # the two halves draw separately


def test_noisy_labels_flip_nothing_at_p_zero() -> None:
    targets = make_targets(10_000)
    trick = noisy_labels.NoisyLabels(noisy_labels.Params(p=0.0))
    trick.ganbench_discriminator_targets(run=make_run(), targets=targets)
    assert torch.equal(targets.real, torch.ones(10_000)) and torch.equal(targets.fake, torch.zeros(10_000))


def test_noisy_labels_swap_smoothed_targets_whatever_the_suite_order() -> None:
    # Suite order puts noisy-labels first; it still runs after the smoothing (trylast), so with
    # p = 1 every real sample gets the fake target 0 and every fake sample the smoothed 0.9.
    noisy = noisy_labels.NoisyLabels(noisy_labels.Params(p=1.0))
    smooth = one_sided_label_smoothing.OneSidedLabelSmoothing(one_sided_label_smoothing.Params())
    pm = run_plugin_manager([("noisy-labels", noisy), ("one-sided-label-smoothing", smooth)])
    targets = make_targets(4)
    pm.hook.ganbench_discriminator_targets(run=make_run(), step=D_STEP, targets=targets)
    assert torch.equal(targets.real, torch.zeros(4))
    assert torch.equal(targets.fake, torch.full((4,), 0.9))


class TargetLossDouble:
    uses_targets = True
    scores = "logit"


class CriticLossDouble:
    uses_targets = False
    scores = "critic"


# what RunSettings.installed("loss") returns, with a third-party loss that reads targets
INSTALLED_LOSSES_DOUBLE = {"bce": TargetLossDouble, "wgan": CriticLossDouble, "ragan": TargetLossDouble}


@pytest.mark.parametrize("cls", LABEL_TRICKS, ids=lambda c: c.name)
def test_label_tricks_refuse_losses_without_targets(cls: type) -> None:
    critic_setup_double = SimpleNamespace(loss=SimpleNamespace(name="wgan", cls=CriticLossDouble),
                                          installed=lambda kind: INSTALLED_LOSSES_DOUBLE)
    target_setup_double = SimpleNamespace(loss=SimpleNamespace(name="bce", cls=TargetLossDouble),
                                          installed=lambda kind: INSTALLED_LOSSES_DOUBLE)
    reason = cls.check(cls.params(), critic_setup_double)
    assert isinstance(reason, str) and "\n" not in reason
    assert cls.name in reason and '"wgan"' in reason
    assert reason.endswith("use a loss that does: bce, ragan")  # the installed ones, not a fixed list
    assert cls.check(cls.params(), target_setup_double) is None


# --------------------------------------------------------------------------------------------------
# Instance noise
# --------------------------------------------------------------------------------------------------


def noisy_batch(trick, run: ganbench.Run, step: ganbench.Step, n: int = 20_000) -> ganbench.Batch:
    batch = ganbench.Batch(real=torch.zeros(n, 2), fake=torch.zeros(n, 2))
    trick.ganbench_discriminator_inputs(run=run, step=step, batch=batch)
    return batch


@pytest.mark.parametrize("phase", ["d", "g"])
def test_instance_noise_has_std_sigma_at_start_in_both_phases(phase: str) -> None:
    trick = instance_noise.InstanceNoise(instance_noise.Params(sigma=0.1, anneal_steps=10))
    batch = noisy_batch(trick, make_run(), ganbench.Step(index=0, phase=phase))
    for x in (batch.real, batch.fake):
        assert abs(x.std() - 0.1) < 0.003 and abs(x.mean()) < 0.003
    assert not torch.equal(batch.real, batch.fake)


def test_instance_noise_anneals_linearly_to_zero() -> None:
    trick = instance_noise.InstanceNoise(instance_noise.Params(sigma=0.1, anneal_steps=10))
    run = make_run()
    half = noisy_batch(trick, run, ganbench.Step(index=5, phase="g"))
    assert abs(half.real.std() - 0.05) < 0.002
    for index in (10, 11):
        batch = noisy_batch(trick, run, ganbench.Step(index=index, phase="d"))
        assert torch.equal(batch.real, torch.zeros_like(batch.real))
        assert torch.equal(batch.fake, torch.zeros_like(batch.fake))


def test_instance_noise_anneals_over_the_whole_run_by_default() -> None:
    trick = instance_noise.InstanceNoise(instance_noise.Params(sigma=0.2))
    run = make_run(steps=40)
    assert trick.sigma(run, 0) == pytest.approx(0.2)
    assert trick.sigma(run, 30) == pytest.approx(0.05)
    assert trick.sigma(run, 40) == 0.0


def test_instance_noise_reproduces_from_the_seed_and_keeps_gs_graph() -> None:
    trick = instance_noise.InstanceNoise(instance_noise.Params())
    step = ganbench.Step(index=0, phase="g")
    a = noisy_batch(trick, make_run(seed=1), step, n=16)
    b = noisy_batch(trick, make_run(seed=1), step, n=16)
    c = noisy_batch(trick, make_run(seed=2), step, n=16)
    assert torch.equal(a.real, b.real) and torch.equal(a.fake, b.fake)
    assert not torch.equal(a.real, c.real)
    fake = torch.zeros(4, 2, requires_grad=True)
    batch = ganbench.Batch(real=torch.zeros(4, 2), fake=fake)
    trick.ganbench_discriminator_inputs(run=make_run(), step=step, batch=batch)
    batch.fake.sum().backward()
    assert torch.equal(fake.grad, torch.ones(4, 2))


# --------------------------------------------------------------------------------------------------
# Spectral norm
# --------------------------------------------------------------------------------------------------


def test_spectral_norm_bounds_every_d_layer_and_leaves_g_alone() -> None:
    torch.manual_seed(0)
    discriminator = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.LeakyReLU(0.2),
        nn.Linear(8, 1),
    )
    with torch.no_grad():
        for p in discriminator.parameters():
            p.mul_(10)  # far from norm 1, so a no-op would fail
    generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 64))
    g_before = {k: v.clone() for k, v in generator.state_dict().items()}
    models = ganbench.Models(generator=generator, discriminator=discriminator)

    spectral_norm.SpectralNorm(spectral_norm.Params()).ganbench_configure_models(models=models)
    discriminator.train()
    for _ in range(5):
        discriminator(torch.randn(2, 1, 8, 8))

    layers = [m for m in discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight")
        with torch.no_grad():
            top = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2)
        assert abs(top - 1.0) < 1e-2
    assert not any(parametrize.is_parametrized(m) for m in generator.modules())
    g_after = generator.state_dict()
    assert g_after.keys() == g_before.keys()
    assert all(torch.equal(g_after[k], g_before[k]) for k in g_before)


# --------------------------------------------------------------------------------------------------
# TTUR
# --------------------------------------------------------------------------------------------------


def test_ttur_sets_both_learning_rates_through_config_defaults() -> None:
    assert ttur.TTUR.config_defaults(ttur.Params()) == {"optimizer.g.lr": 1e-4, "optimizer.d.lr": 4e-4}
    custom = ttur.Params(g_lr=2e-5, d_lr=1e-3)
    assert ttur.TTUR.config_defaults(custom) == {"optimizer.g.lr": 2e-5, "optimizer.d.lr": 1e-3}


# --------------------------------------------------------------------------------------------------
# EMA of G
# --------------------------------------------------------------------------------------------------


def ema_setup(params: ema.Params, start: float) -> tuple[ema.EMA, nn.Module, ganbench.Run]:
    generator = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        for p in generator.parameters():
            p.fill_(start)
    run = make_run()
    run.models = ganbench.Models(generator=generator, discriminator=nn.Linear(3, 1))
    trick = ema.EMA(params)
    trick.ganbench_configure_models(models=run.models)
    return trick, generator, run


def set_params(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_ema_copy_matches_the_closed_form_average() -> None:
    d, theta0, thetas = 0.9, 0.5, [1.0, -2.0, 3.0, 0.25]
    trick, generator, _ = ema_setup(ema.Params(decay=d), theta0)
    copy = trick.ganbench_eval_generator()
    assert copy is not generator
    assert all(not p.requires_grad for p in copy.parameters())
    assert all(p.device == q.device for p, q in zip(copy.parameters(), generator.parameters()))

    for i, theta in enumerate(thetas):
        set_params(generator, theta)
        trick.ganbench_step_end(step=ganbench.Step(index=i, phase="g"))
    k = len(thetas)
    # e_k = d^k θ0 + (1 - d) Σ_{i=1..k} d^(k-i) θ_i
    expected = d**k * theta0 + (1 - d) * sum(d ** (k - i) * t for i, t in enumerate(thetas, start=1))
    for p in copy.parameters():
        assert torch.allclose(p, torch.full_like(p, expected), atol=1e-6)
        assert p.grad_fn is None
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in generator.parameters())  # G untouched


def test_ema_tracks_g_before_start_step_and_copies_buffers() -> None:
    d = 0.5
    trick, generator, _ = ema_setup(ema.Params(decay=d, start_step=2), 0.0)
    for i, theta in enumerate([1.0, 2.0, 4.0]):
        set_params(generator, theta)
        generator[1].running_mean.fill_(10.0 + i)
        trick.ganbench_step_end(step=ganbench.Step(index=i, phase="g"))
        if i < 2:
            assert all(torch.equal(p, torch.full_like(p, theta)) for p in trick.generator.parameters())
    for p in trick.generator.parameters():  # tracked to 2.0, then one averaged step toward 4.0
        assert torch.allclose(p, torch.full_like(p, d * 2.0 + (1 - d) * 4.0))
    assert torch.equal(trick.generator[1].running_mean, torch.full((3,), 12.0))
    assert torch.equal(trick.generator[1].num_batches_tracked, generator[1].num_batches_tracked)


def test_ema_copy_wins_over_the_core_default_generator() -> None:
    trick, generator, run = ema_setup(ema.Params(), 0.0)
    pm = run_plugin_manager([("ema", trick)])
    chosen = pm.hook.ganbench_eval_generator(run=run)
    assert chosen is trick.generator and chosen is not generator
