"""The core's own hook implementations, called after every plugin's (trylast)."""
from __future__ import annotations

import torch
from torch import nn

from ganbench.hookspecs import hookimpl
from ganbench.settings import OptimizerSettings
from ganbench.state import Run


class CoreDefaults:
    """Builds torch.optim optimizers and names the trained G as the one to evaluate."""

    @hookimpl(trylast=True)
    def ganbench_build_optimizer(self, parameters: list[nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
        s = settings
        if s.name == "adam":
            return torch.optim.Adam(parameters, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        if s.name == "adamw":
            return torch.optim.AdamW(parameters, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        if s.name == "rmsprop":
            return torch.optim.RMSprop(parameters, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        return torch.optim.SGD(parameters, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)

    @hookimpl(trylast=True)
    def ganbench_eval_generator(self, run: Run) -> nn.Module:
        assert run.models is not None
        return run.models.generator
