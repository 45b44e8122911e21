"""Can D tell a run's generator from the data when G stands still?

A probe for the PacGAN grid reproduction (docs/reproductions.md): PacGAN3's D sits at chance
(accuracy 0.50-0.55) through all 20,000 steps while its samples stay a smear. This loads G from
a run's checkpoint, freezes it (BatchNorm in training mode, as in training), and trains D alone
with the run's optimiser (Adam 1e-4, betas 0.8/0.999, 100 packs a step): the checkpoint's own D,
a fresh D packed as in the run, and a fresh unpacked D. If D learns here, the run's D was able to
separate G's samples, and what kept it at chance was the game (G moving), not D's capacity.

Usage: python suites/reproduce/probes/frozen_g.py RUN_DIR [STEPS]   (points on grid25, pacgan-mlp)
Prints held-out accuracy (2,000 real and 2,000 fake packs) every 500 steps.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from ganbench_plugins.architectures.pacgan_mlp import Maxout, Params, _init

SPACING, STD, PACKS = 2.0, 0.05, 100  # grid25's defaults; the suite's 100 packs a step


def discriminator(m: int, p: Params = Params()) -> nn.Sequential:
    """pacgan-mlp's D for packs of m points, laid out as the checkpoint's (`packed.` stripped)."""
    d = nn.Sequential(nn.Flatten(1), *[Maxout(2 * m if i == 0 else p.d_width, p.d_width, p.pieces) for i in range(p.d_layers)],
                      nn.Linear(p.d_width, 1), nn.Flatten(0))
    with torch.no_grad():
        _init(d, p.init_std)
    return d


def generator(p: Params = Params()) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(p.g_layers):
        layers += [nn.Linear(2 if i == 0 else p.g_width, p.g_width, bias=False), nn.BatchNorm1d(p.g_width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(p.g_width, 2), nn.Unflatten(1, (2,)))


def main(run_dir: Path, steps: int) -> None:
    torch.manual_seed(0)
    config = json.loads((run_dir / "config.json").read_text())
    m = next((t["params"]["m"] for t in config["settings"].get("tricks", []) if t["name"] == "pack"), 1)
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    g = generator()
    g.load_state_dict(state["models"]["generator"])
    g.train().requires_grad_(False)
    axis = torch.arange(-2, 3, dtype=torch.float32) * SPACING
    modes = torch.cartesian_prod(axis, axis)

    def real(n: int) -> torch.Tensor:
        return modes[torch.randint(0, len(modes), (n,))] + STD * torch.randn(n, 2)

    def fake(n: int) -> torch.Tensor:
        with torch.no_grad():
            return g(torch.randn(n, 2))

    def train(d: nn.Module, k: int, label: str) -> None:
        optimiser = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.8, 0.999))
        bce = nn.BCEWithLogitsLoss()
        out = []
        for step in range(1, steps + 1):
            loss = (bce(d(real(PACKS * k).reshape(PACKS, 2 * k)), torch.ones(PACKS))
                    + bce(d(fake(PACKS * k).reshape(PACKS, 2 * k)), torch.zeros(PACKS)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % 500 == 0:
                with torch.no_grad():
                    right = (d(real(2000 * k).reshape(2000, 2 * k)) > 0).float().mean() + \
                            (d(fake(2000 * k).reshape(2000, 2 * k)) < 0).float().mean()
                out.append(f"{step}:{right.item() / 2:.3f}")
        print(f"{label:30s} {' '.join(out)}", flush=True)

    own = discriminator(m)
    own.load_state_dict({k.removeprefix("packed."): v for k, v in state["models"]["discriminator"].items()})
    print(f"{run_dir.name}: G from step {state['meta']['step']}, packs of m = {m}; D accuracy at each step:")
    train(own, m, f"the run's D, m = {m}")
    train(discriminator(m), m, f"a fresh D, m = {m}")
    if m != 1:
        train(discriminator(1), 1, "a fresh D, m = 1")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3000)
