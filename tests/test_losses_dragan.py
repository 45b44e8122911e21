"""DRAGAN (Kodali et al. 2017): bce's losses, plus a penalty checked against its formula on a known D."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import ganbench
from ganbench.registry import new_plugin_manager
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import build_run, train
from ganbench_plugins.losses import bce, dragan

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(discriminator: nn.Module, seed: int = 0) -> ganbench.Run:
    return ganbench.Run(settings=None, seed=seed, device=CPU, data=None, dir=Path("unused"), hook=None,
                        rng=torch.Generator().manual_seed(seed),
                        models=ganbench.Models(generator=nn.Identity(), discriminator=discriminator))


def test_registers_with_its_score_kind_and_targets():
    pm = new_plugin_manager()
    pm.register(dragan)
    ((cls,),) = pm.hook.ganbench_register_losses()
    assert cls.name == "dragan" and cls.uses_targets is True and cls.scores == "logit"
    assert "Kodali et al. 2017" in dragan.__doc__.splitlines()[0]
    new_plugin_manager().register(cls(cls.params()))


def test_d_and_g_losses_are_bces():
    scores = ganbench.Scores(real=torch.tensor([1.5, -0.5, 0.0]), fake=torch.tensor([0.3, -2.0, 0.7]))
    targets = ganbench.Targets(real=torch.full((3,), 0.9), fake=torch.zeros(3))
    loss = dragan.DRAGAN(dragan.Params())
    assert torch.equal(loss.ganbench_discriminator_loss(scores=scores, targets=targets),
                       bce.BCE().ganbench_discriminator_loss(scores=scores, targets=targets))
    expected = sum(-math.log(1 / (1 + math.exp(-x))) for x in (0.3, -2.0, 0.7)) / 3
    assert math.isclose(loss.ganbench_generator_loss(scores=scores).item(), expected, rel_tol=1e-6)


class QuadraticD(nn.Module):
    """D(x) = ½ Σ (w ⊙ x)²: input gradient w² ⊙ x, known at any point."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, numel))

    def forward(self, x):
        return 0.5 * (self.w * x.flatten(1)).pow(2).sum(1)


def test_penalty_matches_the_formula_at_the_same_perturbed_points():
    torch.manual_seed(0)
    real = torch.randn(6, 1, 2, 2)
    D = QuadraticD(4)
    params = dragan.Params(gp_weight=3.0, spread=0.5)
    value = dragan.DRAGAN(params).ganbench_discriminator_penalty(
        run=make_run(D, seed=7), batch=ganbench.Batch(real=real, fake=torch.zeros_like(real)))
    # The same draws, in the same order, from the same seed.
    rng = torch.Generator().manual_seed(7)
    noise = torch.rand(real.shape, generator=rng)
    alpha = torch.rand((6, 1, 1, 1), generator=rng)
    x_hat = real + alpha * (0.5 * real.std() * noise)
    grad = (D.w.detach() ** 2) * x_hat.flatten(1)
    expected = 3.0 * ((grad.norm(dim=1) - 1) ** 2).mean()
    assert math.isclose(value.item(), expected.item(), rel_tol=1e-5)
    assert value.requires_grad  # it trains D's weights
    value.backward()
    assert D.w.grad is not None and torch.isfinite(D.w.grad).all() and D.w.grad.abs().sum() > 0


def test_perturbations_stay_in_the_neighbourhood_of_the_data():
    # A linear D's input gradient is w everywhere, so the penalty is (||w|| - 1)² wherever x̂ lies;
    # what matters is that x̂ is x plus at most spread · std(x) per element.
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1).sum(1)

    real = torch.randn(32, 1, 4, 4)
    dragan.DRAGAN(dragan.Params(spread=0.5)).ganbench_discriminator_penalty(
        run=make_run(Probe()), batch=ganbench.Batch(real=real, fake=torch.zeros_like(real)))
    offset = seen[0] - real
    assert offset.min() >= 0 and offset.max() <= 0.5 * real.std() + 1e-6


def test_trains_a_step_with_the_penalty_in_the_record(tiny_suite, tmp_path):
    torch.manual_seed(0)
    spec = load_suite(tiny_suite('loss = "dragan"')).runs("default")[0]
    run = build_run(spec, tmp_path / "run", CPU)
    assert train(run)[0] == "completed"
    records = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"]
    assert records and all(r["d_penalty"] > 0 for r in records)
