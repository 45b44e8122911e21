"""Gradient flow through G and D after one training step (Glorot & Bengio 2010: vanishing and
exploding gradients; Maas et al. 2013 and Radford et al. 2015 on dead ReLUs and LeakyReLU in D).

One step of the suite's own loop (D updates, then G's), then each network's gradients: a
parameter with no gradient, a zero gradient or a non-finite one; ReLU units that no sample of the
step turned on; and weights whose gradient, relative to the weight, is far from the network's others.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import ganbench


@dataclass(frozen=True)
class Params:
    spread: ganbench.PositiveFloat = 1000.0  # ⚠ when a weight's |grad|/|weight| is this many times above or below the network's median
    dead_warn: ganbench.Probability = 0.5  # ⚠ when this share of a ReLU layer's units is off for every sample (all of them: ✗)


class Liveness:
    """For each ReLU in a network, which units were on for at least one sample of any call."""

    def __init__(self, network: nn.Module) -> None:
        self.alive: dict[str, torch.Tensor] = {}
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in network.named_modules()
                        if isinstance(module, (nn.ReLU, nn.ReLU6))]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            on = (output.detach() > 0).flatten(1).any(0)
            known = self.alive.get(name)
            self.alive[name] = on if known is None or known.shape != on.shape else known | on
        return hook

    def dead(self) -> dict[str, float]:
        """The share of each ReLU layer's units that were never on."""
        for handle in self.handles:
            handle.remove()
        return {name: 1.0 - float(on.float().mean()) for name, on in self.alive.items()}


def gradients(network: nn.Module) -> dict[str, Any]:
    """Parameters without a gradient, with a zero or non-finite one, and |grad|/|weight| of each weight."""
    missing, zero, nonfinite, relative = [], [], [], {}
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        grad = param.grad
        if grad is None:
            missing.append(name)
        elif not torch.isfinite(grad).all():
            nonfinite.append(name)
        elif not grad.any():
            zero.append(name)
        elif param.dim() >= 2 and float(param.detach().norm()) > 0:
            relative[name] = float(grad.norm()) / float(param.detach().norm())
    return {"missing": missing, "zero": zero, "nonfinite": nonfinite, "relative": relative}


def names(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


class GradientFlow:
    """Zero, missing or non-finite gradients, dead ReLUs, and outlying gradient scales after one step."""

    name = "gradient-flow"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    def diagnose(self, subject: ganbench.CheckSubject) -> ganbench.CheckResult:
        p = self.p
        run = subject.build()
        assert run.models is not None
        G, D = run.models.generator, run.models.discriminator
        live = {"G": Liveness(G), "D": Liveness(D)}
        subject.train(run, 1)
        fails, warns, parts, values = [], [], [], {}
        for who, network in (("G", G), ("D", D)):
            g = gradients(network)
            dead = live[who].dead()
            rel = g["relative"]
            median = statistics.median(rel.values()) if rel else float("nan")
            outliers = [n for n, r in rel.items() if r > median * p.spread or r < median / p.spread]
            spread = max(rel.values()) / min(rel.values()) if rel and min(rel.values()) > 0 else float("nan")
            values[who] = {**g, "dead_relu": dead, "relative_median": median, "outliers": outliers}
            if g["nonfinite"]:
                fails.append(f"{who}'s gradients are not finite in {names(g['nonfinite'])}")
            # A critic's or relativistic D's last bias gets none by design: the loss depends on differences
            # of scores, so a constant offset cancels (WGAN: mean D(fake) - mean D(real)).
            offset_free = getattr(run.settings.loss.cls, "scores", None) in ("critic", "relativistic")
            last_bias = [n for n, q in network.named_parameters() if q.dim() == 1][-1:] if who == "D" else []
            expected = [n for n in g["zero"] if offset_free and n in last_bias]
            weights = [n for n in g["zero"] if n not in expected and network.get_parameter(n).dim() >= 2]
            others = [n for n in g["zero"] if n not in expected and n not in weights]
            values[who]["zero_expected"] = expected
            if weights:
                fails.append(f"{who}'s {names(weights)} got zero gradients")
            if others:
                warns.append(f"{who}'s {names(others)} got zero gradients")
            if g["missing"]:
                warns.append(f"{who}'s {names(g['missing'])} got no gradient (unused in the step)")
            fully = [n for n, share in dead.items() if share >= 1.0]
            mostly = [f"{n} {share:.0%}" for n, share in dead.items() if p.dead_warn <= share < 1.0]
            if fully:
                fails.append(f"every unit of {who}'s ReLU {names(fully)} is off for every sample (dead layer)")
            if mostly:
                warns.append(f"{who}'s ReLU units are mostly dead: {names(mostly)}")
            if outliers:
                warns.append(f"{who}'s {names(outliers)} have |grad|/|w| over {p.spread:g}x from the median "
                             f"{median:.2g}")
            worst_dead = max(dead.values(), default=0.0)
            spread_text = f"{spread:.3g}x" if math.isfinite(spread) else "n/a"
            parts.append(f"{who}: {sum(1 for q in network.parameters() if q.requires_grad)} tensors, |grad|/|w| "
                         f"spread {spread_text}, dead ReLU units at most {worst_dead:.0%}")
        figure = "after one step: " + "; ".join(parts)
        if fails:
            return ganbench.CheckResult("fail", figure, "; ".join(fails) + ": look for a detached path, a "
                                        "multiplication by zero or a ReLU whose inputs are all negative", values)
        if warns:
            return ganbench.CheckResult("warn", figure, "; ".join(warns), values)
        return ganbench.CheckResult("ok", figure, "", values)


@ganbench.hookimpl
def ganbench_register_checks():
    return [GradientFlow]
