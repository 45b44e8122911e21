"""MNIST (LeCun et al. 1998), Fashion-MNIST (Xiao et al. 2017), CIFAR-10 (Krizhevsky 2009) and
CelebA (Liu et al. 2015), read with torchvision.datasets and held in memory as uint8.

torchvision is imported only inside `load`: it takes seconds, and `ganbench plugins` or a suite
check imports every plugin module. `check` therefore names the files torchvision looks for itself
(tests compare these lists against torchvision's own).
"""
from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

import ganbench

DATA_ROOT_ENV = "GANBENCH_DATA_ROOT"
DEFAULT_DATA_ROOT = "~/.cache/ganbench/data"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CELEBA_FILES = ("list_attr_celeba.txt", "identity_CelebA.txt", "list_bbox_celeba.txt",
                "list_landmarks_align_celeba.txt", "list_eval_partition.txt", "img_align_celeba")
CELEBA_CROP = 178  # the aligned faces are 178×218; DCGAN practice keeps the central 178×178


def data_root(root: str) -> Path:
    """`root`, else $GANBENCH_DATA_ROOT, else ~/.cache/ganbench/data."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


@dataclass(frozen=True)
class MnistParams:
    root: str = ""  # parent of the dataset's folder (empty: $GANBENCH_DATA_ROOT or ~/.cache/ganbench/data)
    download: bool = False  # fetch the files into root when they are missing
    split: Literal["train", "test"] = "train"  # which official split to load


@dataclass(frozen=True)
class Cifar10Params:
    root: str = ""  # parent of the dataset's folder (empty: $GANBENCH_DATA_ROOT or ~/.cache/ganbench/data)
    download: bool = False  # fetch the files into root when they are missing
    split: Literal["train", "test"] = "train"  # which official split to load
    resolution: ganbench.PositiveInt = 32  # side in pixels; other than 32 means an antialiased resize


@dataclass(frozen=True)
class CelebaParams:
    root: str = ""  # parent of the dataset's folder (empty: $GANBENCH_DATA_ROOT or ~/.cache/ganbench/data)
    download: bool = False  # fetch the files into root when they are missing (needs the gdown package)
    split: Literal["train", "valid", "test", "all"] = "train"  # which official partition to load
    resolution: ganbench.PositiveInt = 64  # side in pixels, after a central 178×178 crop


class TorchvisionDataset:
    """Shared behaviour: locate the root, refuse missing files in one line, download on request."""

    name: str
    folder: str  # the sub-folder of root that torchvision reads
    files: tuple[str, ...]  # what torchvision requires inside it
    channels: int
    side: int
    num_classes: int | None

    def __init__(self, params: Any) -> None:
        self.p = params

    def info(self) -> ganbench.DataInfo:
        side = getattr(self.p, "resolution", self.side)
        return ganbench.DataInfo("image", (self.channels, side, side), self.num_classes)

    @classmethod
    def present(cls, root: Path) -> bool:
        return all((root / cls.folder / f).exists() for f in cls.files)

    @classmethod
    def check(cls, params: Any, setup: None) -> str | None:
        root = data_root(params.root)
        if params.download or cls.present(root):
            return None
        return (f'dataset "{cls.name}": {cls.folder}/ files not found under {root}; pass --data-root DIR '
                "(a folder that holds them) or set download = true in the suite's [dataset] table")

    def load(self, device: torch.device | str) -> ganbench.TensorData:
        images, labels = self.tensors(self.open_dataset())
        return ganbench.TensorData(images, labels, kind="image", num_classes=self.num_classes).to(device)

    def open_dataset(self) -> Any:
        """The torchvision dataset, refused in one line when its files are missing or can't be fetched."""
        reason = self.check(self.p, None)
        if reason:
            raise ganbench.UsageError(reason)
        root = data_root(self.p.root)
        if not self.p.download:
            return self.build(str(root), download=False)
        try:
            return self.build(str(root), download=True)
        except PermissionError as exc:
            raise ganbench.UsageError(
                f'dataset "{self.name}": cannot write into {root} ({exc}); '
                "pass --data-root DIR (a writable folder)"
            ) from exc
        # torchvision reports a failed download as URLError (an OSError) or as RuntimeError, by dataset.
        except (OSError, RuntimeError) as exc:
            detail = " ".join(str(exc).split())
            detail = detail if len(detail) <= 120 else detail[:119] + "…"
            raise ganbench.UsageError(
                f'dataset "{self.name}": download into {root} failed ({type(exc).__name__}: {detail}); '
                "the machine seems offline: pass --data-root DIR (a folder that already holds the files) "
                "or fetch them elsewhere and copy them there"
            ) from exc

    def build(self, root: str, download: bool) -> Any:
        """The torchvision dataset object. torchvision is imported here, only once it is needed."""
        raise NotImplementedError

    def tensors(self, dataset: Any) -> tuple[Tensor, Tensor | None]:
        """All images as one (N, C, H, W) uint8 tensor, and the int64 labels or None."""
        raise NotImplementedError


