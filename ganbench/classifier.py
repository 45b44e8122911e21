"""A small CNN classifier of a labelled image dataset, trained once on its real data and cached.

Class-aware metrics need a classifier of the data's own classes: its predictions count the classes
(or Stacked MNIST modes) a generator reaches, as in VEEGAN (Srivastava et al. 2017) and PacGAN
(Lin et al. 2018), and its penultimate features give a Fréchet distance (the formula of FID,
Heusel et al. 2017) that takes about a second for 10,000 images on a CPU, where Inception, at
5-7 images a second, takes half an hour.

The classifier is trained on a seeded 80% of the data and scored on the other 20%; that held-out
accuracy is recorded with every value it produces. Weights, accuracy and the statistics of the
real data's features are cached under `cache_dir()/classifiers`, keyed by the data's content hash
and `RECIPE`, so each machine trains it once per dataset.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganbench.data import Data, TensorData
from ganbench.features import real_subset
from ganbench.inception import cache_dir
from ganbench.rundir import write_atomic

# Bump whenever anything below changes what is trained: cached classifiers are keyed by it.
RECIPE = "small-cnn-v1"
WIDTH = 16  # channels of the first convolution; the second has twice as many
FEATURES = 128  # penultimate width: the space of the Fréchet distance (a 128×128 sqrtm is cheap)
POOLED_SIDE = 7  # adaptive pooling to 7×7 lets any image size feed the same head
HELD_OUT = 0.2  # share of the data kept out of training to measure accuracy
SPLIT_SEED = 0
TRAIN_SEED = 0
EPOCHS = 12
BATCH_SIZE = 128
PEAK_LR = 3e-3  # one-cycle schedule (Smith & Topin 2019): converges in a dozen epochs
MAX_SHIFT = 2  # augmentation: random translations of up to ±2 pixels
DROPOUT = 0.5
# Data that is sampled rather than held in memory is classified from this many fixed draws.
SAMPLED_DRAWS = 10_000
EVAL_BATCH = 500


class SmallCnn(nn.Module):
    """Two 3×3 conv blocks (2×2 max pool, batch norm, ReLU), adaptive pooling, a 128-unit hidden
    layer and dropout before the class logits.

    The features are the hidden layer's pre-activations: after the ReLU, units that never fire
    have zero variance and make the covariance singular.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, WIDTH, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(WIDTH), nn.ReLU(),
            nn.Conv2d(WIDTH, 2 * WIDTH, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(2 * WIDTH), nn.ReLU(),
            nn.AdaptiveAvgPool2d(POOLED_SIDE), nn.Flatten(),
            nn.Linear(2 * WIDTH * POOLED_SIDE**2, FEATURES),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(FEATURES, num_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass
class TrainedClassifier:
    """A classifier ready to use, with what the cache knows about it and about the real data."""

    model: SmallCnn  # in eval mode, on the device
    accuracy: float  # on the held-out share of the data
    held_out: int  # how many samples that accuracy was measured on
    feature_mean: np.ndarray  # (FEATURES,) float64: penultimate features of all the real data
    feature_cov: np.ndarray  # (FEATURES, FEATURES) float64
    class_counts: np.ndarray  # (num_classes,) the classifier's predictions on all the real data
    real_count: int  # how many real samples the statistics cover
    data_hash: str  # `Data.content_hash()` of the data it was trained on
    recipe: str
    train_seconds: float  # how long training took when it was trained
    cached: bool  # True when loaded from the cache, False when trained by this call
    real_confidence: float | None = None  # mean softmax probability of the predicted class on all the real data


def cache_path(data_hash: str) -> Path:
    return cache_dir() / "classifiers" / f"{RECIPE}-{data_hash[:24]}.pt"


def load_or_train(data: Data, device: torch.device | str) -> TrainedClassifier:
    """The classifier of `data` (labelled images), from the cache, or trained and cached now."""
    device = torch.device(device)
    if data.kind != "image" or not data.num_classes:
        raise ValueError(f"a classifier needs labelled images, not {data.kind} with classes={data.num_classes}")
    data_hash = data.content_hash()
    path = cache_path(data_hash)
    entry = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    # The file name holds a prefix of the hash; the entry holds all of it.
    cached = entry is not None and entry["data_hash"] == data_hash and entry["recipe"] == RECIPE
    if not cached:
        entry = train_and_describe(as_tensor_data(data), data_hash, device)
        write_atomic(path, lambda f: torch.save(entry, f))
    model = SmallCnn(entry["channels"], entry["num_classes"])
    model.load_state_dict(entry["state_dict"])
    return TrainedClassifier(
        model=model.to(device).eval(),
        accuracy=entry["accuracy"],
        held_out=entry["held_out"],
        feature_mean=entry["feature_mean"].numpy(),
        feature_cov=entry["feature_cov"].numpy(),
        class_counts=entry["class_counts"].numpy(),
        real_count=entry["real_count"],
        data_hash=data_hash,
        recipe=RECIPE,
        train_seconds=entry["train_seconds"],
        cached=cached,
        real_confidence=entry.get("real_confidence"),  # absent from caches written before it was kept
    )


def as_tensor_data(data: Data) -> TensorData:
    """In-memory data as it is; sampled data as `SAMPLED_DRAWS` fixed draws (the same ones
    `features.real_subset` gives the metrics)."""
    if isinstance(data, TensorData):
        return data
    x, y, _ = real_subset(data, SAMPLED_DRAWS)
    return TensorData(x, y, kind=data.kind, num_classes=data.num_classes)


def train_and_describe(data: TensorData, data_hash: str, device: torch.device) -> dict:
    """Train on the data, then summarise the real data in the trained features: the cache entry."""
    started = time.perf_counter()
    model, accuracy, held_out = train(data, device)
    train_seconds = time.perf_counter() - started
    batches = (data.batch(index) for index in torch.arange(len(data), device=data.device).split(EVAL_BATCH))
    features, predicted, confidence = encode(model, batches)
    mean, cov = feature_statistics(features)
    return {
        "real_confidence": float(confidence.mean()),
        "recipe": RECIPE,
        "data_hash": data_hash,
        "channels": data.shape[0],
        "num_classes": data.num_classes,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "accuracy": accuracy,
        "held_out": held_out,
        "train_seconds": train_seconds,
        "feature_mean": torch.from_numpy(mean),
        "feature_cov": torch.from_numpy(cov),
        "class_counts": torch.bincount(predicted, minlength=data.num_classes),
        "real_count": len(data),
    }


def forked_rng():
    """A context that restores the global random state on exit, so training a classifier in the
    middle of a GAN run (at its first eval point) leaves the run's own random stream alone."""
    # torch.manual_seed seeds every CUDA device too, so all of them are forked, whichever trains.
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=cuda_devices)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Train on the CPU with one intra-op thread, then restore the count.

    The result then does not depend on the machine's thread count (reductions split over threads
    round differently: 98.2% vs 98.3% held-out here), and on a shared CPU two threads' spinning
    made training 9× slower (98 s against 11 s for one thread, measured on this project's 2 cores).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shifted(x: Tensor, max_shift: int, rng: torch.Generator) -> Tensor:
    """Each image translated by its own random offset in [-max_shift, max_shift]² (edges replicated)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offset = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=rng, device=x.device)
    rows = (offset[:, 0, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (offset[:, 1, None] + torch.arange(w, device=x.device))[:, None, :]
    # Advanced indexing on dims 0, 2 and 3 gives (N, H, W, C).
    return padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def train(data: TensorData, device: torch.device, epochs: int | None = None) -> tuple[SmallCnn, float, int]:
    """Train `SmallCnn` on a seeded 80% of `data`; return it in eval mode, its accuracy on the other
    20%, and the held-out count. Deterministic for a given device: everything is seeded."""
    device = torch.device(device)
    epochs = EPOCHS if epochs is None else epochs
    if data.y is None or not data.num_classes:
        raise ValueError("a classifier needs labelled data")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(SPLIT_SEED))
    held_out = max(1, int(round(HELD_OUT * len(data))))
    test_index, train_index = order[:held_out].to(device), order[held_out:].to(device)
    data = data.to(device)
    steps_per_epoch = -(-len(train_index) // BATCH_SIZE)
    # Metrics are evaluated under no_grad; training needs gradients whoever calls it.
    with forked_rng(), one_cpu_thread(device), torch.enable_grad():
        torch.manual_seed(TRAIN_SEED)  # initial weights and dropout masks
        rng = torch.Generator(device=device).manual_seed(TRAIN_SEED)  # shuffles and shifts
        model = SmallCnn(data.shape[0], data.num_classes).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=PEAK_LR)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, PEAK_LR, total_steps=epochs * steps_per_epoch)
        model.train()
        for _ in range(epochs):
            shuffled = train_index[torch.randperm(len(train_index), generator=rng, device=device)]
            for index in shuffled.split(BATCH_SIZE):
                x = shifted(data.batch(index), MAX_SHIFT, rng)
                loss = F.cross_entropy(model(x), data.y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()
    _, predicted = encode_batches(model, (data.batch(i) for i in test_index.split(EVAL_BATCH)))
    accuracy = (predicted == data.y[test_index].cpu()).double().mean().item()
    return model, accuracy, held_out


class Encoded(NamedTuple):
    """What the classifier makes of a set of images, on the CPU."""

    features: Tensor  # (N, FEATURES) float64 penultimate features
    predicted: Tensor  # (N,) int64 classes
    confidence: Tensor  # (N,) float64 softmax probability of the predicted class


def encode(model: SmallCnn, batches: Iterable[Tensor]) -> Encoded:
    """Features, predicted classes and their confidence for batches of images in [-1, 1] (values
    outside are clamped: the classifier never saw them)."""
    device = next(model.parameters()).device
    features, predicted, confidence = [], [], []
    with torch.no_grad():
        for x in batches:
            f = model.features(x.to(device).float().clamp(-1, 1))
            logits = model.head(f)
            features.append(f.double().cpu())
            predicted.append(logits.argmax(dim=1).cpu())
            confidence.append(logits.double().softmax(dim=1).amax(dim=1).cpu())
    return Encoded(torch.cat(features), torch.cat(predicted), torch.cat(confidence))


def encode_batches(model: SmallCnn, batches: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Penultimate features (N, FEATURES) as float64 and predicted classes (N,), both on the CPU
    (`encode` without the confidence)."""
    encoded = encode(model, batches)
    return encoded.features, encoded.predicted


def predict(model: SmallCnn, images: Tensor) -> Tensor:
    """Predicted classes of `images` (N, C, H, W) in [-1, 1], on their device."""
    with torch.no_grad():
        return model(images.float().clamp(-1, 1)).argmax(dim=1)


def feature_statistics(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as FID's reference implementations use) in float64."""
    f = features.double().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (Dowson & Landau 1982), the formula of FID (Heusel et
    al. 2017): |m1 - m2|² + Tr(C1 + C2 - 2 (C1 C2)^½).

    As in pytorch-fid's `calculate_frechet_distance`: the square root comes from scipy's Schur
    method, a 1e-6 ridge is added to both covariances if it is not finite, and the imaginary part
    that rounding leaves is dropped.
    """
    diff = mean1 - mean2
    with warnings.catch_warnings():
        # scipy warns that C1 C2 is singular whenever a side has fewer samples than features, as
        # small eval counts do by design; the result still agrees with an eigenvalue computation
        # to 1e-8 relative down to 20 samples (measured on mnist5k features, see the tests).
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(root).all():
        ridge = 1e-6 * np.eye(len(cov1))
        root = scipy.linalg.sqrtm((cov1 + ridge) @ (cov2 + ridge))
    root = root.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root))

