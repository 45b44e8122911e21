"""The classifier metric and Stacked MNIST: `ganbench.classifier`, plugins/metrics/classifier.py and
plugins/datasets/stacked_mnist.py.

The real mnist5k classifier takes 10-15 s to train on this project's 2-core CPU, so the tests that
need it are marked slow and share one, trained once per session into a temporary cache. The fast
tests use a double: the same recipe trained on 400 digits (about a second), cached under the full
mnist5k's key so that real runs load it. The Fréchet distance and the KL are checked against
independent computations; the plugin is driven with a generator double that replays real images,
so its outputs are known.
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import ganbench
from ganbench import classifier, inception
from ganbench.evaluation import real_samples
from ganbench.rundir import read_json, read_jsonl, write_atomic
from ganbench.suite import load_suite
from ganbench.trainer import execute
from ganbench_plugins.datasets import stacked_mnist
from ganbench_plugins.datasets.mnist5k import Mnist5k
from ganbench_plugins.metrics import classifier as metric

CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# Fixtures and doubles
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> ganbench.TensorData:
    return Mnist5k().load(CPU)


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory, mnist) -> tuple[Path, classifier.TrainedClassifier]:
    """A cache holding the mnist5k classifier trained by the real recipe, once for the module."""
    root = tmp_path_factory.mktemp("trained-cache")
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(inception.ENV_CACHE_DIR, str(root))
        result = classifier.load_or_train(mnist, CPU)
    print(f"\nmnist5k classifier: held-out accuracy {result.accuracy:.4f} on {result.held_out} digits; "
          f"trained in {result.train_seconds:.1f} s, {time.perf_counter() - started:.1f} s with the statistics")
    return root, result


@pytest.fixture
def trained(trained_cache, monkeypatch) -> classifier.TrainedClassifier:
    """The real mnist5k classifier, with the cache that holds it in use for this test."""
    root, result = trained_cache
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(root))
    return result


@pytest.fixture(scope="module")
def double_cache(tmp_path_factory, mnist) -> Path:
    """A cache holding a test double of the mnist5k classifier: the real recipe trained on 400
    digits, stored under the full mnist5k's content hash."""
    root = tmp_path_factory.mktemp("double-cache")
    few = ganbench.TensorData(mnist.x[:400], mnist.y[:400], "image", 10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(inception.ENV_CACHE_DIR, str(root))
        entry = classifier.train_and_describe(few, mnist.content_hash(), CPU)
        write_atomic(classifier.cache_path(mnist.content_hash()), lambda f: torch.save(entry, f))
    return root


@pytest.fixture
def classifier_double(double_cache, mnist, monkeypatch) -> classifier.TrainedClassifier:
    """The double above, loaded as mnist5k's classifier, with its cache in use for this test."""
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(double_cache))
    loaded = classifier.load_or_train(mnist, CPU)
    assert loaded.cached and loaded.real_count == 400
    return loaded


class ReplayGeneratorDouble(nn.Module):
    """A test double for a generator: ignores its noise and returns the given images in order."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images
        self.served = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = self.images[self.served: self.served + len(z)]
        self.served += len(z)
        assert len(batch) == len(z), "the double ran out of images"
        return batch


def run_double(data: ganbench.Data, tmp_path: Path, eval_samples: int, real: int = 10_000) -> ganbench.Run:
    """A test double of a run at its last step (10), with just what the metric reads."""
    settings = SimpleNamespace(steps=10, eval_every=5, eval_samples=eval_samples, real_samples=real)
    hook = SimpleNamespace(ganbench_sample_latent=lambda run, n: torch.zeros(n, 1))
    return ganbench.Run(settings=settings, seed=0, device=CPU, data=data, dir=tmp_path, hook=hook,
                        rng=torch.Generator())


def evaluate_replay(data, images, tmp_path, real: int = 10_000, **params) -> ganbench.MetricValues:
    plugin = metric.ClassifierMetric(metric.Params(**params))
    run = run_double(data, tmp_path, eval_samples=len(images), real=real)
    return plugin.ganbench_evaluate(run=run, step=10, generator=ReplayGeneratorDouble(images))


def reference_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD written out in torch float64, with Tr((C1 C2)^½) from the eigenvalues of the symmetric
    C1^½ C2 C1^½ (eigh) instead of scipy's sqrtm."""
    def stats(f):
        mean = f.mean(dim=0)
        centred = f - mean
        return mean, centred.T @ centred / (len(f) - 1)

    (m1, c1), (m2, c2) = stats(a.double()), stats(b.double())
    w, v = torch.linalg.eigh(c1)
    root1 = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    trace_root = torch.linalg.eigvalsh(root1 @ c2 @ root1).clamp(min=0).sqrt().sum()
    return float((m1 - m2).square().sum() + c1.trace() + c2.trace() - 2 * trace_root)


