"""Every hook ganbench calls, in one place. This file is the reference for plugin authors.

A plugin implements a hook by defining a function (or method) with the hook's name, decorated with
`@ganbench.hookimpl`, and taking any subset of the hook's arguments by name.

Two families:

* Registration hooks live at module level in a plugin module (a built-in, an installed package's
  `ganbench` entry point, or a file named in a suite). They return plugin classes.
* Per-run hooks are methods of plugin instances. A suite names an architecture, a loss, a latent
  distribution and some tricks; each is instantiated with its parameters and registered on that
  run's plugin manager only, so its hooks fire for that run and no other.

Per-run hooks that change the step receive mutable objects (`Batch`, `Targets`, `Models`) and change
them in place; every implementation sees the changes of the ones before it. Implementations run in
this order: tricks (in suite order), then the loss, the latent distribution, the architecture, and
last the core's own defaults. Use `tryfirst=True` / `trylast=True` on a hookimpl to move it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from ganbench.state import Batch, Incident, MetricValues, Models, Run, Scores, Step, Targets

PROJECT = "ganbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------
# Registration: module-level hooks that return plugin classes
# --------------------------------------------------------------------------------------------------
#
# A plugin class has a `name` (short, kebab-case, unique within its kind), an optional `params`
# dataclass (each field with a default and a trailing `# comment` that `ganbench plugins` prints),
# and an `__init__(self, params)`. It may also define:
#   config_defaults(cls, params) -> dict   dotted run-setting keys it recommends, e.g. {"d_updates": 5}
#   check(cls, params, setup) -> str|None   a reason this selection cannot work, refused at validation
#   plot = ("lecam_reg",)                   train-record keys it adds in `ganbench_log_record`, for the report
#                                           to draw in its diagnostics figure (recorded in config.json)


@hookspec
def ganbench_register_architectures() -> list[type]:
    """Return architecture classes. An instance implements `ganbench_build_models`."""


@hookspec
def ganbench_register_losses() -> list[type]:
    """Return loss classes. An instance implements `ganbench_discriminator_loss` and
    `ganbench_generator_loss`, and sets `uses_targets` (True when it reads `Targets`) and `scores`,
    what D's outputs mean: "logit", "least-squares", "margin" (hinge), "critic" (Wasserstein),
    "relativistic" (RaGAN) or "other"; both are checked when the loss is loaded.
    The d-dominance detector judges saturation from it."""


@hookspec
def ganbench_register_tricks() -> list[type]:
    """Return trick classes. An instance implements any of the per-run hooks below."""


@hookspec
def ganbench_register_latents() -> list[type]:
    """Return latent-distribution classes. An instance implements `ganbench_sample_latent`."""


@hookspec
def ganbench_register_datasets() -> list[type]:
    """Return dataset classes. An instance has `load(device) -> ganbench.data.Data`."""


@hookspec
def ganbench_register_metrics() -> list[type]:
    """Return metric classes. An instance implements `ganbench_evaluate`."""


@hookspec
def ganbench_register_detectors() -> list[type]:
    """Return detector classes. An instance implements `ganbench_detect`, and declares the incident
    kinds it raises with the status a stopped run ends in: `kinds = {"mode-collapse": "collapsed"}`."""


@hookspec
def ganbench_register_loggers() -> list[type]:
    """Return logger classes (TensorBoard, MLflow, ...). An instance implements `ganbench_log`,
    and closes what it opened in `ganbench_run_end`; one that must find its place again when a run
    resumes (an MLflow run id, the step to purge after) keeps it in `ganbench_state_dict`.
    Registered for a run only when the suite's `loggers` (or `--logger`) names it."""


@hookspec
def ganbench_register_checks() -> list[type]:
    """Return `ganbench doctor` check classes. An instance has `diagnose(subject)`, which gets a
    `ganbench.CheckSubject` (one architecture × dataset of a suite) and returns a
    `ganbench.CheckResult` (ok, warn or fail, the figure behind it and a suggestion), or None
    when the check does not apply to that subject. An architecture or dataset plugin may register
    checks of its own beside its classes."""


