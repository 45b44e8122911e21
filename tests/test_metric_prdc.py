"""The prdc metric: precision, recall, density and coverage against an independent numpy/scipy
computation from the papers' definitions, falling recall under mode dropping on ring8, and the
metric inside real runs (ring8 in pixel space, mnist5k in the classifier's space)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

import ganbench
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import execute
from ganbench_plugins.datasets.mixtures import Ring8, RingParams
from ganbench_plugins.metrics.prdc import density_coverage, prdc, precision_recall

CPU = torch.device("cpu")


def reference(real: np.ndarray, fake: np.ndarray, k: int, k_coverage: int) -> dict[str, float]:
    """The four metrics as the papers define them, by brute force in float64 numpy.

    Kynkäänniemi et al. 2019 (eq. 1-3): f(x, Φ) = 1 when x lies within the k-NN radius of some
    sample of Φ (distance <= radius); precision = mean f(fake, real), recall = mean f(real, fake).
    Naeem et al. 2020 (eq. 3-4): density = 1/(kM) Σ_j Σ_i 1[fake_j inside B(real_i, NND_k(real_i))],
    coverage = 1/N Σ_i 1[∃ j: fake_j inside B(real_i, NND_k(real_i))], both strict (<).
    """
    def radii(x, kk):
        d = cdist(x, x)
        return np.sort(d, axis=1)[:, kk]  # column 0 is the sample itself

    d_rf = cdist(real, fake)  # (N, M)
    r3_real, r3_fake = radii(real, k), radii(fake, k)
    precision = np.mean([(d_rf[:, j] <= r3_real).any() for j in range(len(fake))])
    recall = np.mean([(d_rf[i, :] <= r3_fake).any() for i in range(len(real))])
    r5 = radii(real, k_coverage)
    density = sum((d_rf[:, j] < r5).sum() for j in range(len(fake))) / (k_coverage * len(fake))
    coverage = np.mean([d_rf[i].min() < r5[i] for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def gaussians(n_real=400, n_fake=300, dim=16, shift=0.5, scale=1.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n_real, dim, generator=g, dtype=torch.float64)
    fake = shift + scale * torch.randn(n_fake, dim, generator=g, dtype=torch.float64)
    return real, fake


@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (0.5, 1.3), (1.0, 0.6)])
def test_matches_an_independent_computation(shift, scale):
    real, fake = gaussians(shift=shift, scale=scale)
    ours = prdc(real, fake, k=3, k_coverage=5)
    theirs = reference(real.numpy(), fake.numpy(), 3, 5)
    for key in ("precision", "recall", "coverage"):
        # Counts of samples: a distance within float rounding of a radius may flip one sample.
        assert ours[key] == pytest.approx(theirs[key], abs=1.5 / 300), key
    assert ours["density"] == pytest.approx(theirs["density"], abs=1.5 / (5 * 300))
    assert 0 < ours["precision"] <= 1 and 0 < ours["recall"] <= 1


def test_the_metrics_see_what_they_are_for():
    real, _ = gaussians()
    near, _ = gaussians(n_real=300, seed=1)  # the same distribution, fresh draws
    narrow = 0.3 * gaussians(n_real=300, seed=2)[0]  # inside the real support, missing its tails
    wide = 3.0 * gaussians(n_real=300, seed=3)[0]  # spills far outside it
    same, low_diversity, low_fidelity = prdc(real, near), prdc(real, narrow), prdc(real, wide)
    assert same["precision"] > 0.6 and same["recall"] > 0.6 and 0.6 < same["density"] < 1.4
    assert low_diversity["recall"] < same["recall"] - 0.3 and low_diversity["precision"] > 0.9
    assert low_fidelity["precision"] < same["precision"] - 0.3
    assert low_diversity["coverage"] < same["coverage"]


def test_recall_falls_as_a_ring8_generator_drops_modes():
    # Mode collapse, as the metric sees it: "generated" samples are real ring8 draws restricted to
    # the first m of the 8 modes. Precision stays high (every sample sits on a real mode) while
    # recall and coverage fall with the modes left: recall to about m / 8, coverage to m / 8 of its
    # value with every mode (below 1 even then: 800 samples against 1,600 real ones miss some balls).
    data = Ring8(RingParams()).load(CPU)
    real, _ = data.sample(1600, torch.Generator().manual_seed(0))
    pool, labels = data.sample(8000, torch.Generator().manual_seed(1))
    recalls, full_coverage = [], None
    for kept in (8, 4, 2, 1):
        fake = pool[labels < kept][:800]
        values = prdc(real, fake)
        assert values["precision"] > 0.9, kept
        assert values["recall"] == pytest.approx(kept / 8, abs=0.08), kept
        full_coverage = full_coverage or values["coverage"]
        assert values["coverage"] == pytest.approx(full_coverage * kept / 8, abs=0.08), kept
        recalls.append(values["recall"])
    assert recalls == sorted(recalls, reverse=True)


def test_precision_recall_is_torch_fidelitys_and_argument_order_matters():
    real, fake = gaussians(shift=1.0, scale=0.6)
    precision, recall = precision_recall(real, fake, 3)
    swapped = precision_recall(fake, real, 3)
    assert swapped == (recall, precision)
    with pytest.raises(ValueError, match="more than k"):
        prdc(real[:4], fake)
    density, coverage = density_coverage(real, real, 5)
    assert coverage == 1.0  # each real sample is the fake at distance 0 < its radius


RING_SUITE = """
[suite]
name = "ring"
question = "Does prdc evaluate inside a run?"
seeds = [0]

[dataset]
name = "ring8"

[defaults]
architecture = {{ name = "mlp", width = 16 }}
metrics = [{{ name = "prdc", samples = 200, real = 300 }}{extra}]
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
    spec = load_suite(write_suite(RING_SUITE.format(extra=""))).runs("default")[0]
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    for record in evals:
        for key in ("precision", "recall", "coverage"):
            assert 0.0 <= record[key] <= 1.0
        assert record["density"] >= 0
        provenance = record["provenance"]["prdc"]
        assert provenance["space"] == "pixels" and provenance["feature_dim"] == 2
        assert provenance["generated_samples"] == 200 and provenance["real_samples"] == 300
        assert provenance["k"] == 3 and provenance["k_coverage"] == 5
    import json

    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["metrics"]["better"]["recall"] == "max"
    assert "density" not in status["metrics"]["better"]  # recorded, not ranked


def test_refusals(write_suite, tiny_suite):
    with pytest.raises(ganbench.UsageError, match="classifier space reads images"):
        load_suite(write_suite(RING_SUITE.format(extra="").replace('name = "prdc"', 'name = "prdc", space = "classifier"')))
    with pytest.raises(ganbench.UsageError, match="k-NN balls need more than 5"):
        load_suite(write_suite(RING_SUITE.format(extra="").replace("real = 300", "real = 5")))


def test_classifier_space_in_a_tiny_mnist_run(tiny_suite, tmp_path, one_thread):
    suite = tiny_suite('metrics = [{ name = "prdc", space = "classifier" }]\neval_samples = 64\nreal_samples = 128')
    spec = load_suite(suite).runs("default")[0]
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    (record,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert record["provenance"]["prdc"]["space"] == "classifier"
    assert record["provenance"]["prdc"]["feature_dim"] == 128
    assert 0.0 <= record["recall"] <= 1.0
