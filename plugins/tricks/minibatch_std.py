"""Minibatch standard deviation (Karras et al. 2018, "Progressive Growing of GANs", §3): D sees how varied
its batch is, through one extra feature map."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

import ganbench
from ganbench_plugins.architectures.split import append_features, check_split, concat_channels


@dataclass(frozen=True)
class Params:
    group_size: ganbench.PositiveInt = 4  # samples per group whose std is taken (ProGAN: 4); the whole batch when it does not divide the batch


class MinibatchStdLayer(nn.Module):
    """Appends one channel: the std over each group of every feature, averaged over features and positions."""

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, h: Tensor) -> Tensor:
        n = h.shape[0]
        # Shapes are Python ints: choosing the group size reads nothing from the device.
        g = self.group_size if n % self.group_size == 0 else n
        # Sample i falls in group i % (n // g), as in ProGAN's reshape.
        y = h.reshape(g, n // g, *h.shape[1:]).float()
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (n // g, ...) per feature
        stat = std.flatten(1).mean(dim=1)  # (n // g,)
        return concat_channels(h, stat.repeat(g).unsqueeze(1))


class MinibatchStd:
    """Adds the minibatch standard deviation as one more feature before D's head (Karras et al. 2018)."""

    name = "minibatch-std"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        return check_split(cls.name, setup)

    # tryfirst: change D's structure before other tricks wrap it (spectral norm, conditional).
    @ganbench.hookimpl(tryfirst=True)
    def ganbench_configure_models(self, run: ganbench.Run, models: ganbench.Models) -> None:
        layer = MinibatchStdLayer(self.p.group_size)
        models.discriminator = append_features(models.discriminator, layer, 1, self.name).to(run.device)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [MinibatchStd]
