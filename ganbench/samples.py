"""Sample pictures: an image grid, or a scatter of 2-D points."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor

from ganbench.data import DataInfo
from ganbench.rundir import write_atomic


def save_samples(samples: Tensor, info: DataInfo, path: Path, modes: Tensor | None = None) -> None:
    """Write samples as a PNG: a grid for images in [-1, 1], a scatter for 2-D points, drawn over
    the real modes when the data has them (the 2-D mixtures)."""
    samples = samples.detach().float().cpu()
    if info.kind == "image":
        import torchvision.utils

        grid = torchvision.utils.make_grid(samples, nrow=int(len(samples) ** 0.5 + 0.5), value_range=(-1, 1),
                                           normalize=True, padding=2)
        png = io.BytesIO()
        torchvision.utils.save_image(grid, png, format="png")
        write_atomic(path, lambda f: f.write(png.getvalue()))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    points = samples.reshape(len(samples), -1)
    if modes is not None:
        centres = modes.detach().float().cpu()
        ax.scatter(centres[:, 0], centres[:, 1], s=60, marker="x", color="tab:red", label="real modes", zorder=3)
        span = float(centres.abs().max()) * 1.5 or 1.0
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    ax.scatter(points[:, 0], points[:, 1] if points.shape[1] > 1 else torch.zeros(len(points)), s=4, alpha=0.6,
               label="generated")
    if modes is not None:
        ax.legend(loc="upper right", fontsize=7)
    ax.set_aspect("equal")
    ax.set_title(path.stem)
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, lambda f: f.write(png.getvalue()))
