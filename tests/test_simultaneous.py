"""The simultaneous trick: G's first update of a step is taken against D from before that step's D
update; checked against a hand-written simultaneous-gradient loop on the same models and batches."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ganbench.suite import load_suite
from ganbench.trainer import build_run, train

SUITE = """
[suite]
name = "sim"
question = "Are the updates simultaneous?"
seeds = [0]
[dataset]
name = "ring8"
[defaults]
architecture = {{ name = "mlp", width = 16, hidden_layers = 2, d_dropout = 0.0 }}
loss = "minimax"
z_dim = 4
batch_size = 8
steps = {steps}
log_every = 1
eval_every = 1000
grid_size = 4
metrics = []
detectors = []
diagnostics = false
optimizer.g = {{ name = "sgd", lr = 0.1 }}
optimizer.d = {{ name = "sgd", lr = 0.1 }}
[[configs]]
name = "a"
tricks = [{tricks}]
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def build(write_suite, tmp_path, tricks: str, steps: int = 1):
    spec = load_suite(write_suite(SUITE.format(steps=steps, tricks=tricks))).runs("default")[0]
    return build_run(spec, tmp_path / tricks.replace('"', "") / "run", torch.device("cpu"))


def test_g_steps_against_d_from_before_its_update(write_suite, tmp_path):
    run = build(write_suite, tmp_path, '"simultaneous"')
    G0, D0 = copy.deepcopy(run.models.generator), copy.deepcopy(run.models.discriminator)
    rng = copy.deepcopy(run.rng)
    train(run)
    # The same step by hand, both gradients taken at (G0, D0).
    torch.randn(4, 4, generator=rng)  # the fixed noise of the sample grids, drawn when training starts
    real = run.data.sample(8, rng)[0]
    z = torch.randn(8, 4, generator=rng)
    fake = G0(z)
    d_loss = (F.binary_cross_entropy_with_logits(D0(real), torch.ones(8))
              + F.binary_cross_entropy_with_logits(D0(fake.detach()), torch.zeros(8)))
    g_loss = -F.softplus(D0(fake)).mean()
    d_grads = torch.autograd.grad(d_loss, list(D0.parameters()))
    g_grads = torch.autograd.grad(g_loss, list(G0.parameters()))
    for p0, g, p in zip(D0.parameters(), d_grads, run.models.discriminator.parameters()):
        torch.testing.assert_close(p, p0 - 0.1 * g)
    for p0, g, p in zip(G0.parameters(), g_grads, run.models.generator.parameters()):
        torch.testing.assert_close(p, p0 - 0.1 * g)


def test_without_it_g_sees_the_updated_d(write_suite, tmp_path):
    plain, simultaneous = build(write_suite, tmp_path, ""), build(write_suite, tmp_path, '"simultaneous"')
    train(plain), train(simultaneous)
    assert all(torch.equal(a, b) for a, b in zip(plain.models.discriminator.parameters(),
                                                 simultaneous.models.discriminator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(plain.models.generator.parameters(),
                                                     simultaneous.models.generator.parameters()))


def test_refused_with_unrolled(write_suite):
    from ganbench import UsageError

    with pytest.raises(UsageError, match="unrolled"):
        load_suite(write_suite(SUITE.format(steps=1, tricks='"simultaneous", "unrolled"')))
