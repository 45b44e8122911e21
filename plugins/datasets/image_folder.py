"""A folder of your own images, decoded with Pillow, center-cropped and resized; class labels come
from sub-folder names, as in torchvision's ImageFolder convention."""
from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

import ganbench

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SUBSET_SEED = 0  # max_images keeps the same images on every machine and every run


@dataclass(frozen=True)
class Params:
    path: str  # folder of .png/.jpg/.jpeg/.bmp/.webp images, searched recursively
    resolution: ganbench.PositiveInt = 64  # side in pixels: center-crop to a square, then resize
    channels: Literal[1, 3] = 3  # 1: greyscale, 3: RGB
    max_images: ganbench.PositiveInt | None = None  # keep a fixed random subset of this many images


def iter_images(folder: Path) -> Iterator[Path]:
    """Image files under `folder`, at any depth; symlinked folders are followed (datasets often are)."""
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(parent, name)


def class_names(folder: Path, images: list[Path]) -> list[str] | None:
    """Sorted names of the immediate sub-folders holding the images, when every image sits in one and
    there are at least two of them; otherwise None (unlabelled)."""
    relative = [image.relative_to(folder).parts for image in images]
    if any(len(parts) == 1 for parts in relative):
        return None
    names = sorted({parts[0] for parts in relative})
    return names if len(names) >= 2 else None


def decode(path: Path, resolution: int, mode: str) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels: the central square, resized to resolution × resolution."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            # Crop first, then resize, so the filter never reaches pixels outside the square.
            square = img.convert(mode).crop((left, top, left + side, top + side))
            return np.array(square.resize((resolution, resolution), Image.Resampling.BICUBIC))
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise ganbench.UsageError(f'dataset "image-folder": cannot decode {path}: {exc}') from exc


class ImageFolder:
    """Your own images from a folder (recursive); labels from class sub-folders when present."""

    name = "image-folder"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self.folder = Path(params.path).expanduser()

    @functools.cached_property
    def index(self) -> tuple[list[Path], list[str] | None]:
        """(image paths to load, class names or None). Lists the tree; opens no file."""
        images = list(iter_images(self.folder))
        classes = class_names(self.folder, images)  # from all images, so labels don't depend on max_images
        if self.p.max_images is not None and self.p.max_images < len(images):
            images = sorted(random.Random(SUBSET_SEED).sample(images, self.p.max_images))
        return images, classes

    def info(self) -> ganbench.DataInfo:
        classes, side = self.index[1], self.p.resolution
        return ganbench.DataInfo("image", (self.p.channels, side, side),
                                 None if classes is None else len(classes))

    @classmethod
    def check(cls, params: Params, setup: None) -> str | None:
        folder = Path(params.path).expanduser()
        if not folder.is_dir():
            return f'dataset "image-folder": path {folder} is not an existing folder'
        if next(iter_images(folder), None) is None:
            return f'dataset "image-folder": no {"/".join(IMAGE_SUFFIXES)} images under {folder}'
        return None

    def load(self, device: torch.device | str) -> ganbench.TensorData:
        reason = self.check(self.p, None)
        if reason:
            raise ganbench.UsageError(reason)
        paths, classes = self.index
        side, mode = self.p.resolution, "L" if self.p.channels == 1 else "RGB"
        images = torch.empty((len(paths), self.p.channels, side, side), dtype=torch.uint8)

        def put(i: int) -> None:
            pixels = torch.from_numpy(decode(paths[i], side, mode))
            images[i] = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)

        # Pillow releases the GIL while decoding and resizing, so threads decode in parallel.
        with ThreadPoolExecutor() as pool:
            list(pool.map(put, range(len(paths))))
        if classes is None:
            return ganbench.TensorData(images, None, kind="image").to(device)
        index_of = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor([index_of[p.relative_to(self.folder).parts[0]] for p in paths])
        return ganbench.TensorData(images, labels, kind="image", num_classes=len(classes)).to(device)


@ganbench.hookimpl
def ganbench_register_datasets():
    return [ImageFolder]
