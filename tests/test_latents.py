"""The built-in latent distributions: shape, device, reproducibility from run.rng, bounds."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ganbench
from ganbench.params import describe
from ganbench.registry import new_plugin_manager
from ganbench_plugins.latents import gaussian, uniform

Z_DIM = 16


def make_run(seed: int = 0) -> ganbench.Run:
    settings_double = SimpleNamespace(z_dim=Z_DIM)
    return ganbench.Run(
        settings=settings_double,
        seed=seed,
        device=torch.device("cpu"),
        data=ganbench.DataInfo("points", (2,), None),
        dir=Path("unused"),
        hook=None,
        rng=torch.Generator().manual_seed(seed),
    )


LATENTS = [gaussian.Gaussian(), uniform.Uniform(uniform.Params())]


@pytest.mark.parametrize("latent", LATENTS, ids=lambda p: p.name)
def test_shape_and_device(latent):
    z = latent.ganbench_sample_latent(run=make_run(), n=8)
    assert z.shape == (8, Z_DIM) and z.device.type == "cpu" and z.dtype == torch.float32


@pytest.mark.parametrize("latent", LATENTS, ids=lambda p: p.name)
def test_same_seed_same_z(latent):
    z1 = latent.ganbench_sample_latent(run=make_run(3), n=8)
    z2 = latent.ganbench_sample_latent(run=make_run(3), n=8)
    z3 = latent.ganbench_sample_latent(run=make_run(4), n=8)
    assert torch.equal(z1, z2)
    assert not torch.equal(z1, z3)


def test_gaussian_moments():
    z = gaussian.Gaussian().ganbench_sample_latent(run=make_run(), n=4096)
    assert z.mean().abs() < 0.02 and (z.std() - 1.0).abs() < 0.02


def test_uniform_within_bounds():
    latent = uniform.Uniform(uniform.Params(low=-0.5, high=2.0))
    z = latent.ganbench_sample_latent(run=make_run(), n=4096)
    assert z.min() >= -0.5 and z.max() <= 2.0
    assert z.min() < -0.45 and z.max() > 1.95  # fills the interval, not a corner of it
    assert (z.mean() - 0.75).abs() < 0.02


def test_uniform_default_is_minus_one_to_one():
    z = uniform.Uniform(uniform.Params()).ganbench_sample_latent(run=make_run(), n=4096)
    assert z.min() >= -1.0 and z.max() <= 1.0 and z.min() < -0.99 and z.max() > 0.99


def test_uniform_check_refuses_empty_interval():
    assert uniform.Uniform.check(uniform.Params(low=1.0, high=1.0), None) is not None
    assert uniform.Uniform.check(uniform.Params(), None) is None


@pytest.mark.parametrize("module", [gaussian, uniform])
def test_latent_plugin_registers(module):
    (cls,) = module.ganbench_register_latents()
    assert cls.name == module.__name__.rsplit(".", 1)[1]
    assert cls.__doc__.strip().splitlines()[0]
    assert all(p.help for p in describe(cls.params))
    instance = cls() if cls.params is None else cls(cls.params())
    new_plugin_manager().register(instance)  # pluggy checks hook and argument names