def hooked_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Penultimate features read by a forward hook during the full forward pass: another route
    than `classifier.encode_batches`."""
    seen = []
    handle = model.body[-1].register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return seen[0]


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_classifier_reaches_97_percent_on_held_out_mnist5k(trained):
    print(f"held-out accuracy: {trained.accuracy:.4f}")
    assert trained.accuracy >= 0.97
    assert trained.held_out == 1000  # 20% of 5,000
    assert not trained.model.training
    assert trained.recipe == classifier.RECIPE
    assert trained.feature_mean.shape == (classifier.FEATURES,)
    assert trained.feature_cov.shape == (classifier.FEATURES, classifier.FEATURES)
    assert trained.real_count == 5000 and trained.class_counts.sum() == 5000


def refuse_training_double(*args, **kwargs):
    """A test double for `classifier.train` that fails the test if anything trains."""
    raise AssertionError("a cached classifier was trained again")


@pytest.mark.slow
def test_second_load_of_mnist5k_comes_from_the_cache(trained, trained_cache, mnist, monkeypatch):
    monkeypatch.setattr(classifier, "train", refuse_training_double)
    started = time.perf_counter()
    again = classifier.load_or_train(mnist, CPU)
    assert time.perf_counter() - started < 2
    assert again.cached and again.accuracy == trained.accuracy and not trained.cached
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert np.array_equal(again.feature_cov, trained.feature_cov)
    assert classifier.cache_path(mnist.content_hash()).parent == trained_cache[0] / "classifiers"


def test_load_or_train_trains_once_then_reads_the_cache(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(tmp_path))
    few = ganbench.TensorData(mnist.x[:300], mnist.y[:300], "image", 10)
    first = classifier.load_or_train(few, CPU)
    path = classifier.cache_path(few.content_hash())
    assert not first.cached and first.train_seconds > 0
    assert path.parent == tmp_path / "classifiers" and path.is_file()
    assert classifier.RECIPE in path.name and few.content_hash()[:24] in path.name
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary file left
    monkeypatch.setattr(classifier, "train", refuse_training_double)
    again = classifier.load_or_train(few, CPU)
    assert again.cached and again.accuracy == first.accuracy and again.held_out == 60
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert np.array_equal(again.feature_mean, first.feature_mean) and again.class_counts.sum() == 300


def test_cache_key_follows_the_content(mnist):
    changed = ganbench.TensorData(mnist.x.clone(), mnist.y.clone(), "image", 10)
    assert classifier.cache_path(changed.content_hash()) == classifier.cache_path(mnist.content_hash())
    changed.x[0, 0, 0, 0] += 1
    assert classifier.cache_path(changed.content_hash()) != classifier.cache_path(mnist.content_hash())


def test_training_is_seeded_and_leaves_the_global_state_alone(mnist):
    small = ganbench.TensorData(mnist.x[:400], mnist.y[:400], "image", 10)
    torch.manual_seed(123)
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    first, accuracy, held_out = classifier.train(small, CPU, epochs=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # a GAN run's random stream is untouched
    assert torch.get_num_threads() == threads_before
    second, again, _ = classifier.train(small, CPU, epochs=1)
    assert held_out == 80 and accuracy == again
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_any_channel_count_and_size_fits_the_network():
    for channels, side in ((1, 28), (3, 32), (3, 64)):
        model = classifier.SmallCnn(channels, 7).eval()
        x = torch.rand(2, channels, side, side) * 2 - 1
        assert model(x).shape == (2, 7) and model.features(x).shape == (2, classifier.FEATURES)


def test_unlabelled_or_point_data_is_refused():
    with pytest.raises(ValueError, match="labelled images"):
        classifier.load_or_train(ganbench.TensorData(torch.zeros(4, 2), None, "points"), CPU)


def test_shifts_move_whole_images_by_at_most_two_pixels():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1
    moved = classifier.shifted(x, 2, torch.Generator().manual_seed(0))
    rows, cols = torch.nonzero(moved[:, 0] == 1)[:, 1:].T
    assert moved.sum() == 64 and rows.sub(4).abs().max() == 2 and cols.sub(4).abs().max() == 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 15  # offsets differ between images


# --------------------------------------------------------------------------------------------------
# Fréchet distance in the classifier's features
# --------------------------------------------------------------------------------------------------


def all_features(model: nn.Module, mnist: ganbench.TensorData) -> torch.Tensor:
    """A classifier's features of all 5,000 digits, in index order."""
    features, _ = classifier.encode_batches(model, mnist.batch(torch.arange(5000)).split(classifier.EVAL_BATCH))
    return features


