"""The metric toolkit (`ganbench.features`): Inception features that are FID's own and agree with
fid-helper's TorchScript, the real-feature cache, eval samples that leave the training stream
alone, and the older `ganbench.evaluation` names."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ganbench import evaluation, features, fid
from ganbench_plugins.datasets.mixtures import Ring8, RingParams
from ganbench_plugins.datasets.mnist5k import Mnist5k
from test_fid import cache, inception_folder, mnist, reference_features, rgb  # noqa: F401 (fixtures)
from test_inception import needs_fid_helper, one_thread  # noqa: F401 (a fixture)

CPU = torch.device("cpu")


def as_model_input(digits: torch.Tensor) -> torch.Tensor:
    """uint8 digits as the [-1, 1] floats a generator gives (to_uint8_rgb maps them back exactly)."""
    return digits.float() / 127.5 - 1


@needs_fid_helper
def test_inception_features_are_fids_and_agree_with_fid_helpers_torchscript(cache, one_thread, mnist):
    digits = mnist[:6]
    ours = features.inception(as_model_input(digits), batch_size=4)
    assert ours.shape == (6, 2048) and ours.dtype == torch.float32
    # The independent reference: fid-helper's TorchScript on a resize written in numpy.
    independent = reference_features(rgb(digits))
    assert np.abs(ours.double().numpy() - independent).max() < 1e-3 * np.abs(independent).max()
    # What FID used: the real-side features torch-fidelity cached in the same computation.
    real = rgb(digits, "six digits")
    fid.fid_kid(rgb(mnist[3000:3004]), real, weights=fid.resolve_weights(), device=CPU)
    cached = torch.load(fid.cache_files(fid.cache_name(fid.cache_key(real, fid.resolve_weights())))[0],
                        weights_only=False)
    assert torch.allclose(ours, cached.float(), rtol=1e-4, atol=1e-4)


def tiny_run(data, real_samples=12, eval_samples=10):
    """The parts of a Run the toolkit reads (a test double for plumbing); latents are 2-D normal."""
    hook = SimpleNamespace(ganbench_sample_latent=lambda run, n: torch.randn(n, 2, generator=run.rng))
    settings = SimpleNamespace(steps=10, eval_every=2, real_samples=real_samples, eval_samples=eval_samples)
    run = SimpleNamespace(settings=settings, data=data, seed=3, device=CPU, hook=hook,
                          rng=torch.Generator().manual_seed(0))
    return run


def test_eval_samples_are_fixed_and_leave_the_training_stream_alone(monkeypatch):
    monkeypatch.setattr(features, "Run", SimpleNamespace)  # the double passes for a Run
    run = tiny_run(Ring8(RingParams()).load(CPU))
    before = run.rng.get_state()
    first = features.eval_samples(run, nn.Identity(), 600)
    assert torch.equal(run.rng.get_state(), before)
    assert torch.equal(features.eval_samples(run, nn.Identity(), 600), first)
    # The batches are the same samples, in order (torch's CPU randn draws differently for a batch
    # of 7 than for one of 250, so the eval batch size is a constant: EVAL_BATCH).
    batches = list(features.eval_batches(run, nn.Identity(), 600))
    assert [len(b) for b in batches] == [250, 250, 100] and torch.equal(torch.cat(batches), first)


def test_real_subset_is_shared_and_described(monkeypatch):
    monkeypatch.setattr(features, "Run", SimpleNamespace)
    data = Mnist5k().load(CPU)
    a = features.real_subset(tiny_run(data))
    b = features.real_subset(data, 12)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert a.split == "12 of 5000 samples (seeded subset, seed 0)"
    with pytest.raises(TypeError, match="needs n"):
        features.real_subset(data)


@needs_fid_helper
def test_real_inception_features_are_cached_on_disk(cache, one_thread, monkeypatch):
    monkeypatch.setattr(features, "Run", SimpleNamespace)
    run = tiny_run(Mnist5k().load(CPU), real_samples=5)
    first, split = features.real_features(run, "inception")
    assert first.shape == (5, 2048) and split.startswith("5 of 5000")
    assert len(list((cache / "features").glob("inception-*.pt"))) == 1
    features._REAL_FEATURES.clear()  # a new process: only the disk remains

    def no_inception(*args, **kwargs):
        raise AssertionError("Inception ran on the real side again")

    monkeypatch.setattr(features, "inception", no_inception)
    again, _ = features.real_features(run, "inception")
    assert torch.equal(again, first)


def test_pixels_and_space_checks():
    points = Ring8(RingParams()).load(CPU)
    assert features.pixels(torch.ones(3, 2)).shape == (3, 2)
    assert features.pixels(iter([torch.zeros(2, 1, 4, 4), torch.ones(1, 1, 4, 4)])).shape == (3, 16)
    assert features.space_of("pixels", points) == ""
    assert "reads images" in features.space_of("inception", points)
    assert "unknown feature space" in features.space_of("clip", points)


def test_the_older_names_are_the_toolkits():
    assert evaluation.is_due is features.due
    assert evaluation.generate_batches is features.eval_batches
    assert evaluation.generate is features.eval_samples
    assert evaluation.real_samples is features.real_subset
