"""The objects that hooks receive. Plugins read them and, where a hook says so, change them in place."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ganbench.data import Data
    from ganbench.settings import RunSettings


@dataclass
class Models:
    """The two networks of a run. Tricks may replace either attribute (for example with a wrapped D)."""

    generator: nn.Module
    discriminator: nn.Module


@dataclass
class Optimizers:
    """One optimizer per network."""

    generator: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer


@dataclass(frozen=True)
class Step:
    """Where the loop is. `index` counts generator steps from 0; `phase` is "d" or "g"."""

    index: int
    phase: Literal["d", "g"]
    update: int = 0  # which of the phase's updates this is (0 .. d_updates - 1 in the D phase)


@dataclass
class Batch:
    """What D is about to see. `ganbench_discriminator_inputs` may assign new `real` and `fake`
    tensors (instance noise does). In the D phase `fake` is detached from G; in the G phase it
    carries G's graph. `real` is in the G phase too (RaGAN's G loss scores it)."""

    real: Tensor
    fake: Tensor
    real_labels: Tensor | None = None  # class labels of `real`: set for any labelled dataset, conditional or not
    fake_labels: Tensor | None = None  # labels `fake` was generated for; None unless the run is conditional


@dataclass
class Targets:
    """Per-sample target values for D's real and fake scores (1 and 0 unless a trick changes them).

    Only losses with `uses_targets = True` read them (bce, minimax, lsgan); critic losses ignore them.
    """

    real: Tensor
    fake: Tensor


@dataclass
class Scores:
    """D's raw outputs (logits or critic values), shape (n,) each. In the D phase both are set; in
    the G phase `real` is None (the loop scores only the fakes): a G loss that needs real scores
    computes them from `batch.real` with `ganbench.discriminate`."""

    real: Tensor | None
    fake: Tensor


@dataclass
class Updates:
    """How many D and G updates the next step makes. Starts at the settings' d_updates and
    g_updates; a trick may change it between steps (an adaptive D:G ratio)."""

    d: int
    g: int


@dataclass
class Incident:
    """A problem a detector found, as a detector returns it from `ganbench_detect`.

    The core adds the detector's name and the suite's policy for `kind`, and appends it to
    incidents.jsonl. `kind` must be one the detector declares in its `kinds`.
    """

    kind: str  # "mode-collapse", "d-dominance", ...
    severity: Literal["info", "warning", "critical"]
    message: str  # one sentence a user can act on; the numbers go in evidence
    evidence: dict[str, Any]  # the values that triggered it, with their thresholds
    step: int | None = None  # the step it refers to; the record's step when None


@dataclass
class Run:
    """Everything about the run in progress. Passed to every per-run hook as `run`."""

    settings: RunSettings  # the fully resolved configuration
    seed: int
    device: torch.device
    data: Data
    dir: Path  # runs/<run-id>/; plugins may write their own files here
    hook: Any  # the run's pluggy hook relay: run.hook.ganbench_sample_latent(run=run, n=8)
    rng: torch.Generator  # on `device`; use it for every random draw so runs reproduce
    models: Models | None = None
    optimizers: Optimizers | None = None
    updates: Updates = field(default_factory=lambda: Updates(1, 1))  # set from the settings by the trainer
    extras: dict[str, Any] = field(default_factory=dict)  # per-run scratch space shared between plugins
    id: str = ""  # the run id: the name of `dir`, and what a checkpoint must match
    plugins: dict[str, Any] = field(default_factory=dict)  # registered name ("trick:ema") -> plugin object
    done: int = 0  # steps finished (set by the trainer)


@dataclass(frozen=True)
class Convergence:
    """What "converged" means for values that unconverged samples can fool.

    A generator that smears its samples between the modes "covers" every mode and every class; a
    count of modes or classes says nothing until the samples are sharp. A metric that records such
    values declares here which of its own values tells sharp samples apart (`key`) and the bound it
    must reach: a floor (`at_least`, for a value where higher is sharper, such as a high-quality
    fraction) or a ceiling (`at_most`, for a distance, such as a Fréchet distance to the real
    data); exactly one of the two. The report marks runs outside it, and does not rank on the
    `guards` values when the baseline's runs are outside it.
    """

    key: str  # a value the same metric records: high_quality_fraction, class_confidence, digit_fd
    at_least: float | None  # a run is converged when its final `key` is at least this (None: see at_most)
    guards: tuple[str, ...]  # values not to rank on while the baseline is not converged
    why: str = ""  # one sentence: why the bound sits where it does
    at_most: float | None = None  # or: converged when its final `key` is at most this

    def __post_init__(self) -> None:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError(f"Convergence({self.key!r}): give exactly one of at_least and at_most, "
                             f"not {'both' if self.at_least is not None else 'neither'}")

    def holds(self, value: float) -> bool:
        """True when a final `value` of `key` is converged by this bound."""
        return value >= self.at_least if self.at_least is not None else value <= self.at_most

    def record(self) -> dict[str, Any]:
        """As the eval record's provenance keeps it (plain JSON): the one bound that is set."""
        bound = {"at_least": self.at_least} if self.at_least is not None else {"at_most": self.at_most}
        return {"key": self.key, **bound, "guards": list(self.guards), "why": self.why}

    @classmethod
    def from_record(cls, recorded: Any) -> Convergence | None:
        """The inverse of `record`: None for anything that is not a well-formed record of one."""
        if not isinstance(recorded, dict) or not isinstance(recorded.get("key"), str):
            return None
        try:
            return cls(recorded["key"], recorded.get("at_least"), tuple(recorded.get("guards") or ()),
                       str(recorded.get("why") or ""), recorded.get("at_most"))
        except ValueError:  # both bounds or neither
            return None