def test_frechet_distance_agrees_with_an_independent_computation(classifier_double, mnist):
    features = all_features(classifier_double.model, mnist)
    halves = (features[0::2], features[1::2])
    ones = features[mnist.y == 1]
    few = (features[:20], features[1000:])  # 20 samples in 128 dimensions: a singular covariance
    for a, b in (halves, (ones, features), few):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the expected singular-matrix warning is handled inside
            ours = classifier.frechet_distance(*classifier.feature_statistics(a), *classifier.feature_statistics(b))
        assert ours == pytest.approx(reference_frechet(a, b), rel=1e-6)
    # The same features by another route: a forward hook on the whole network.
    images = mnist.batch(torch.arange(300))
    assert torch.allclose(hooked_features(classifier_double.model, images).double(), features[:300], atol=1e-5)


@pytest.mark.slow
def test_class_fd_is_small_between_real_halves_and_large_for_one_class(trained, mnist):
    features = all_features(trained.model, mnist)
    first, second = classifier.feature_statistics(features[0::2]), classifier.feature_statistics(features[1::2])
    only_ones = classifier.feature_statistics(features[mnist.y == 1])
    halves = classifier.frechet_distance(*first, *second)
    collapsed = classifier.frechet_distance(*only_ones, *second)
    print(f"class FD: real halves {halves:.2f}, digit 1 alone {collapsed:.1f}")
    assert 0 < halves < 0.02 * collapsed


# --------------------------------------------------------------------------------------------------
# Coverage and KL: the rules, then the plugin on replayed real images
# --------------------------------------------------------------------------------------------------


def test_coverage_rule_needs_a_tenth_of_the_real_share():
    real = np.array([100, 100, 100, 0])
    assert metric.classes_covered(np.array([30, 30, 1, 0]), real) == 2  # 1/61 < 0.1 × 1/3
    assert metric.classes_covered(np.array([30, 30, 3, 0]), real) == 3  # 3/63 ≥ 0.1 × 1/3
    assert metric.classes_covered(np.array([58, 40, 2, 0]), real) == 2  # 2/100 < 0.1 × 1/3
    assert metric.classes_covered(np.array([5, 0, 0, 5]), real) == 1  # a class real data lacks never counts
    assert metric.classes_covered(np.zeros(4, dtype=int), real) == 0


def test_histogram_kl_agrees_with_scipy_entropy():
    p, q = np.array([5, 1, 3, 7]), np.array([2, 2, 9, 1])
    assert metric.histogram_kl(p, q, eps=0.0) == pytest.approx(scipy.stats.entropy(p, q), rel=1e-12)
    assert metric.histogram_kl(p, q) == pytest.approx(scipy.stats.entropy(p, q), abs=1e-8)
    assert metric.histogram_kl(p, p) == 0.0
    assert math.isfinite(metric.histogram_kl(np.array([1, 1]), np.array([1, 0])))  # ε keeps it finite


