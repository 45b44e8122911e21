"""The built-in losses, each checked against a hand formula on known logits (plain `math`, not torch)."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ganbench
from ganbench.params import describe
from ganbench.registry import new_plugin_manager
from ganbench_plugins.architectures import dcgan, mlp
from ganbench_plugins.losses import bce, hinge, lsgan, minimax, wgan, wgan_gp

REAL = [1.5, -0.5, 0.0, 3.0]
FAKE = [0.3, -2.0, 0.7, -0.1]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def scores(real=REAL, fake=FAKE, grad: bool = False) -> ganbench.Scores:
    return ganbench.Scores(real=torch.tensor(real, requires_grad=grad), fake=torch.tensor(fake, requires_grad=grad))


def targets(real: float = 1.0, fake: float = 0.0, n: int = len(REAL)) -> ganbench.Targets:
    return ganbench.Targets(real=torch.full((n,), real), fake=torch.full((n,), fake))


def make_run(discriminator: nn.Module, seed: int = 0) -> ganbench.Run:
    settings_double = SimpleNamespace(z_dim=4)
    return ganbench.Run(
        settings=settings_double,
        seed=seed,
        device=torch.device("cpu"),
        data=ganbench.DataInfo("points", (3,), None),
        dir=Path("unused"),
        hook=None,
        rng=torch.Generator().manual_seed(seed),
        models=ganbench.Models(generator=nn.Identity(), discriminator=discriminator),
    )


LOSSES = [bce.BCE(), minimax.Minimax(), lsgan.LSGAN(), hinge.Hinge(), wgan.WGAN(wgan.Params()),
          wgan_gp.WGANGP(wgan_gp.Params())]


def d_loss(loss, s, t=None):
    return loss.ganbench_discriminator_loss(scores=s, targets=t if t is not None else targets())


def assert_value(tensor: torch.Tensor, expected: float) -> None:
    assert tensor.shape == () and math.isclose(tensor.item(), expected, rel_tol=1e-5, abs_tol=1e-6)


# ---- every loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES, ids=lambda p: p.name)
def test_finite_scalar_with_gradients(loss):
    s = scores(grad=True)
    d = d_loss(loss, s)
    assert d.shape == () and torch.isfinite(d)
    d.backward()
    assert torch.isfinite(s.real.grad).all() and s.real.grad.abs().sum() > 0
    assert torch.isfinite(s.fake.grad).all() and s.fake.grad.abs().sum() > 0
    s = scores(grad=True)
    g = loss.ganbench_generator_loss(scores=s)
    assert g.shape == () and torch.isfinite(g)
    g.backward()
    assert torch.isfinite(s.fake.grad).all() and s.fake.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", LOSSES, ids=lambda p: p.name)
def test_finite_at_extreme_logits(loss):
    s = scores(real=[-100.0, 100.0], fake=[100.0, -100.0])
    assert torch.isfinite(d_loss(loss, s, targets(n=2)))
    assert torch.isfinite(loss.ganbench_generator_loss(scores=s))


@pytest.mark.parametrize("loss", LOSSES, ids=lambda p: p.name)
def test_called_through_pluggy(loss):
    pm = new_plugin_manager()
    pm.register(loss)  # checks hook and argument names against hookspecs.py
    s, step = scores(), ganbench.Step(0, "d")
    d = pm.hook.ganbench_discriminator_loss(run=None, step=step, scores=s, targets=targets())
    assert torch.equal(d, d_loss(loss, s))
    g = pm.hook.ganbench_generator_loss(run=None, step=ganbench.Step(0, "g"), batch=None, scores=s)
    assert torch.equal(g, loss.ganbench_generator_loss(scores=s))


@pytest.mark.parametrize("module", [bce, minimax, lsgan, hinge, wgan, wgan_gp])
def test_loss_plugin_registers(module):
    (cls,) = module.ganbench_register_losses()
    assert cls.name == module.__name__.rsplit(".", 1)[1].replace("_", "-")
    assert cls.__doc__.strip().splitlines()[0]
    assert all(p.help for p in describe(cls.params))
    assert cls.uses_targets == (cls.name in {"bce", "minimax", "lsgan"})


# ---- hand formulas --------------------------------------------------------------------------------


def test_bce_at_zero_logits_is_two_log_two():
    assert_value(d_loss(bce.BCE(), scores([0.0] * 4, [0.0] * 4)), 2 * math.log(2))


def bce_d_reference(real, fake, t_real, t_fake):
    def xent(x, t):
        return -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))
    return mean(xent(x, t_real) for x in real) + mean(xent(x, t_fake) for x in fake)


@pytest.mark.parametrize("loss", [bce.BCE(), minimax.Minimax()], ids=lambda p: p.name)
@pytest.mark.parametrize(("t_real", "t_fake"), [(1.0, 0.0), (0.9, 0.1)])
def test_cross_entropy_discriminator(loss, t_real, t_fake):
    assert_value(d_loss(loss, scores(), targets(t_real, t_fake)), bce_d_reference(REAL, FAKE, t_real, t_fake))


def test_bce_generator_is_non_saturating():
    assert_value(bce.BCE().ganbench_generator_loss(scores=scores()), mean(-math.log(sigmoid(x)) for x in FAKE))


def test_minimax_generator_is_log_one_minus_d():
    assert_value(minimax.Minimax().ganbench_generator_loss(scores=scores()),
                 mean(math.log(1 - sigmoid(x)) for x in FAKE))


def test_lsgan():
    loss = lsgan.LSGAN()
    assert_value(d_loss(loss, scores([2.0, 0.0], [1.0, -1.0]), targets(n=2)), 0.5 * 1.0 + 0.5 * 1.0)
    assert_value(d_loss(loss, scores(), targets(0.9, 0.0)),
                 0.5 * mean((x - 0.9) ** 2 for x in REAL) + 0.5 * mean(x**2 for x in FAKE))
    assert_value(loss.ganbench_generator_loss(scores=scores([0.0, 0.0], [1.0, -1.0])), 0.5 * (0 + 4) / 2)


def test_hinge():
    loss = hinge.Hinge()
    assert_value(d_loss(loss, scores([2.0, 2.0], [-2.0, -2.0])), 0.0)
    assert_value(d_loss(loss, scores([0.5, 3.0], [0.5, -3.0])), mean([0.5, 0.0]) + mean([1.5, 0.0]))
    assert_value(loss.ganbench_generator_loss(scores=scores()), -mean(FAKE))


@pytest.mark.parametrize("loss", [wgan.WGAN(wgan.Params()), wgan_gp.WGANGP(wgan_gp.Params())], ids=lambda p: p.name)
def test_wasserstein(loss):
    assert_value(d_loss(loss, scores()), mean(FAKE) - mean(REAL))
    assert_value(loss.ganbench_generator_loss(scores=scores()), -mean(FAKE))


# ---- WGAN weight clipping -------------------------------------------------------------------------


def test_wgan_clipping_clamps_every_discriminator_parameter():
    critic = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    with torch.no_grad():
        critic[0].weight.copy_(torch.linspace(-1, 1, 12).reshape(4, 3))
        critic[1].weight.fill_(0.005)
    loss = wgan.WGAN(wgan.Params(clip=0.01))
    loss.ganbench_after_discriminator_step(run=make_run(critic))
    for p in critic.parameters():
        assert p.abs().max() <= 0.01
    assert critic[0].weight.min() == -0.01 and critic[0].weight.max() == 0.01
    assert torch.all(critic[1].weight == 0.005)  # inside the box: untouched


def test_wasserstein_config_defaults_name_real_settings():
    from ganbench.settings import ALL_KEYS, CoreSettings, OptimizerSettings

    for defaults in (wgan.WGAN.config_defaults(wgan.Params()), wgan_gp.WGANGP.config_defaults(wgan_gp.Params())):
        for key in defaults:
            head, *rest = key.split(".")
            assert head in ALL_KEYS
            if head == "optimizer":
                assert rest[0] in ("g", "d") and rest[1] in OptimizerSettings.__dataclass_fields__
            elif head == "architecture":
                assert rest[0] in dcgan.Params.__dataclass_fields__
            else:
                assert head in CoreSettings.__dataclass_fields__
    assert wgan.WGAN.config_defaults(wgan.Params())["optimizer.d.name"] == "rmsprop"
    gp = wgan_gp.WGANGP.config_defaults(wgan_gp.Params())
    assert gp["optimizer.g.betas"] == (0.5, 0.9) and gp["architecture.d_norm"] == "layer"


# ---- WGAN-GP penalty ------------------------------------------------------------------------------


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = w . x has gradient w at every x_hat, so the penalty is lambda (||w|| - 1)^2.
    w = [3.0, -1.0, 2.0]
    norm_w = math.sqrt(sum(v * v for v in w))
    critic = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([w]))
    batch = ganbench.Batch(real=torch.randn(8, 3), fake=torch.randn(8, 3))
    penalty = wgan_gp.WGANGP(wgan_gp.Params(gp_weight=10.0)).ganbench_discriminator_penalty(
        run=make_run(critic), batch=batch, scores=None)
    assert_value(penalty, 10.0 * (norm_w - 1) ** 2)
    penalty.backward()  # create_graph=True: the penalty trains the critic
    expected = [10.0 * 2 * (norm_w - 1) * v / norm_w for v in w]
    assert torch.allclose(critic.weight.grad, torch.tensor([expected]), rtol=1e-5)


def test_gradient_penalty_does_not_reach_the_generator_and_uses_run_rng():
    critic = nn.Sequential(nn.Flatten(1), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    leaf = torch.randn(8, 3, 2, 2, requires_grad=True)  # stands in for G's parameters
    batch = ganbench.Batch(real=torch.randn(8, 3, 2, 2), fake=leaf * 2)
    loss = wgan_gp.WGANGP(wgan_gp.Params())
    p1 = loss.ganbench_discriminator_penalty(run=make_run(critic, seed=1), batch=batch, scores=None)
    p2 = loss.ganbench_discriminator_penalty(run=make_run(critic, seed=1), batch=batch, scores=None)
    p3 = loss.ganbench_discriminator_penalty(run=make_run(critic, seed=2), batch=batch, scores=None)
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, p3)
    p1.backward()
    assert leaf.grad is None
    assert critic[1].weight.grad.abs().sum() > 0 and critic[3].weight.grad.abs().sum() > 0


def test_wgan_gp_check_refuses_a_batchnorm_critic():
    def setup_double(params):
        return SimpleNamespace(architecture=SimpleNamespace(params=params))

    reason = wgan_gp.WGANGP.check(wgan_gp.Params(), setup_double(dcgan.Params(d_norm="batch")))
    assert reason is not None and "\n" not in reason and "Gulrajani" in reason
    assert wgan_gp.WGANGP.check(wgan_gp.Params(), setup_double(dcgan.Params(d_norm="layer"))) is None
    assert wgan_gp.WGANGP.check(wgan_gp.Params(), setup_double(mlp.Params())) is None
    assert wgan_gp.WGANGP.check(wgan_gp.Params(), setup_double(None)) is None
