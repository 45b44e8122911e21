"""Helpers every metric plugin needs: generated and real samples drawn reproducibly, without
disturbing the training run's random stream, and images in the form Inception expects."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ganbench.data import Data
from ganbench.state import Run, generate as generate_with

REAL_SUBSET_SEED = 0  # the same real subset for every run and seed, so reference statistics are shared
EVAL_NOISE_OFFSET = 1_000_003  # eval noise is seeded from the run's seed, apart from its training stream


def is_due(run: Run, step: int, every: int) -> bool:
    """Whether a metric that runs at every `every`-th eval point runs at `step`. Eval points fall
    on multiples of eval_every, so this counts eval points, not steps; the last step always runs."""
    return step == run.settings.steps or (step // run.settings.eval_every) % every == 0


def generate_batches(run: Run, generator: nn.Module, n: int, batch_size: int = 250) -> Iterator[Tensor]:
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


def generate(run: Run, generator: nn.Module, n: int, batch_size: int = 250) -> Tensor:
    """All of `generate_batches` in one tensor, on the device."""
    return torch.cat(list(generate_batches(run, generator, n, batch_size)))


def real_samples(data: Data, n: int) -> tuple[Tensor, Tensor | None, str]:
    """Up to `n` real samples and labels, the same for every run, and a description of the split.

    In-memory data gives a seeded subset without replacement (all of it when n >= its size);
    sampled data (mixtures, stacked MNIST) gives `n` draws from a fixed-seed generator.
    """
    from ganbench.data import TensorData

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
        return data.batch(index), labels, split
    rng = torch.Generator(device=data.device)
    rng.manual_seed(REAL_SUBSET_SEED)
    x, y = data.sample(n, rng)
    return x, y, f"{n} fresh draws (seed {REAL_SUBSET_SEED})"


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images in [-1, 1] as uint8 RGB (N, 3, H, W), the input torch-fidelity's extractors take.
    Grayscale is repeated over the three channels."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images