def test_provenance_records_how_the_values_were_measured(classifier_double, mnist, tmp_path):
    result = evaluate_replay(mnist, mnist.batch(torch.arange(200)), tmp_path, real=1000)
    assert result.metric == "classifier" and result.better == metric.BETTER
    assert set(result.values) == {metric.CLASS_FD, metric.CLASSES_COVERED, metric.CLASS_KL, metric.CLASS_CONFIDENCE}
    assert all(math.isfinite(v) for v in result.values.values())
    assert 0.0 < result.values[metric.CLASS_CONFIDENCE] <= 1.0
    c = result.convergence
    assert (c.key, c.at_least, c.guards) == (metric.CLASS_CONFIDENCE, 0.8, (metric.CLASSES_COVERED, metric.CLASS_KL))
    p = result.provenance
    assert p["classifier"] == classifier.RECIPE and p["classifier_accuracy"] == classifier_double.accuracy
    assert p["classifier_held_out"] == 80 and p["classifier_data_sha256"] == mnist.content_hash()
    assert (p["generated_samples"], p["real_samples"], p["classes_total"], p["every"]) == (200, 1000, 10, 1)
    assert p["real_split"] == real_samples(mnist, 1000)[2]  # the double's statistics cover 400 digits only
    assert "0.1" in p["coverage_rule"] and "1e-10" in p["kl"] and "sqrtm" in p["fd_rule"]
    assert "classifier_accuracy" not in result.values  # provenance, never a value to rank


@pytest.mark.slow
def test_real_digits_cover_all_ten_classes_with_kl_near_zero(trained, mnist, tmp_path):
    half = mnist.batch(torch.arange(0, 5000, 2))
    result = evaluate_replay(mnist, half, tmp_path)
    assert result.metric == "classifier" and result.better == metric.BETTER
    assert result.values[metric.CLASSES_COVERED] == 10
    assert result.values[metric.CLASS_KL] < 0.01
    assert result.values[metric.CLASS_FD] < 5
    assert result.values[metric.CLASS_CONFIDENCE] > 0.95  # real digits clear the convergence floor (0.8)
    p = result.provenance
    assert p["classifier_accuracy"] == trained.accuracy
    assert (p["generated_samples"], p["real_samples"]) == (2500, 5000)
    assert "cached" in p["real_split"]  # all 5,000 digits: the statistics stored with the classifier


@pytest.mark.slow
def test_one_digit_covers_one_class_with_kl_near_log_10(trained, mnist, tmp_path):
    ones = mnist.batch(torch.nonzero(mnist.y == 1)[:, 0])
    result = evaluate_replay(mnist, ones, tmp_path)
    assert result.values[metric.CLASSES_COVERED] == 1
    assert result.values[metric.CLASS_KL] == pytest.approx(math.log(10), abs=0.1)
    assert result.values[metric.CLASS_FD] > 100


@pytest.mark.slow
def test_a_real_subset_is_encoded_when_the_cache_does_not_cover_it(trained, mnist, tmp_path):
    half = mnist.batch(torch.arange(0, 5000, 2))
    result = evaluate_replay(mnist, half, tmp_path, real=1000)
    _, _, split = real_samples(mnist, 1000)
    assert result.provenance["real_split"] == split and result.provenance["real_samples"] == 1000
    assert result.values[metric.CLASSES_COVERED] == 10 and result.values[metric.CLASS_FD] < 10


def test_every_skips_eval_points_but_never_the_last(mnist, tmp_path):
    plugin = metric.ClassifierMetric(metric.Params(every=2))
    run = run_double(mnist, tmp_path, eval_samples=4)
    # eval_every = 5: step 5 is the first eval point, skipped; step 10 is the last, always evaluated.
    assert plugin.ganbench_evaluate(run=run, step=5, generator=ReplayGeneratorDouble(torch.zeros(0))) is None


def test_check_accepts_labelled_images_and_refuses_the_rest():
    check = metric.ClassifierMetric.check
    params = metric.Params()

    def setup(kind, shape, classes, eval_samples=100):
        return SimpleNamespace(data=ganbench.DataInfo(kind, shape, classes), eval_samples=eval_samples)

    assert check(params, setup("image", (1, 28, 28), 10)) is None
    assert check(params, SimpleNamespace(data=stacked_mnist.StackedMnist().info(), eval_samples=100)) is None
    assert "unlabelled images" in check(params, setup("image", (3, 64, 64), None))
    assert '"points"' in check(params, setup("points", (2,), 8))
    assert "at least 2" in check(params, setup("image", (1, 28, 28), 10, eval_samples=1))
    assert check(metric.Params(samples=50), setup("image", (1, 28, 28), 10, eval_samples=1)) is None


