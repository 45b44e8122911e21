"""The mixture-modes metric (VEEGAN §5.1): the counter on real mixture samples, on the 3-std
boundary and against a plain-loop reference; skipping by `every`; and inside a real training run."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ganbench
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import execute
from ganbench_plugins.datasets.mixtures import Grid25, GridParams, Ring8, RingParams
from ganbench_plugins.metrics.mixture_modes import MixtureModes, Params, count_modes

CPU = torch.device("cpu")


def ring8():
    return Ring8(RingParams()).load(CPU)


def grid25():
    return Grid25(GridParams()).load(CPU)


def draw(data, n: int, seed: int = 0):
    return data.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make, k", [(ring8, 8), (grid25, 25)])
def test_real_samples_cover_every_mode(make, k):
    data = make()
    x, _ = draw(data, 2500)
    found = count_modes(x, data.modes, data.std)
    assert found.covered == k
    # For an isotropic 2-D Gaussian, |x - mode| / std is Rayleigh: P(r <= 3) = 1 - exp(-9/2).
    assert found.high_quality_fraction == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert int(found.hits_per_mode.sum()) == round(found.high_quality_fraction * 2500)


@pytest.mark.parametrize("make, k", [(ring8, 8), (grid25, 25)])
def test_samples_from_one_mode_cover_one(make, k):
    data = make()
    x, labels = draw(data, 2500)
    only = x[labels == 3]
    found = count_modes(only, data.modes, data.std)
    assert found.covered == 1
    assert found.hits_per_mode.nonzero().flatten().tolist() == [3]
    assert len(found.hits_per_mode) == k


def test_samples_far_from_every_mode_cover_none():
    data = ring8()
    far = torch.tensor([[100.0, 100.0], [0.0, 0.0], [-50.0, 3.0]])
    found = count_modes(far, data.modes, data.std)
    assert found.covered == 0 and found.high_quality_fraction == 0.0
    assert found.hits_per_mode.sum() == 0


def test_the_3_std_boundary():
    data = ring8()
    mode = data.modes[2]
    direction = torch.tensor([0.6, 0.8])  # unit length
    inside = mode + direction * 3 * data.std * (1 - 1e-4)
    outside = mode + direction * 3 * data.std * (1 + 1e-4)
    assert count_modes(inside[None], data.modes, data.std).high_quality_fraction == 1.0
    assert count_modes(outside[None], data.modes, data.std).high_quality_fraction == 0.0
    assert count_modes(outside[None], data.modes, data.std, std_multiple=3.1).covered == 1


def test_min_hits():
    data = ring8()
    x = torch.stack([data.modes[0]] * 3 + [data.modes[1]])
    assert count_modes(x, data.modes, data.std, min_hits=1).covered == 2
    assert count_modes(x, data.modes, data.std, min_hits=2).covered == 1
    assert count_modes(x, data.modes, data.std, min_hits=4).covered == 0
    assert count_modes(x, data.modes, data.std).hits_per_mode.tolist() == [3, 1, 0, 0, 0, 0, 0, 0]


def test_non_finite_samples_are_low_quality():
    data = ring8()
    x = torch.stack([data.modes[0], torch.tensor([float("nan"), 0.0]), torch.tensor([float("inf"), 1.0])])
    found = count_modes(x, data.modes, data.std)
    assert found.covered == 1 and found.high_quality_fraction == pytest.approx(1 / 3)


def test_agrees_with_a_plain_loop():
    # A reference computed another way: one sample at a time, as PacGAN's MetricLogger does.
    data = grid25()
    g = torch.Generator().manual_seed(1)
    x = data.modes[torch.randint(25, (300,), generator=g)] + 0.12 * torch.randn(300, 2, generator=g)
    hits = [0] * 25
    for point in x.tolist():
        d = [math.dist(point, mode) for mode in data.modes.tolist()]
        j = min(range(25), key=d.__getitem__)
        if d[j] <= 3 * data.std:
            hits[j] += 1
    found = count_modes(x, data.modes, data.std, min_hits=2)
    assert found.hits_per_mode.tolist() == hits
    assert found.covered == sum(h >= 2 for h in hits)
    assert found.high_quality_fraction == pytest.approx(sum(hits) / 300)


def fake_run(data, steps: int = 10, eval_every: int = 2):
    """The parts of a Run that `ganbench_evaluate` and `generate` read; latents are 2-D normal."""
    hook = SimpleNamespace(ganbench_sample_latent=lambda run, n: torch.randn(n, 2, generator=run.rng))
    settings = SimpleNamespace(steps=steps, eval_every=eval_every, dataset=SimpleNamespace(name="ring8"))
    return SimpleNamespace(settings=settings, data=data, seed=0, device=CPU, hook=hook,
                           rng=torch.Generator().manual_seed(0))


def test_every_skips_eval_points_but_never_the_last_step():
    metric = MixtureModes(Params(samples=50, every=2))
    run = fake_run(ring8(), steps=9, eval_every=2)
    evaluated = [s for s in (2, 4, 6, 8, 9) if metric.ganbench_evaluate(run, s, nn.Identity()) is not None]
    assert evaluated == [4, 8, 9]


def test_data_without_modes_is_a_clear_error():
    points = ganbench.TensorData(torch.zeros(4, 2), None, "points")
    with pytest.raises(ganbench.UsageError, match="mixture-modes.*modes"):
        MixtureModes(Params(samples=8)).ganbench_evaluate(fake_run(points), 10, nn.Identity())


RING_SUITE = """
[suite]
name = "ring"
question = "Does mixture-modes evaluate inside a run?"
seeds = [0]

[dataset]
name = "ring8"

