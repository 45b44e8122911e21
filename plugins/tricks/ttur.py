"""Two time-scale update rule, TTUR (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule").

TTUR is only a pair of learning rates, so this trick has no hooks: `config_defaults` hands the rates
to the suite loader, which merges them into the run settings, so config.json records the rates used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench


@dataclass(frozen=True)
class Params:
    g_lr: ganbench.PositiveFloat = 1e-4  # generator learning rate
    d_lr: ganbench.PositiveFloat = 4e-4  # discriminator learning rate (faster than G's)


class TTUR:
    """Gives G and D separate learning rates (1e-4 and 4e-4); sets the optimizers' lr, no hooks."""

    name = "ttur"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def config_defaults(cls, params: Params) -> dict[str, Any]:
        return {"optimizer.g.lr": params.g_lr, "optimizer.d.lr": params.d_lr}


@ganbench.hookimpl
def ganbench_register_tricks():
    return [TTUR]
