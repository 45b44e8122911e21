"""G's output range against the data's (Radford et al. 2015: tanh output, images scaled to [-1, 1];
Chintala et al. 2016, "How to Train a GAN?" tip 1: normalise the inputs).

Looks at G's output at initialisation and after a few training steps, G's last activation (the
range it can reach), the real data as D sees it (after input tricks such as unit-range) and the
range the data plugin declares. It catches tanh against [0, 1] data, a sigmoid against [-1, 1]
data, and data left in [0, 255].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import ganbench

BOUNDED = {nn.Tanh: (-1.0, 1.0), nn.Sigmoid: (0.0, 1.0)}
SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)  # leave the values' range as it is


@dataclass(frozen=True)
class Params:
    steps: ganbench.PositiveInt = 20  # training steps before G's output is looked at again
    samples: ganbench.PositiveInt = 512  # generated and real samples looked at
    tolerance: ganbench.Probability = 0.02  # slack beyond a range, as a share of its width
    coverage_warn: ganbench.Probability = 0.6  # ⚠ when the data spans less than this share of G's range


def declared_range(data: ganbench.Data) -> tuple[float, float] | None:
    """The data plugin's declared range: its `value_range`, else [-1, 1] for images (ganbench.Data's
    contract), else None (points may lie anywhere)."""
    declared = getattr(data, "value_range", None)
    if declared is not None:
        return float(declared[0]), float(declared[1])
    return (-1.0, 1.0) if data.kind == "image" else None


def last_activation(generator: nn.Module) -> tuple[str, tuple[float, float] | None]:
    """(name, range) of G's last leaf module that is not a reshape: tanh's [-1, 1], sigmoid's [0, 1], Hardtanh's bounds,
    or None for an unbounded output."""
    leaves = [m for m in generator.modules() if not list(m.children()) and not isinstance(m, SHAPE_ONLY)]
    if not leaves:
        return type(generator).__name__, None
    last = leaves[-1]
    for cls, bounds in BOUNDED.items():
        if isinstance(last, cls):
            return type(last).__name__, bounds
    if isinstance(last, nn.Hardtanh):
        return type(last).__name__, (float(last.min_val), float(last.max_val))
    return type(last).__name__, None


def span(x: Tensor) -> tuple[float, float]:
    return float(x.min()), float(x.max())


def fmt(r: tuple[float, float] | None) -> str:
    return "unbounded" if r is None else f"[{r[0]:.3g}, {r[1]:.3g}]"


def outputs(run: ganbench.Run, n: int) -> Tensor:
    assert run.models is not None
    with torch.no_grad():
        z = run.hook.ganbench_sample_latent(run=run, n=n)
        return ganbench.generate(run.models.generator, z, run.hook.ganbench_sample_labels(run=run, n=n))


def within(inner: tuple[float, float], outer: tuple[float, float], tolerance: float) -> bool:
    slack = tolerance * (outer[1] - outer[0])
    return inner[0] >= outer[0] - slack and inner[1] <= outer[1] + slack


class OutputRange:
    """G's output range at initialisation and after a few steps, against the data's range."""

    name = "output-range"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    def diagnose(self, subject: ganbench.CheckSubject) -> ganbench.CheckResult:
        p = self.p
        run = subject.build()
        assert run.models is not None
        raw, _ = run.data.sample(p.samples, torch.Generator(device=run.device).manual_seed(1))
        batch = ganbench.Batch(real=raw, fake=outputs(run, p.samples))
        run.hook.ganbench_discriminator_inputs(run=run, step=ganbench.Step(0, "d"), batch=batch)
        seen, data, declared = span(batch.real), span(raw), declared_range(run.data)
        activation, reach = last_activation(run.models.generator)
        if reach is None:  # a functional tanh (F.tanh in forward) has no module: probe with large latents
            with torch.no_grad():
                z = 10 * run.hook.ganbench_sample_latent(run=run, n=p.samples)
                probe = span(ganbench.generate(run.models.generator, z, run.hook.ganbench_sample_labels(run=run, n=p.samples)))
            for bounds in ((0.0, 1.0), (-1.0, 1.0)):
                if within(probe, bounds, 0.0):
                    activation, reach = f"{activation} (measured on 10x latents)", bounds
                    break
        at_init = outputs(run, p.samples)
        subject.train(run, p.steps)
        trained = outputs(run, p.samples)
        figure = (f"G ends in {activation} {fmt(reach)}: {fmt(span(at_init))} at init, {fmt(span(trained))} after "
                  f"{p.steps} steps; data {fmt(data)}" + (f" ({fmt(seen)} as D sees it)" if seen != data else "")
                  + f", declared {fmt(declared)}")
        values: dict[str, Any] = {"activation": activation, "reach": reach, "g_init": span(at_init),
                                  "g_trained": span(trained), "data": data, "data_seen_by_d": seen,
                                  "declared": declared, "steps": p.steps}
        for name, x in (("at init", at_init), (f"after {p.steps} steps", trained)):
            if not torch.isfinite(x).all():
                return ganbench.CheckResult("fail", figure, f"G's output is not finite {name}", values)
        if declared is not None and not within(data, declared, p.tolerance):
            return ganbench.CheckResult(
                "fail", figure, f"the data lies in {fmt(data)}, outside its declared {fmt(declared)}: normalise it "
                "in the dataset plugin (uint8 pixels: x / 127.5 - 1), or declare its value_range", values)
        if reach is not None and not within(seen, reach, p.tolerance):
            return ganbench.CheckResult(
                "fail", figure, f"G's {activation} cannot reach data in {fmt(seen)}: end G in "
                f"{'tanh' if seen[0] < -p.tolerance else 'a matching activation'} or rescale the data to {fmt(reach)}",
                values)
        if reach is not None:
            coverage = (seen[1] - seen[0]) / (reach[1] - reach[0])
            values["coverage"] = coverage
            if coverage < p.coverage_warn:
                return ganbench.CheckResult(
                    "warn", figure, f"the data uses {coverage:.0%} of what G's {activation} can output: D can reject "
                    f"fakes by values no real sample takes; match G's activation to {fmt(seen)} or rescale the data",
                    values)
        elif run.data.kind == "image":
            return ganbench.CheckResult(
                "warn", figure, "G's output is unbounded while images are bounded: end G in tanh for [-1, 1] data "
                "(Radford et al. 2015)", values)
        slack = 0.1 * (seen[1] - seen[0])
        outside = float(((trained < seen[0] - slack) | (trained > seen[1] + slack)).float().mean())
        values["outside_after_steps"] = outside
        if outside > 0.5:
            return ganbench.CheckResult(
                "warn", figure, f"{outside:.0%} of G's values lie outside the data's range after {p.steps} steps: "
                "check G's output scale and the loss", values)
        return ganbench.CheckResult("ok", figure, "", values)


@ganbench.hookimpl
def ganbench_register_checks():
    return [OutputRange]
