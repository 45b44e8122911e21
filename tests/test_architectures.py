"""The built-in architectures: output shapes, DCGAN's init and shape checks, parameter descriptions."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ganbench
from ganbench.params import describe
from ganbench.registry import new_plugin_manager
from ganbench_plugins.architectures import dcgan, mlp

N = 8
Z_DIM = 16


def make_run(kind: str, shape: tuple[int, ...]) -> ganbench.Run:
    settings_double = SimpleNamespace(z_dim=Z_DIM)
    return ganbench.Run(
        settings=settings_double,
        seed=0,
        device=torch.device("cpu"),
        data=ganbench.DataInfo(kind, shape, None),
        dir=Path("unused"),
        hook=None,
        rng=torch.Generator().manual_seed(0),
    )


def build(arch, kind: str, shape: tuple[int, ...]) -> ganbench.Models:
    torch.manual_seed(0)
    return arch.ganbench_build_models(run=make_run(kind, shape))


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    shape = (channels, size, size)
    models = build(dcgan.DCGAN(dcgan.Params(width=8)), "image", shape)
    x = models.generator(torch.randn(N, Z_DIM))
    assert x.shape == (N, *shape)
    assert x.abs().max() <= 1.0  # tanh output
    assert models.discriminator(x).shape == (N,)


@pytest.mark.parametrize("d_norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("g_norm", ["batch", "none"])
def test_dcgan_norm_choices_build(d_norm, g_norm):
    models = build(dcgan.DCGAN(dcgan.Params(width=8, d_norm=d_norm, g_norm=g_norm)), "image", (1, 28, 28))
    d_types = {type(m) for m in models.discriminator.modules()}
    g_types = {type(m) for m in models.generator.modules()}
    assert (nn.BatchNorm2d in d_types) == (d_norm == "batch")
    assert (nn.GroupNorm in d_types) == (d_norm == "layer")
    assert (nn.BatchNorm2d in g_types) == (g_norm == "batch")
    assert models.discriminator(models.generator(torch.randn(N, Z_DIM))).shape == (N,)


def test_dcgan_layer_norm_critic_scores_each_sample_alone():
    # A WGAN-GP critic must score a sample the same whatever else is in the batch (train mode).
    models = build(dcgan.DCGAN(dcgan.Params(width=8, d_norm="layer")), "image", (1, 32, 32))
    x = torch.randn(N, 1, 32, 32)
    assert torch.allclose(models.discriminator(x)[:2], models.discriminator(x[:2]), atol=1e-6)


def test_dcgan_init_is_normal_002():
    models = build(dcgan.DCGAN(dcgan.Params(width=16)), "image", (3, 32, 32))
    convs = [m for net in (models.generator, models.discriminator) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    big = [m for m in convs if m.weight.numel() >= 1000]  # enough weights for a tight std estimate
    assert len(big) >= 5
    for m in big:
        assert m.weight.mean().abs() < 0.003
        assert abs(m.weight.std() - 0.02) < 0.002
    for m in convs:
        assert m.bias is None or torch.all(m.bias == 0)
    norms = [m for net in (models.generator, models.discriminator) for m in net.modules()
             if isinstance(m, nn.BatchNorm2d)]
    assert norms
    for m in norms:
        assert abs(m.weight.mean() - 1.0) < 0.02 and torch.all(m.bias == 0)


def test_dcgan_default_init_is_not_normal_002():
    models = build(dcgan.DCGAN(dcgan.Params(width=16, init="default")), "image", (3, 32, 32))
    conv = models.discriminator[0]
    assert abs(conv.weight.std() - 0.02) > 0.01  # PyTorch's kaiming-uniform default differs


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("image", (1, 30, 30)), ("points", (2,)), ("image", (3, 32, 28)), ("image", (3, 128, 128))],
)
def test_dcgan_check_refuses_unsupported_data(kind, shape):
    setup_double = SimpleNamespace(data=ganbench.DataInfo(kind, shape, None))
    reason = dcgan.DCGAN.check(dcgan.Params(), setup_double)
    assert reason is not None and "\n" not in reason
    assert str(shape) in reason and "28, 32, 64" in reason
    with pytest.raises(ganbench.UsageError):
        dcgan.DCGAN(dcgan.Params()).ganbench_build_models(run=make_run(kind, shape))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (4, 64, 64)])
def test_dcgan_check_accepts_supported_images(shape):
    setup_double = SimpleNamespace(data=ganbench.DataInfo("image", shape, 10))
    assert dcgan.DCGAN.check(dcgan.Params(), setup_double) is None


def test_mlp_points():
    models = build(mlp.MLP(mlp.Params(width=16, hidden_layers=2)), "points", (2,))
    x = models.generator(torch.randn(N, Z_DIM))
    assert x.shape == (N, 2)
    assert models.discriminator(x).shape == (N,)
    # Points are not squashed into [-1, 1]: a ring of radius 2 must be reachable.
    last = [m for m in models.generator.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(5.0)
    assert models.generator(torch.randn(N, Z_DIM)).min() > 1.0


def test_mlp_images():
    shape = (1, 28, 28)
    models = build(mlp.MLP(mlp.Params(width=16, hidden_layers=2)), "image", shape)
    x = models.generator(torch.randn(N, Z_DIM))
    assert x.shape == (N, *shape)
    assert x.abs().max() <= 1.0  # tanh output
    assert models.discriminator(x).shape == (N,)


def test_mlp_layers_and_dropout():
    models = build(mlp.MLP(mlp.Params(width=16, hidden_layers=3, d_dropout=0.3, g_dropout=0.0)), "points", (2,))
    d_linear = [m for m in models.discriminator.modules() if isinstance(m, nn.Linear)]
    d_dropout = [m for m in models.discriminator.modules() if isinstance(m, nn.Dropout)]
    assert len(d_linear) == 4 and len(d_dropout) == 3 and all(m.p == 0.3 for m in d_dropout)
    assert not any(isinstance(m, nn.Dropout) for m in models.generator.modules())
    assert all(m.negative_slope == 0.2 for m in models.discriminator.modules() if isinstance(m, nn.LeakyReLU))


@pytest.mark.parametrize("module", [mlp, dcgan])
def test_architecture_plugin_registers_and_documents_params(module):
    (cls,) = module.ganbench_register_architectures()
    assert cls.name == module.__name__.rsplit(".", 1)[1]
    assert cls.__doc__.strip().splitlines()[0]
    assert all(p.help for p in describe(cls.params))
    new_plugin_manager().register(cls(cls.params()))  # pluggy checks hook and argument names