class Mnist(TorchvisionDataset):
    """MNIST handwritten digits, 60,000 train / 10,000 test, 28×28 grey (LeCun et al. 1998)."""

    name = "mnist"
    paper = 'LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition"'
    params = MnistParams
    torchvision_class = "MNIST"
    folder, files = "MNIST/raw", MNIST_FILES
    channels, side, num_classes = 1, 28, 10

    def build(self, root: str, download: bool) -> Any:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, self.torchvision_class)
        return dataset_class(root, train=self.p.split == "train", download=download)

    def tensors(self, dataset: Any) -> tuple[Tensor, Tensor]:
        return dataset.data.unsqueeze(1), dataset.targets.long()


class FashionMnist(Mnist):
    """Fashion-MNIST clothing images, 60,000 train / 10,000 test, 28×28 grey (Xiao et al. 2017)."""

    name = "fashion-mnist"
    paper = 'Xiao et al. 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms"'
    torchvision_class = "FashionMNIST"
    folder = "FashionMNIST/raw"  # the same four file names as MNIST, in their own folder


class Cifar10(TorchvisionDataset):
    """CIFAR-10 natural images, 50,000 train / 10,000 test, 32×32 colour, 10 classes (Krizhevsky 2009)."""

    name = "cifar10"
    paper = 'Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"'
    params = Cifar10Params
    folder, files = "cifar-10-batches-py", CIFAR10_FILES
    channels, side, num_classes = 3, 32, 10

    def build(self, root: str, download: bool) -> Any:
        from torchvision.datasets import CIFAR10

        return CIFAR10(root, train=self.p.split == "train", download=download)

    def tensors(self, dataset: Any) -> tuple[Tensor, Tensor]:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        if self.p.resolution != self.side:
            images = resize_uint8(images, self.p.resolution)
        return images, torch.tensor(dataset.targets, dtype=torch.long)


class Celeba(TorchvisionDataset):
    """CelebA aligned faces, 202,599 images, center-cropped to 178×178 and resized (Liu et al. 2015)."""

    name = "celeba"
    paper = 'Liu et al. 2015, "Deep Learning Face Attributes in the Wild"'
    params = CelebaParams
    folder, files = "celeba", CELEBA_FILES
    channels, side, num_classes = 3, 64, None

    @classmethod
    def check(cls, params: CelebaParams, setup: None) -> str | None:
        # torchvision fetches CelebA from Google Drive through gdown, which ganbench does not require.
        root = data_root(params.root)
        if params.download and not cls.present(root) and importlib.util.find_spec("gdown") is None:
            return (f'dataset "celeba": download = true needs the gdown package to fetch into {root}: '
                    "pip install gdown, or pass --data-root DIR (a folder that holds celeba/)")
        return super().check(params, setup)

    def build(self, root: str, download: bool) -> Any:
        from torchvision import transforms
        from torchvision.datasets import CelebA

        to_tensor = transforms.Compose([
            transforms.CenterCrop(CELEBA_CROP), transforms.Resize(self.p.resolution), transforms.PILToTensor()
        ])
        # target_type=[]: the faces only; attributes are not labels a conditional GAN can use.
        return CelebA(root, split=self.p.split, target_type=[], transform=to_tensor, download=download)

    def tensors(self, dataset: Any) -> tuple[Tensor, None]:
        side = self.p.resolution
        images = torch.empty((len(dataset), 3, side, side), dtype=torch.uint8)

        def decode(i: int) -> None:
            images[i] = dataset[i][0]

        # JPEG decoding and resizing release the GIL, so threads decode in parallel.
        with ThreadPoolExecutor() as pool:
            list(pool.map(decode, range(len(dataset))))
        return images, None


def resize_uint8(images: Tensor, side: int, chunk: int = 4096) -> Tensor:
    """Resize (N, C, H, W) uint8 images to side × side, in chunks so the float copy stays small."""
    from torchvision.transforms.v2 import functional

    return torch.cat([functional.resize(part, [side, side], antialias=True) for part in images.split(chunk)])


@ganbench.hookimpl
def ganbench_register_datasets():
    return [Mnist, FashionMnist, Cifar10, Celeba]