@dataclass
class MetricValues:
    """What a metric plugin returns from `ganbench_evaluate`.

    `values` go into metrics.jsonl under their own keys (keep them unique among metrics that can
    run together: "fid", "kid_mean", "classes_covered"); `better` says, for each key, whether "min" or "max" is better,
    so the run can record its best value; `provenance` says how the values were measured
    (extractor, weights hash, sample counts, ...), and values whose provenance differs are never
    ranked together. `convergence` declares when the values can be trusted (see `Convergence`).
    """

    metric: str  # the metric plugin's name
    values: dict[str, float]
    better: dict[str, Literal["min", "max"]]
    provenance: dict[str, Any] = field(default_factory=dict)
    convergence: Convergence | None = None  # what "converged" means for these values, if they can be fooled


def discriminate(discriminator: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
    """D's scores on `x`, shape (n,): D(x) when `labels` is None, else D(x, labels).

    Pass labels only in a conditional run, which is when `batch.fake_labels` is not None: a
    labelled dataset gives `batch.real_labels` in every run, and an unconditional D takes no labels
    (calling it with some raises a TypeError that says so). Penalties that score their own inputs
    (gradient penalties, R1) call D through this so they work in both kinds of run:
    `discriminate(D, x, batch.real_labels if batch.fake_labels is not None else None)`."""
    if labels is None:
        return discriminator(x)
    try:
        return discriminator(x, labels)
    except TypeError as exc:
        _refuse_labels(discriminator, "discriminate(D, x, labels)", "D", exc)
        raise


def generate(generator: nn.Module, z: Tensor, labels: Tensor | None) -> Tensor:
    """G's samples for `z`: G(z) when `labels` is None, else G(z, labels) (a conditional run; pass
    the labels `ganbench_sample_labels` gave, which are None in an unconditional run)."""
    if labels is None:
        return generator(z)
    try:
        return generator(z, labels)
    except TypeError as exc:
        _refuse_labels(generator, "generate(G, z, labels)", "G", exc)
        raise


def _refuse_labels(network: nn.Module, caller: str, who: str, exc: TypeError) -> None:
    """Raise a TypeError naming the mistake when `network` takes no labels argument; else return,
    so the original error (a bug inside the network) propagates unchanged."""
    try:
        parameters = inspect.signature(network.forward).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2:
        raise TypeError(
            f"{caller}: this {type(network).__name__} takes no labels (an unconditional "
            f"{who}); pass labels=None unless the run is conditional (batch.fake_labels is not None)"
        ) from exc