@hookspec
def ganbench_register_executors() -> list[type]:
    """Return executor classes: where a suite's runs train (`local` processes, `ray` tasks, `slurm`
    jobs). An instance has `run(work)`, which gets a `ganbench.executors.Work` (the runs' resolved
    settings, the device request, the output folder) and trains each run with
    `ganbench.executors.run_job`, reporting progress and ends through the Work's callbacks.
    Chosen by `ganbench run --executor NAME` or a suite's [executor] table; never part of a run's
    identity, since where a run trains changes none of its numbers."""


# --------------------------------------------------------------------------------------------------
# Building a run
# --------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def ganbench_build_models(run: Run) -> Models:
    """Build G and D for `run.data` (shape, kind, classes) and `run.settings.z_dim`, on the CPU;
    the trainer moves them to the device. Stops at first non-None result. The architecture
    implements it."""


@hookspec
def ganbench_configure_models(run: Run, models: Models) -> None:
    """Change the built models in place: wrap D (spectral normalization), keep a copy of G (EMA).
    Called once, after the models are on the device and before the optimizers are built."""


@hookspec(firstresult=True)
def ganbench_build_optimizer(
    run: Run, network: str, parameters: list[torch.nn.Parameter], settings: Any
) -> torch.optim.Optimizer:
    """Build the optimizer for `network` ("generator" or "discriminator") from its
    `OptimizerSettings`. Stops at first non-None result; the core builds torch.optim's when no
    plugin does."""


# --------------------------------------------------------------------------------------------------
# Inside a training step, in the order the loop calls them
# --------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def ganbench_sample_latent(run: Run, n: int) -> Tensor:
    """Return `n` latent vectors of shape (n, run.settings.z_dim) on `run.device`, drawn with
    `run.rng`. Stops at first non-None result. The latent distribution implements it."""


@hookspec(firstresult=True)
def ganbench_sample_labels(run: Run, n: int) -> Tensor | None:
    """Return class labels (a long tensor of `n`) for the samples G is about to generate, drawn with
    `run.rng`, or None for an unconditional model. Stops at first non-None result. When labels
    are given, the core calls G(z, labels), and D(x, labels) with the real batch's labels for
    real samples and these labels for fakes (a conditional trick wraps the models to take them)."""


@hookspec
def ganbench_discriminator_inputs(run: Run, step: Step, batch: Batch) -> None:
    """Change what D sees by assigning new tensors to `batch.real` / `batch.fake`. Called in the
    D phase and in the G phase (`step.phase`), so a trick that perturbs D's inputs does so for
    both players."""


@hookspec
def ganbench_discriminator_targets(run: Run, step: Step, targets: Targets) -> None:
    """Change D's per-sample targets by assigning new tensors to `targets.real` / `targets.fake`
    (label smoothing, noisy labels). D phase only."""


@hookspec
def ganbench_after_backward(run: Run, step: Step, network: str) -> None:
    """Called after each backward pass and before the optimizer step, with the gradients of
    `network` ("generator" or "discriminator", i.e. `run.models.<network>`) in place. The core's
    diagnostics read them first (tryfirst), so a gradient-clipping trick here never hides what
    the unclipped gradients were."""


@hookspec(firstresult=True)
def ganbench_discriminator_loss(run: Run, step: Step, scores: Scores, targets: Targets) -> Tensor:
    """Return D's scalar loss from its scores on real and fake. Stops at first non-None result.
    The loss implements it."""


@hookspec
def ganbench_discriminator_penalty(run: Run, step: Step, batch: Batch, scores: Scores) -> Tensor | None:
    """Return an extra scalar term for D's loss (a gradient penalty), or None. All results are
    added to the loss. `batch` holds the exact tensors D scored."""


@hookspec
def ganbench_after_discriminator_step(run: Run, step: Step) -> None:
    """Called after each D optimizer step (weight clipping)."""