# --------------------------------------------------------------------------------------------------
# Stacked MNIST
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stacked(mnist) -> stacked_mnist.StackedMnistData:
    return stacked_mnist.StackedMnistData(mnist)


def test_stacked_mnist_info_and_registration():
    plugin = stacked_mnist.StackedMnist()
    assert plugin.name == "stacked-mnist" and plugin.params is None
    assert plugin.info() == ganbench.DataInfo("image", (3, 28, 28), 1000)
    assert stacked_mnist.ganbench_register_datasets() == [stacked_mnist.StackedMnist]
    assert stacked_mnist.StackedMnist.check(None, None) is None
    data = plugin.load(CPU)
    assert data.info == plugin.info() and data.device == CPU and len(data.digits) == 5000


def test_stacked_samples_reproduce_from_the_rng(stacked):
    first, first_labels = stacked.sample(50, torch.Generator().manual_seed(3))
    again, again_labels = stacked.sample(50, torch.Generator().manual_seed(3))
    other, _ = stacked.sample(50, torch.Generator().manual_seed(4))
    assert first.shape == (50, 3, 28, 28) and first_labels.shape == (50,) and first_labels.dtype == torch.int64
    assert first.min() == -1 and first.max() == 1
    assert torch.equal(first, again) and torch.equal(first_labels, again_labels)
    assert not torch.equal(first, other)


def test_stacked_labels_read_the_channels_digits(stacked, mnist):
    digit_of = {image.numpy().tobytes(): int(label) for image, label in zip(mnist.x[:, 0], mnist.y)}
    x, labels = stacked.sample(200, torch.Generator().manual_seed(0))
    pixels = ((x + 1) * 127.5).round().to(torch.uint8)
    for image, label in zip(pixels, labels.tolist()):
        r, g, b = (digit_of[channel.numpy().tobytes()] for channel in image)
        assert label == 100 * r + 10 * g + b
    assert len(set(labels.tolist())) > 150  # 200 draws from 1,000 modes rarely repeat


def test_stacked_hash_derives_from_the_digits(stacked, mnist):
    expected = hashlib.sha256(f"{mnist.content_hash()}stacked-3".encode()).hexdigest()
    assert stacked.content_hash() == expected != mnist.content_hash()


@pytest.mark.slow
def test_the_digit_classifier_reads_most_stacked_triples(trained, stacked):
    x, labels = stacked.sample(1000, torch.Generator().manual_seed(1))
    digits = classifier.predict(trained.model, x.reshape(-1, 1, 28, 28)).reshape(-1, 3)
    right = (stacked_mnist.mode_labels(digits) == labels).double().mean().item()
    print(f"stacked triples read right: {right:.3f}")
    assert right > 0.9  # above accuracy³: most of these digits were in its training set


@pytest.mark.slow
def test_real_stacked_samples_cover_what_a_uniform_draw_predicts(trained, stacked, tmp_path):
    n = 3000
    x, _ = stacked.sample(n, torch.Generator().manual_seed(2))
    result = evaluate_replay(stacked, x, tmp_path)
    expected = 1000 * (1 - (1 - 1 / 1000) ** n)  # 950.3
    covered = result.values[metric.MODES_COVERED]
    print(f"modes covered by {n} real stacked samples: {covered:.0f} (uniform draw predicts {expected:.1f})")
    assert abs(covered - expected) < 25  # the spread of a uniform draw is about 7
    assert set(result.values) == {metric.MODES_COVERED, metric.MODE_KL, metric.DIGIT_FD, metric.CLASS_CONFIDENCE}
    assert result.better == metric.STACKED_BETTER
    # real triples are within the convergence bound, so a report would rank on their coverage
    c = result.convergence
    assert (c.key, c.at_least, c.at_most, c.guards) == (metric.DIGIT_FD, None, 180.0, (metric.MODES_COVERED, metric.MODE_KL))
    assert result.values[metric.DIGIT_FD] < 5 and c.holds(result.values[metric.DIGIT_FD])
    # 3 samples per mode on average: the empirical histogram is far from flat, but far below log(1000).
    assert 0 < result.values[metric.MODE_KL] < 1
    p = result.provenance
    assert p["classifier_data_sha256"] == stacked.digits.content_hash() and p["data_sha256"] == stacked.content_hash()
    assert p["classifier_accuracy"] == trained.accuracy and p["generated_samples"] == n
    assert p["modes_total"] == 1000 and "at least one" in p["coverage_rule"]


