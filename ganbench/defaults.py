"""The core's own hook implementations, called after every plugin's (trylast), and the step's
networks under the speed settings (`precision`, `channels_last`, `compile`; docs/gpu.md)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ganbench.hookspecs import hookimpl
from ganbench.settings import CoreSettings, OptimizerSettings, compile_mode
from ganbench.state import Models, Run


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


# ---- speed settings -------------------------------------------------------------------------------


def to_channels_last(models: Models) -> None:
    """Both networks' 4-D weights in channels-last format, in place: the parameters stay the same
    objects (optimizers, EMA copies and checkpoints see the same tensors, in another layout)."""
    models.generator.to(memory_format=torch.channels_last)
    models.discriminator.to(memory_format=torch.channels_last)


class StepNetwork:
    """G or D as the training step calls it: D's 4-D inputs in channels-last format, the forward
    under bfloat16 autocast with its output cast back to float32 (so losses, penalties and the
    statistics are computed in fp32, and a penalty may call the plain D on the batch), and the
    module compiled with torch.compile. The module itself is not changed: eval points, penalties
    and tricks call it eagerly in fp32, and its state_dict keeps its keys."""

    def __init__(self, module: nn.Module, device: torch.device, core: CoreSettings) -> None:
        self.module = module
        self.forward = module.forward  # what ganbench.state's labels check inspects
        mode = compile_mode(core.compile)
        self.call = torch.compile(module, mode=mode) if mode else module
        self.autocast = core.precision == "bf16"
        self.device_type = device.type
        self.channels_last = core.channels_last
        # CUDA graphs (reduce-overhead) reuse their output memory at the next replay, and the loop
        # keeps the D phase's fake batch and scores until after the G phase: keep a copy instead.
        # Under autocast too: an output autocast left in fp32 (a sum, say) would come back from
        # .float() as the same tensor, in the graph's memory.
        self.copy_out = mode == "reduce-overhead" and device.type == "cuda"

    def __call__(self, x: Tensor, *rest: Any) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast:
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                out = self.call(x, *rest)
            # the loss and everything after it in fp32; a copy when the output lives in a CUDA graph
            return out.to(torch.float32, copy=True) if self.copy_out else out.float()
        out = self.call(x, *rest)
        return out.clone() if self.copy_out else out


def step_networks(run: Run) -> tuple[Any, Any]:
    """(G, D) for the training step. At the default settings the modules themselves, so that a run
    computes exactly what it computed before the speed settings existed."""
    assert run.models is not None
    G, D = run.models.generator, run.models.discriminator
    core = run.settings.core
    if core.precision == "fp32" and not core.channels_last and core.compile is False:
        return G, D
    if core.precision == "bf16" and run.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        # autocast would fall back without a word and the run would record bf16 that never was
        raise RuntimeError(f'precision = "bf16": {torch.cuda.get_device_name(run.device)} has no bfloat16 '
                           'support (it needs compute capability 8.0 or later); use precision = "fp32"')
    return StepNetwork(G, run.device, core), StepNetwork(D, run.device, core)