@hookspec(firstresult=True)
def ganbench_generator_loss(run: Run, step: Step, batch: Batch, scores: Scores) -> Tensor:
    """Return G's scalar loss from D's scores on `batch.fake` (which carries G's graph).
    Stops at first non-None result. The loss implements it."""


@hookspec
def ganbench_step_end(run: Run, step: Step) -> None:
    """Called once per step, after the G updates (EMA of G, schedules)."""


# --------------------------------------------------------------------------------------------------
# Logging and evaluation, at intervals only: these may read values from the device
# --------------------------------------------------------------------------------------------------


@hookspec
def ganbench_log_record(run: Run, step: int, record: dict[str, Any]) -> None:
    """Add values to the record about to go into metrics.jsonl, in place. Called every
    `log_every` steps, so reading device values here costs one sync per interval, not per step.
    Name the keys you add in the plugin class's `plot` tuple to have the report draw them."""


@hookspec
def ganbench_detect(run: Run, record: dict[str, Any]) -> list[Incident] | None:
    """Detectors: inspect one record just written to metrics.jsonl (`record["kind"]` is "train",
    every `log_every` steps, or "eval", at eval points) and return the incidents it shows, or None.
    Keep state on the detector to judge trends, and report a lasting condition once, not at every
    record. The core writes incidents.jsonl and applies the suite's policy for each kind."""


@hookspec
def ganbench_log(run: Run, record: dict[str, Any]) -> None:
    """Loggers: send one record just written to metrics.jsonl to a tracker. `record["kind"]` is
    "train" (every `log_every` steps: losses, D's outputs, diagnostics) or "eval" (at eval points:
    metric values, and `record["sample_grid"]`, the grid's path relative to `run.dir`). The values
    are plain Python numbers already read from the device: a logger adds no host sync. Do not
    change the record."""


@hookspec(firstresult=True)
def ganbench_eval_generator(run: Run) -> nn.Module:
    """Return the generator to evaluate and sample from (the EMA copy, for instance).
    Stops at first non-None result; the trained G when no plugin answers."""


@hookspec
def ganbench_evaluate(run: Run, step: int, generator: nn.Module) -> MetricValues | None:
    """Return metric values, their better direction and their provenance for `generator` at an
    eval point, or None. Called every `eval_every` steps and after the last step, with the
    generator in eval mode under no_grad. Metric plugins implement it. Values that unconverged
    samples can fool (coverage counts) come with `MetricValues.convergence`: the floor another
    of the metric's values must reach before a report ranks on them."""


# --------------------------------------------------------------------------------------------------
# Checkpoints: a plugin's own state, saved and restored so a run resumes bit-identically
# --------------------------------------------------------------------------------------------------


@hookspec
def ganbench_state_dict(run: Run) -> dict[str, Any] | None:
    """Return this plugin's per-run state for a checkpoint: tensors, numbers, strings, None, and
    lists, tuples and dicts of them (what `torch.load(weights_only=True)` reads back), or None.
    Called every `checkpoint_every` steps, at the last step and when the run is interrupted, on
    each plugin that implements it. `ganbench.plain_state(self)` turns a plugin's attributes
    into such a dict. A plugin that keeps state between steps (an EMA copy, a schedule, a
    detector's baseline) must implement this and `ganbench_load_state_dict`; a plugin that
    implements neither is checked for changed attributes, and its runs cannot resume if it has
    any (attributes named in the class's `transient` tuple, such as caches, are not checked)."""


@hookspec
def ganbench_load_state_dict(run: Run, state: dict[str, Any]) -> None:
    """Restore what this plugin's `ganbench_state_dict` returned, when a run resumes from a
    checkpoint. Called after the models and optimizers are built and configured and their own
    state loaded, before the first step; `ganbench.load_plain_state(self, state)` undoes
    `plain_state`."""


@hookspec
def ganbench_run_end(run: Run, status: str, reason: str | None) -> None:
    """Called once when the run ends, whatever its status: "completed", "failed", "diverged", or the
    status an incident's `stop` policy set ("collapsed", "stopped")."""