@pytest.mark.slow
def test_one_repeated_triple_covers_one_mode(trained, stacked, tmp_path):
    x, _ = stacked.sample(1, torch.Generator().manual_seed(5))
    result = evaluate_replay(stacked, x.repeat(300, 1, 1, 1), tmp_path)
    assert result.values[metric.MODES_COVERED] == 1
    assert result.values[metric.MODE_KL] == pytest.approx(math.log(1000), abs=1e-4)


@pytest.mark.slow
def test_the_stacked_guard_catches_blobs_that_confidence_believes(trained, stacked, tmp_path):
    # Each channel the mean of 4 random digits: a blob, as an early G draws. The classifier still reads
    # them with high confidence (a collapsed 200-step G: 0.83-0.97), so confidence would let them pass.
    g = torch.Generator().manual_seed(6)
    x, _ = stacked.sample(4 * 500, g)
    blobs = x.reshape(4, 500, *x.shape[1:]).mean(dim=0)
    result = evaluate_replay(stacked, blobs, tmp_path)
    print(f"blobs: digit FD {result.values[metric.DIGIT_FD]:.0f}, confidence {result.values[metric.CLASS_CONFIDENCE]:.3f}")
    assert not result.convergence.holds(result.values[metric.DIGIT_FD])


@pytest.mark.slow
def test_the_stacked_guard_lets_sharp_collapse_through(trained, stacked, tmp_path):
    # Real triples from only 10 random modes of the 1,000: a sharp G that collapsed. Its mode count
    # is the finding, so the guard must stay quiet (measured: digit FD about 60-100, bound 180).
    x, labels = stacked.sample(20_000, torch.Generator().manual_seed(7))
    modes = torch.randperm(1000, generator=torch.Generator().manual_seed(8))[:10]
    result = evaluate_replay(stacked, x[torch.isin(labels, modes)][:150], tmp_path)
    print(f"10 random modes of real triples: digit FD {result.values[metric.DIGIT_FD]:.0f}")
    assert 10 <= result.values[metric.MODES_COVERED] <= 20  # about 5% of triples are misread into other modes
    assert result.convergence.holds(result.values[metric.DIGIT_FD])


@pytest.mark.slow
def test_a_channel_that_draws_one_digit_is_outside_the_stacked_bound(trained, stacked, tmp_path):
    # The guard's known limit (docs/metrics.md): digit FD is a distance between digit distributions,
    # so a G whose red and green channels draw only 0s measures far above the bound however sharp.
    x, labels = stacked.sample(20_000, torch.Generator().manual_seed(7))
    result = evaluate_replay(stacked, x[labels < 10][:150], tmp_path)  # modes 000-009
    print(f"modes 000-009 of real triples: digit FD {result.values[metric.DIGIT_FD]:.0f}")
    assert not result.convergence.holds(result.values[metric.DIGIT_FD])


# --------------------------------------------------------------------------------------------------
# Inside a real training run
# --------------------------------------------------------------------------------------------------

SUITE = """
[suite]
name = "classifier-metric"
question = "Does the classifier metric run inside training?"
seeds = [0]

[dataset]
name = "{dataset}"

[defaults]
architecture = {{ name = "dcgan", width = 8 }}
batch_size = 8
steps = 2
log_every = 1
eval_every = 1
grid_size = 4
metrics = ["classifier"]

# The default scale sets 10,000 samples and would override [defaults]; a scale table wins.
[scales.default]
eval_samples = 64
real_samples = 300

[[configs]]
name = "a"
"""


