"""The settings of one run: what a suite's [defaults] and [[configs]] may set, typed and described."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ganbench.data import DataInfo
from ganbench.params import NonNegativeFloat, PositiveFloat, PositiveInt, Probability

# The optimizer betas must each lie in [0, 1).
Beta = Probability
Precision = Literal["fp32", "bf16"]
# torch.compile's modes; "reduce-overhead" adds CUDA graphs on a GPU (the step has static shapes and no host sync).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class OptimizerSettings:
    """One network's optimizer; `[defaults.optimizer.g]` and `[defaults.optimizer.d]` in a suite."""

    name: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"  # torch.optim class to use
    lr: PositiveFloat = 2e-4  # learning rate
    betas: tuple[Beta, Beta] = (0.5, 0.999)  # Adam/AdamW betas (DCGAN: beta1 = 0.5)
    weight_decay: NonNegativeFloat = 0.0  # L2 penalty (decoupled for adamw)
    momentum: NonNegativeFloat = 0.0  # momentum for sgd and rmsprop


@dataclass(frozen=True)
class CoreSettings:
    """The scalar settings of a run. Defaults follow the DCGAN paper (Radford et al. 2015)."""

    z_dim: PositiveInt = 100  # latent dimension
    batch_size: PositiveInt = 64  # samples per batch, real and fake each
    steps: PositiveInt = 2000  # generator steps
    d_updates: PositiveInt = 1  # D updates per step: n_critic in WGAN papers, DISC_UPDATES in the seed notes
    g_updates: PositiveInt = 1  # G updates per step: GEN_UPDATES in the seed notes
    d_batch: Literal["separate", "combined"] = "separate"  # D sees real and fake as two batches, or one
    log_every: PositiveInt = 50  # steps between metrics.jsonl records (one device read each)
    eval_every: PositiveInt = 500  # steps between eval points (sample grids, metrics)
    grid_size: PositiveInt = 64  # samples in each grid, drawn from fixed noise
    eval_samples: PositiveInt = 10_000  # generated samples per eval point for sample-based metrics (FID, KID)
    real_samples: PositiveInt = 10_000  # real samples for reference statistics (at most the dataset's size)
    diagnostics: bool = True  # gradient, weight and spectral norms and batch diversity in metrics.jsonl
    checkpoint_every: PositiveInt = 500  # steps between full checkpoints (also at the end and on a signal); a run resumes from the last
    precision: Precision = "fp32"  # "bf16": the step's G and D forwards under bfloat16 autocast; losses, penalties and optimizers stay fp32
    channels_last: bool = False  # G, D and D's image batches in channels-last memory format (tensor-core convolutions on a GPU)
    compile: CompileMode | bool = False  # torch.compile the step's G and D; true is mode "default", a string is torch.compile's mode


CORE_KEYS = tuple(CoreSettings.__dataclass_fields__)
# How the step runs on the device, not what it trains: off by default (docs/gpu.md). At its
# default a speed setting is left out of the run id, so runs made before these settings existed
# keep their ids; any other value is in the run id and in every metric's provenance.
SPEED_KEYS = ("precision", "channels_last", "compile")


def speed_changes(core: CoreSettings) -> dict[str, Any]:
    """The speed settings that differ from eager fp32, normalised (compile = true is "default"):
    {} for a run at the defaults. What goes into the run id and the metrics' provenance."""
    changed: dict[str, Any] = {}
    if core.precision != "fp32":
        changed["precision"] = core.precision
    if core.channels_last:
        changed["channels_last"] = True
    if core.compile is not False:
        changed["compile"] = compile_mode(core.compile)
    return changed


def compile_mode(value: bool | str) -> str | None:
    """torch.compile's mode for a `compile` setting, or None for no compilation."""
    if value is False:
        return None
    return "default" if value is True else str(value)
PLUGIN_KEYS = {"architecture": "architecture", "loss": "loss", "latent": "latent"}  # key -> kind
LIST_KEYS = {"tricks": "trick", "metrics": "metric", "detectors": "detector", "loggers": "logger"}  # plugin lists -> kind
ALL_KEYS = (*CORE_KEYS, *PLUGIN_KEYS, *LIST_KEYS, "optimizer", "policy")
Policy = Literal["record", "stop"]
BUILTIN_DEFAULTS: dict[str, Any] = {
    "architecture": "dcgan",
    "loss": "bce",
    "latent": "gaussian",
    "tricks": [],
    "optimizer": {"g": {}, "d": {}},
}


@dataclass(frozen=True)
class PluginChoice:
    """A plugin picked by a suite, with its parameters parsed into its params dataclass."""

    kind: str
    name: str
    cls: type
    params: Any

    def instantiate(self) -> Any:
        """A fresh plugin object for one run: `cls(params)`, or `cls()` for a plugin without params."""
        return self.cls(self.params) if getattr(self.cls, "params", None) is not None else self.cls()


@dataclass(frozen=True)
class RunSettings:
    """A fully resolved configuration: every value the run uses, with plugin defaults filled in."""

    config: str  # the configuration's name in the suite
    core: CoreSettings
    dataset: PluginChoice
    data: DataInfo  # what the dataset produces: kind, sample shape, classes
    architecture: PluginChoice
    loss: PluginChoice
    latent: PluginChoice
    tricks: tuple[PluginChoice, ...]
    metrics: tuple[PluginChoice, ...]
    detectors: tuple[PluginChoice, ...]
    policy: dict[str, str]  # incident kind -> "record" or "stop"; kinds not named are recorded
    loggers: tuple[PluginChoice, ...]  # trackers fed each metrics.jsonl record (tensorboard, mlflow); not in the run id
    optimizer_g: OptimizerSettings
    optimizer_d: OptimizerSettings
    origins: dict[str, str] = field(default_factory=dict, compare=False)  # key -> where its value came from
    registry: Any = field(default=None, compare=False, repr=False)  # the Registry it was resolved against

    def installed(self, kind: str) -> dict[str, type]:
        """Every installed plugin of `kind`, name -> class: for a check() whose message names the
        alternatives, third-party ones included."""
        if self.registry is None:
            return {}
        return {entry.name: entry.cls for entry in self.registry.table[kind].values()}

    def __getattr__(self, name: str) -> Any:
        # settings.steps reads settings.core.steps: plugins use the short form.
        if name in CORE_KEYS:
            return getattr(self.core, name)
        raise AttributeError(name)


def refuse_unless_targets(trick: str, setup: RunSettings) -> str | None:
    """A target trick's check(): the reason it cannot be used when the run's loss ignores `Targets`
    (it would change nothing), naming every installed loss that reads them."""
    if getattr(setup.loss.cls, "uses_targets", False):
        return None
    readers = sorted(n for n, cls in setup.installed("loss").items() if getattr(cls, "uses_targets", False))
    return (f'{trick} changes D\'s targets, but loss "{setup.loss.name}" does not read them (uses_targets = False: '
            f'its scores are "{getattr(setup.loss.cls, "scores", "?")}"); use a loss that does: {", ".join(readers) or "none installed"}')
