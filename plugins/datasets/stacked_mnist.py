"""Stacked MNIST: three random mnist5k digits as the R, G and B channels of one image, so 1,000 modes
(Metz et al. 2017, Unrolled GAN; Srivastava et al. 2017, VEEGAN; Lin et al. 2018, PacGAN)."""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor

import ganbench
from ganbench_plugins.datasets.mnist5k import NUM_CLASSES, SIDE, Mnist5k

CHANNELS = 3
MODES = NUM_CLASSES**CHANNELS
# The mode label reads the channels' digits as a three-digit number: 100·d_R + 10·d_G + d_B.
PLACE_VALUES = tuple(NUM_CLASSES ** (CHANNELS - 1 - c) for c in range(CHANNELS))


def mode_labels(digits: Tensor) -> Tensor:
    """Mode labels (N,) from per-channel digits (N, 3)."""
    return (digits * torch.tensor(PLACE_VALUES, device=digits.device, dtype=digits.dtype)).sum(dim=1)


class StackedMnistData(ganbench.Data):
    """Fresh triples of mnist5k digits drawn on the device for every batch; labels are mode indices.

    `digits` (the mnist5k data) stays public: the classifier metric classifies each channel with the
    single-digit classifier trained on it.
    """

    kind = "image"
    shape = (CHANNELS, SIDE, SIDE)
    num_classes = MODES

    def __init__(self, digits: ganbench.TensorData) -> None:
        self.digits = digits

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.digits.device

    def sample(self, n: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(len(self.digits), (n, CHANNELS), generator=rng, device=self.device)
        images = self.digits.batch(index.flatten()).reshape(n, CHANNELS, SIDE, SIDE)
        return images, mode_labels(self.digits.y[index])

    def content_hash(self) -> str:
        # Defined by the digits it stacks and the stacking rule, not by stored samples.
        return hashlib.sha256(f"{self.digits.content_hash()}stacked-{CHANNELS}".encode()).hexdigest()


class StackedMnist:
    """Three mnist5k digits stacked as RGB channels (3×28×28), 1,000 modes (VEEGAN, PacGAN)."""

    name = "stacked-mnist"
    params = None

    def info(self) -> ganbench.DataInfo:
        return ganbench.DataInfo("image", (CHANNELS, SIDE, SIDE), MODES)

    @classmethod
    def check(cls, params: None, setup: None) -> str | None:
        reason = Mnist5k.check(None, None)
        return f'dataset "stacked-mnist" stacks mnist5k digits: {reason}' if reason else None

    def load(self, device: torch.device | str) -> StackedMnistData:
        return StackedMnistData(Mnist5k().load(device))


@ganbench.hookimpl
def ganbench_register_datasets():
    return [StackedMnist]
