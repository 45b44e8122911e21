"""What a dataset plugin hands the trainer: batches drawn on the device, with no DataLoader per step."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataInfo:
    """What a dataset will produce, known before loading it (suites are checked against it)."""

    kind: Literal["image", "points"]  # "image": (C, H, W) in [-1, 1]; "points": (D,), any range
    shape: tuple[int, ...]  # one sample's shape
    num_classes: int | None  # None for unlabelled data


class Data:
    """A dataset loaded for training.

    `kind` is "image" (samples of shape (C, H, W) in [-1, 1]) or "points" (shape (D,), any range).
    Subclasses implement `sample`; in-memory data should use `TensorData`.
    """

    kind: Literal["image", "points"]
    shape: tuple[int, ...]
    num_classes: int | None  # None for unlabelled data
    device: torch.device  # where `sample` returns its tensors

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.kind, self.shape, self.num_classes)

    def sample(self, n: int, rng: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """`n` samples and their labels (or None), on the device, drawn with `rng`."""
        raise NotImplementedError

    def content_hash(self) -> str:
        """A hash of the data itself, so caches keyed on it notice any change."""
        raise NotImplementedError


class TensorData(Data):
    """A dataset held in one tensor on the device. Images may be stored as uint8 (0..255) to save
    memory; they are scaled to [-1, 1] per batch."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor | None,
        kind: Literal["image", "points"],
        num_classes: int | None = None,
    ) -> None:
        if y is not None and len(y) != len(x):
            raise ValueError(f"{len(x)} samples but {len(y)} labels")
        self.x = x
        self.y = y
        self.kind = kind
        self.shape = tuple(x.shape[1:])
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.x)

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.x.device

    def to(self, device: torch.device) -> TensorData:
        y = None if self.y is None else self.y.to(device)
        return TensorData(self.x.to(device), y, self.kind, self.num_classes)

    def batch(self, index: Tensor) -> Tensor:
        """The samples at `index`, as float on the device (uint8 images scaled to [-1, 1])."""
        x = self.x[index]
        return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x

    def sample(self, n: int, rng: torch.Generator) -> tuple[Tensor, Tensor | None]:
        index = torch.randint(len(self.x), (n,), device=self.x.device, generator=rng)
        return self.batch(index), None if self.y is None else self.y[index]

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.x.detach().cpu().contiguous().numpy().tobytes())
        if self.y is not None:
            h.update(self.y.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
