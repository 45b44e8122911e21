"""Does it matter that ganbench samples G with its BatchNorm in inference mode?

A probe for the Stacked MNIST small-D reproduction (docs/reproductions.md, PacGAN Table 3): the
reference code's `sampler` keeps BatchNorm in training mode, so each batch of 128 samples is
normalised by its own statistics, where ganbench's evaluation uses the running statistics. This
loads G (metz-dcgan) from a run's last checkpoint and counts Stacked-MNIST modes and the digit FD
both ways, on the same noise, with the classifier metric's mnist5k classifier and mode rule.

Usage: python suites/reproduce/probes/stacked_bn_sampling.py RUN_DIR [SAMPLES]   (default 25,600)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ganbench import classifier, features
from ganbench_plugins.architectures.metz_dcgan import MetzDCGAN, Params
from ganbench_plugins.datasets.mnist5k import Mnist5k
from ganbench_plugins.datasets.stacked_mnist import mode_labels

BATCH = 128  # the code's batch, so batch statistics are over 128 samples as there


def main(run_dir: Path, n: int) -> None:
    torch.set_num_threads(1)
    config = json.loads((run_dir / "config.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    setup = SimpleNamespace(data=SimpleNamespace(kind="image", shape=(3, 28, 28)),
                            settings=SimpleNamespace(z_dim=config["settings"]["z_dim"]))
    generator = MetzDCGAN(Params(**config["settings"]["architecture"]["params"])).ganbench_build_models(setup).generator
    generator.load_state_dict(state["models"]["generator"])
    trained = features.trained_classifier(Mnist5k().load("cpu"), "cpu")
    z = torch.randn(n, setup.settings.z_dim, generator=torch.Generator().manual_seed(0))
    for mode in ("inference (running statistics)", "training (batch statistics of 128)"):
        generator.train(mode.startswith("training"))
        with torch.no_grad():
            x = torch.cat([generator(z[i:i + BATCH]) for i in range(0, n, BATCH)])
        encoded = classifier.encode(trained.model, (x[i:i + 1024].reshape(-1, 1, 28, 28) for i in range(0, n, 1024)))
        counts = np.bincount(mode_labels(encoded.predicted.reshape(-1, 3)).numpy(), minlength=1000)
        fd = classifier.frechet_distance(*classifier.feature_statistics(encoded.features),
                                         trained.feature_mean, trained.feature_cov)
        print(f"BatchNorm in {mode}: {int((counts > 0).sum())} modes, digit FD {fd:.1f}, "
              f"largest mode {counts.max() / n:.3f} of the samples")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25600)
