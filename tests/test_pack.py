"""PacGAN packing (the `pack` trick): D is built for and fed packs of m same-side samples, scores
one per sample, trains with the usual losses and penalties, and refuses what it cannot serve in one
line. Tiny: width 8, batch 8 (6 for m = 3), 2 steps, CPU."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import ganbench
from ganbench.registry import new_plugin_manager
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import build_run, train
from ganbench_plugins.tricks import pack

CPU = torch.device("cpu")
BATCH = {2: 8, 3: 6, 4: 8}  # batch 8 where m divides it

SUITE = """
[suite]
name = "pack"
question = "Does packing train?"
seeds = [0]
plugins = ["recorder.py"]
[dataset]
name = "{dataset}"
[defaults]
architecture = {{ name = "{architecture}", width = 8 }}
batch_size = {batch}
steps = 2
log_every = 1
eval_every = 2
grid_size = 4
metrics = []
[[configs]]
name = "a"
{extra}
"""

# A trick that keeps every batch D is about to see (after the other tricks), to tell sides apart.
RECORDER = '''
import ganbench

class Recorder:
    name = "recorder"
    params = None
    transient = ("batches",)

    def __init__(self):
        self.batches = []

    @ganbench.hookimpl(trylast=True)
    def ganbench_discriminator_inputs(self, batch):
        self.batches.append((batch.real.detach().clone(), batch.fake.detach().clone()))

@ganbench.hookimpl
def ganbench_register_tricks():
    return [Recorder]
'''

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def suite(tmp_path: Path):
    """suite(extra, dataset=..., architecture=..., batch=...) -> the path of a one-config suite."""
    (tmp_path / "recorder.py").write_text(RECORDER)

    def make(extra: str, dataset: str = "mnist5k", architecture: str = "dcgan", batch: int = 8) -> Path:
        path = tmp_path / "suite.toml"
        path.write_text(SUITE.format(extra=textwrap.dedent(extra), dataset=dataset, architecture=architecture,
                                     batch=batch))
        return path

    return make


@pytest.fixture
def tiny_run(suite, tmp_path: Path):
    def make(extra: str, **kw) -> ganbench.Run:
        return build_run(load_suite(suite(extra, **kw)).runs("default")[0], tmp_path / "run", CPU)

    return make


def first_layer(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def packs_of(x: torch.Tensor, m: int) -> torch.Tensor:
    """The packs built by hand: row i is torch.cat of samples m·i .. m·i + m - 1 on their first dim."""
    return torch.stack([torch.cat(list(x[i:i + m]), dim=0) for i in range(0, len(x), m)])


def test_module_registers_one_trick_citing_the_paper() -> None:
    pm = new_plugin_manager()
    pm.register(pack)
    ((cls,),) = pm.hook.ganbench_register_tricks()
    assert cls.name == "pack" and cls.params().m == 2
    assert "PacGAN" in pack.__doc__.splitlines()[0] and "2018" in pack.__doc__.splitlines()[0]


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("dataset,architecture,layer_in", [("mnist5k", "dcgan", lambda l: l.in_channels),
                                                           ("mnist5k", "pacgan-dcgan", lambda l: l.in_channels),
                                                           ("ring8", "mlp", lambda l: l.in_features)],
                         ids=["dcgan-mnist5k", "pacgan-dcgan-mnist5k", "mlp-ring8"])
def test_d_is_built_for_packs_and_g_for_samples(tiny_run, m, dataset, architecture, layer_in) -> None:
    plain = tiny_run("", dataset=dataset, architecture=architecture, batch=BATCH[m])
    packed = tiny_run(f'tricks = [{{ name = "pack", m = {m} }}]', dataset=dataset, architecture=architecture,
                      batch=BATCH[m])
    assert isinstance(packed.models.discriminator, pack.Packed)
    assert layer_in(first_layer(packed.models.discriminator)) == m * layer_in(first_layer(plain.models.discriminator))
    # G is the one the same run builds without packing, weight for weight.
    g_plain, g_packed = plain.models.generator.state_dict(), packed.models.generator.state_dict()
    assert g_plain.keys() == g_packed.keys() and all(torch.equal(g_plain[k], g_packed[k]) for k in g_plain)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_d_scores_each_pack_once_per_sample(tiny_run, m) -> None:
    run = tiny_run(f'tricks = [{{ name = "pack", m = {m} }}]', batch=BATCH[m])
    D = run.models.discriminator.eval()  # BatchNorm's running statistics: scores independent of the batch
    x = torch.randn(4 * m, 1, 28, 28)
    seen = []
    D.packed.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        scores = D(x)
        reference = D.packed(packs_of(x, m))  # the inner D on packs concatenated by hand
    assert scores.shape == (4 * m,)
    assert torch.equal(seen[0], packs_of(x, m))
    assert torch.allclose(scores, reference.repeat_interleave(m))
    assert not torch.allclose(scores[0], scores[m])  # different packs, different scores


def test_d_refuses_a_batch_it_cannot_pack(tiny_run) -> None:
    D = tiny_run('tricks = ["pack"]').models.discriminator
    with pytest.raises(ValueError, match="7 samples, not a multiple of m = 2"):
        D(torch.zeros(7, 1, 28, 28))


@pytest.mark.parametrize("d_batch", ["separate", "combined"])
@pytest.mark.parametrize("m", [2, 4])
def test_every_pack_holds_samples_of_one_side(tiny_run, m, d_batch) -> None:
    run = tiny_run(f'tricks = [{{ name = "pack", m = {m} }}, "recorder"]\nd_batch = "{d_batch}"', batch=BATCH[m])
    calls = []
    D = run.models.discriminator
    D.register_forward_pre_hook(lambda module, args: calls.append(["outer", args[0].detach().clone()]))
    D.packed.register_forward_pre_hook(lambda module, args: calls[-1].append(args[0].detach().clone()))
    assert train(run)[0] == "completed"
    batches = run.plugins["trick:recorder"].batches
    assert calls and batches
    for _, outer, inner in calls:
        assert torch.equal(inner, packs_of(outer, m))
        for row in inner:
            samples = row.reshape(m, 1, 28, 28)
            sides = {side for real, fake in batches for side, pool in (("real", real), ("fake", fake))
                     for s in samples if (pool == s).flatten(1).all(1).any()}
            assert len(sides) == 1, sides


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("loss", ["bce", "wgan-gp", "hinge"])
def test_trains_on_mnist5k(tiny_run, loss, m) -> None:
    run = tiny_run(f'tricks = [{{ name = "pack", m = {m} }}]\nloss = "{loss}"', batch=BATCH[m])
    assert train(run) == ("completed", None)
    records = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"]
    assert len(records) == 2
    assert all(torch.isfinite(torch.tensor([r["d_loss"], r["g_loss"], r["d_penalty"]])).all() for r in records)
    if loss == "wgan-gp":  # the penalty scored its interpolates through the packing wrapper
        assert all(r["d_penalty"] > 0 for r in records)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_trains_with_mlp_on_ring8(tiny_run, m) -> None:
    run = tiny_run(f'tricks = [{{ name = "pack", m = {m} }}]', dataset="ring8", architecture="mlp", batch=BATCH[m])
    assert first_layer(run.models.discriminator).in_features == 2 * m
    assert train(run) == ("completed", None)


def test_penalties_see_m_times_each_samples_share_of_the_pack_gradient(tiny_run) -> None:
    """What the module docstring says of wgan-gp, dragan and r1, computed another way."""
    m = 2
    D = tiny_run('tricks = ["pack"]').models.discriminator.eval()
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    (through_wrapper,) = torch.autograd.grad(D(x).sum(), x)
    packs = packs_of(x.detach(), m).requires_grad_(True)
    (per_pack,) = torch.autograd.grad(D.packed(packs).sum(), packs)
    assert torch.allclose(through_wrapper, m * per_pack.reshape(4, 1, 28, 28), atol=1e-6)


def test_diagnostics_see_ds_layers_through_the_wrapper(tiny_run) -> None:
    run = tiny_run('tricks = ["pack", "spectral-norm"]')
    convs = [m for m in run.models.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert train(run)[0] == "completed"
    record = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"][-1]
    with_sn = {name: layer for name, layer in record["layers"]["d"].items() if "sn" in layer}
    assert len(with_sn) == len(convs) and all(name.startswith("packed.") for name in with_sn)
    assert record["grad_norm_d"] > 0 and 0 < record["sn_max_d"] < 2  # spectrally normalised, through the wrapper


@pytest.mark.parametrize("extra,architecture,expected", [
    ('tricks = [{ name = "pack", m = 3 }]', "dcgan", "batch_size 8 is not a multiple of m = 3"),
    ('tricks = [{ name = "pack", m = 5 }]', "dcgan", "2, 3 or 4"),
    ('tricks = ["pack", "conditional"]', "dcgan", "no single class label"),
    ('tricks = ["minibatch-std", "pack"]', "dcgan", '"minibatch-std" cannot reach the features and head'),
    ('tricks = ["pack", "minibatch-discrimination"]', "dcgan", '"minibatch-discrimination" cannot reach'),
    ('tricks = ["pack"]', "progressive-dcgan", "growth schedule"),
], ids=["batch-size", "m", "conditional", "minibatch-std", "minibatch-discrimination", "progressive-dcgan"])
def test_refusals_are_one_line(suite, extra, architecture, expected) -> None:
    with pytest.raises(ganbench.UsageError) as error:
        load_suite(suite(extra, architecture=architecture)).runs("default")
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_an_architecture_that_keeps_what_it_built_is_refused_at_build(tiny_run, monkeypatch) -> None:
    """The build-time guard behind the progressive-dcgan refusal, for architectures check() cannot name."""
    monkeypatch.setattr(pack, "STATEFUL_ARCHITECTURES", ())
    with pytest.raises(ganbench.UsageError) as error:
        tiny_run('tricks = ["pack"]', architecture="progressive-dcgan")
    assert "keeps state from building its models (schedule)" in str(error.value) and "\n" not in str(error.value)