[defaults]
architecture = { name = "mlp", width = 16 }
metrics = [{ name = "mixture-modes", samples = 200 }]
z_dim = 8
batch_size = 8
steps = 2
log_every = 1
eval_every = 1
grid_size = 4

[[configs]]
name = "a"
"""


def test_metric_in_a_tiny_ring8_run(write_suite, tmp_path):
    spec = load_suite(write_suite(RING_SUITE)).runs("default")[0]
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    for record in evals:
        assert 0 <= record["modes_covered"] <= 8
        assert 0.0 <= record["high_quality_fraction"] <= 1.0
        provenance = record["provenance"]["mixture-modes"]
        assert provenance["samples"] == 200 and provenance["modes_total"] == 8
        assert provenance["std"] == pytest.approx(0.02) and provenance["std_multiple"] == 3.0
    metrics = json.loads((tmp_path / "run" / "status.json").read_text())["metrics"]
    for key in ("modes_covered", "high_quality_fraction"):
        assert metrics["final"][key] == evals[-1][key]
        assert metrics["best"][key]["value"] == max(r[key] for r in evals)
        assert metrics["better"][key] == "max"


def test_refused_for_image_data(tiny_suite):
    with pytest.raises(ganbench.UsageError, match='metric "mixture-modes" cannot be used here'):
        load_suite(tiny_suite('metrics = [{ name = "mixture-modes" }]'))


# --- counting rules (VEEGAN's and PacGAN's) and the convergence floor ---------------------------


@pytest.mark.parametrize("make", [ring8, grid25])
def test_the_two_rules_agree_on_isotropic_mixtures(make):
    # ring8 and grid25 share one isotropic std, where VEEGAN's Euclidean 3-std test and PacGAN's
    # standardised distance are the same test; a smear makes both rules judge many points.
    data = make()
    g = torch.Generator().manual_seed(3)
    x = data.modes[torch.randint(len(data.modes), (2000,), generator=g)] + 2.5 * data.std * torch.randn(2000, 2, generator=g)
    veegan = count_modes(x, data.modes, data.std, rule="veegan")
    pacgan = count_modes(x, data.modes, data.std, rule="pacgan")
    assert 0.3 < veegan.high_quality_fraction < 0.9  # both sides of the boundary are exercised
    assert veegan.hits_per_mode.tolist() == pacgan.hits_per_mode.tolist()


def test_pacgan_rule_measures_each_mode_in_its_own_units():
    # Two modes with different spreads: PacGAN's code divides by each mode's variance
    # (extensions.py, MetricLogger), so a point 0.25 from a wide mode (std 0.1) is high quality
    # while the same offset from a narrow one (std 0.01) is not. A plain loop is the reference.
    modes = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    std = torch.tensor([[0.1, 0.1], [0.01, 0.01]])
    x = torch.tensor([[0.25, 0.0], [5.25, 0.0], [5.02, 0.0], [0.0, 0.35]])
    found = count_modes(x, modes, std, rule="pacgan")
    expected = []
    for point in x.tolist():
        d = [math.sqrt(sum((p - m) ** 2 / s ** 2 for p, m, s in zip(point, mode, spread)))
             for mode, spread in zip(modes.tolist(), std.tolist())]
        j = min(range(2), key=d.__getitem__)
        expected.append(j if d[j] < 3 else None)
    assert expected == [0, None, 1, None]
    assert found.hits_per_mode.tolist() == [1, 1] and found.high_quality_fraction == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one std"):
        count_modes(x, modes, std, rule="veegan")
    with pytest.raises(ValueError, match="unknown counting rule"):
        count_modes(x, modes, 0.1, rule="metz")


def test_the_rule_and_the_floor_are_recorded():
    data = ring8()
    run = fake_run(data)
    sharp = MixtureModes(Params(samples=500, rule="pacgan")).ganbench_evaluate(
        run, 10, SampleFrom(data))
    assert sharp.provenance["rule"] == "pacgan" and "PacGAN reference code" in sharp.provenance["protocol"]
    assert sharp.convergence.key == "high_quality_fraction" and sharp.convergence.at_least == 0.5
    assert sharp.convergence.guards == ("modes_covered",)
    assert sharp.values["high_quality_fraction"] > 0.99  # real samples: converged


class SampleFrom(nn.Module):
    """A test double for a trained G: returns fresh samples of the data itself (converged by construction)."""

    def __init__(self, data) -> None:
        super().__init__()
        self.data = data

    def forward(self, z):
        return self.data.sample(len(z), torch.Generator().manual_seed(0))[0]


def test_a_smear_along_the_ring_is_below_the_floor():
    # The failure the floor exists for: points spread evenly along the ring "cover" all 8 modes.
    data = ring8()
    angles = torch.linspace(0, 2 * math.pi, 2501)[:-1]
    smear = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    found = count_modes(smear, data.modes, data.std)
    assert found.covered == 8
    assert found.high_quality_fraction == pytest.approx(8 * 2 * 0.06 / (2 * math.pi * 2), abs=0.01)
    assert found.high_quality_fraction < Params().converged_quality


def test_the_floor_is_not_part_of_the_run_id(write_suite):
    plain = load_suite(write_suite(RING_SUITE)).runs("default")[0]
    floored = load_suite(write_suite(RING_SUITE.replace('samples = 200 }', 'samples = 200, converged_quality = 0.9 }'))
                         ).runs("default")[0]
    ruled = load_suite(write_suite(RING_SUITE.replace('samples = 200 }', 'samples = 200, rule = "pacgan" }'))
                       ).runs("default")[0]
    assert floored.resolved()["settings"]["metrics"][0]["params"]["converged_quality"] == 0.9
    assert floored.run_id == plain.run_id  # the report reads the floor; no number changes
    assert ruled.run_id != plain.run_id  # the rule changes the counts, so it is identity