@pytest.mark.parametrize("dataset,keys", [
    ("mnist5k", (metric.CLASS_FD, metric.CLASSES_COVERED, metric.CLASS_KL)),
    ("stacked-mnist", (metric.MODES_COVERED, metric.MODE_KL, metric.DIGIT_FD)),
])
def test_the_metric_inside_a_two_step_run(classifier_double, write_suite, tmp_path, dataset, keys):
    spec = load_suite(write_suite(SUITE.format(dataset=dataset))).runs("default")[0]
    run_dir = tmp_path / "run"
    assert execute(spec, run_dir, CPU) == "completed", (run_dir / "error.txt").read_text()
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    for record in evals:
        assert all(math.isfinite(record[key]) for key in keys), record
        provenance = record["provenance"]["classifier"]
        assert provenance["classifier_accuracy"] == classifier_double.accuracy  # loaded, not trained
        assert provenance["generated_samples"] == 64
    summary = read_json(run_dir / "status.json")["metrics"]
    for key in keys:
        assert summary["final"][key] == evals[-1][key]
        assert summary["best"][key]["step"] in (1, 2)
        assert summary["better"][key] == {**metric.BETTER, **metric.STACKED_BETTER}[key]
    if dataset == "mnist5k":
        assert evals[0]["provenance"]["classifier"]["real_samples"] == 300


def write_image_folder_double(root: Path) -> None:
    """A test double of a labelled image folder: three reddish and three bluish 32×32 PNGs."""
    from PIL import Image

    for label, colour in (("cats", (200, 40, 40)), ("dogs", (40, 40, 200))):
        folder = root / "images" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), tuple(c + 15 * i for c in colour)).save(folder / f"{i}.png")


FOLDER_SUITE = """
[suite]
name = "classifier-in-a-run"
question = "Does training the classifier mid-run leave the run alone?"
seeds = [0]

[dataset]
name = "image-folder"
path = "images"
resolution = 32
channels = 3

[defaults]
architecture = {{ name = "dcgan", width = 8 }}
batch_size = 8
steps = 4
log_every = 2
eval_every = 2
grid_size = 4
metrics = {metrics}

[scales.default]
eval_samples = 64

[[configs]]
name = "a"
"""


def test_training_the_classifier_mid_run_leaves_the_run_unchanged(write_suite, tmp_path, monkeypatch):
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(tmp_path / "cold-cache"))
    write_image_folder_double(tmp_path)
    weights = {}
    for metrics in ('["classifier"]', "[]"):
        spec = load_suite(write_suite(FOLDER_SUITE.format(metrics=metrics))).runs("default")[0]
        run_dir = tmp_path / f"run-{len(metrics)}"
        assert execute(spec, run_dir, CPU) == "completed", (run_dir / "error.txt").read_text()
        weights[metrics] = torch.load(run_dir / "checkpoints" / "generator.pt")["generator"]
        evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
        assert [metric.CLASS_FD in r for r in evals] == [metrics != "[]"] * 2
    # Trained at the first eval point (step 2 of 4), under the trainer's no_grad, into the cache...
    assert len(list((tmp_path / "cold-cache" / "classifiers").glob("*.pt"))) == 1
    # ...and the rest of the run is exactly as without the metric (the global random state itself
    # is checked in test_training_is_seeded_and_leaves_the_global_state_alone).
    for key, value in weights["[]"].items():
        assert torch.equal(value, weights['["classifier"]'][key]), key


@pytest.mark.slow
def test_blends_of_two_digits_fall_below_the_confidence_floor(trained, mnist, tmp_path):
    # What an unconverged G draws: smears between digits. They land in some class, so the class
    # counts believe them; their confidence (0.72 measured) is what the floor (0.8) catches.
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(5000, (1000,), generator=g), torch.randint(5000, (1000,), generator=g)
    blends = (mnist.batch(i) + mnist.batch(j)) / 2
    result = evaluate_replay(mnist, blends, tmp_path)
    assert result.values[metric.CLASSES_COVERED] >= 9  # the counts are fooled
    assert result.values[metric.CLASS_CONFIDENCE] < result.convergence.at_least
