"""Tiny real runs: the setups, registering the plugin under test, the builders and `run_plugin`.

A tiny run is a suite of one config that the suite loader's own functions resolve, trained on
the CPU by the core's own loop with `log_every = 1`, so each step is one metrics.jsonl record.
"""
from __future__ import annotations

import shutil
import signal
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ganbench import checkpoint
from ganbench.data import DataInfo, TensorData
from ganbench.errors import UsageError
from ganbench.hookspecs import hookimpl
from ganbench.interrupt import StopRequest
from ganbench.params import parse
from ganbench.registry import KINDS, PluginEntry, Registry, _plugin_name
from ganbench.resolve import builtin_layer, flatten, merge, plugin_defaults_layer, settings_from
from ganbench.rundir import read_jsonl
from ganbench.settings import PluginChoice
from ganbench.state import Batch, Run, Scores, Step, Targets, generate
from ganbench.suite import RunSpec
from ganbench.trainer import build_run, train

CPU = torch.device("cpu")
FILE = "ganbench.testing"  # what the tiny suite's error messages name as their file
# The tiny setups: a dataset, an architecture and a latent size each, with the same core settings.
# batch_size 12 divides by every pack size (2, 3, 4); one eval point and one checkpoint, at the end.
SETUPS: dict[str, dict[str, Any]] = {
    "points": {"dataset": {"name": "ring8"}, "architecture": {"name": "mlp", "width": 16, "hidden_layers": 2},
               "z_dim": 4},
    "images": {"dataset": {"name": "testing-images"}, "architecture": {"name": "dcgan", "width": 4}, "z_dim": 8},
}
CORE = {"batch_size": 12, "log_every": 1, "grid_size": 16, "eval_samples": 64, "real_samples": 64,
        "metrics": [], "detectors": []}
# Where a plugin of each kind goes in a run's settings: a single choice, or one of a list.
SLOTS = {"architecture": "architecture", "loss": "loss", "latent": "latent", "dataset": "dataset",
         "trick": "tricks", "metric": "metrics", "detector": "detectors", "logger": "loggers"}


# --------------------------------------------------------------------------------------------------
# The kit's own dataset, registered like any plugin (no back door)
# --------------------------------------------------------------------------------------------------


class KitImages:
    """160 seeded 28x28 images of 10 classes: a bright square on a dark field, its place the class."""

    name = "testing-images"
    params = None
    paper = ""

    def info(self) -> DataInfo:
        return DataInfo("image", (1, 28, 28), 10)

    def load(self, device: torch.device | str) -> TensorData:
        rng = torch.Generator().manual_seed(0)
        labels = torch.arange(160) % 10
        x = -0.9 + 0.1 * torch.randn((160, 1, 28, 28), generator=rng)
        for k in range(10):
            row, col = 3 + 12 * (k // 5), 1 + 5 * (k % 5)
            x[labels == k, :, row:row + 8, col:col + 4] += 1.6
        return TensorData(x.clamp(-1, 1), labels, kind="image", num_classes=10).to(device)


class _KitPlugins:
    @hookimpl
    def ganbench_register_datasets(self) -> list[type]:
        return [KitImages]


# --------------------------------------------------------------------------------------------------
# Registering the plugin under test, and the settings of a tiny run
# --------------------------------------------------------------------------------------------------


def _label(plugin: Any) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def registered(plugin: Any = None, kind: str | None = None,
               name: str | None = None) -> tuple[Registry, list[PluginEntry]]:
    """A fresh Registry of the installed plugins with `plugin` added (as an entry point's module would
    be), and the entries `plugin` provides (of `kind` and `name` when given). Load-time refusals
    (misspelt hooks, wrong argument names, a loss without `scores`) are UsageErrors, as in a suite."""
    registry = Registry()
    kit = _KitPlugins()
    registry.pm.register(kit, name=FILE)
    _add_classes(registry, kit, FILE)
    if plugin is None:
        return registry, []
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind = {kind!r}: not a plugin kind; one of {', '.join(KINDS)}")
    source = f"{FILE} ({_label(plugin)})"
    if isinstance(plugin, type):  # a plugin class
        entries = [e for e in registry.entries() if e.cls is plugin and kind in (None, e.kind)]
        if not entries:
            if kind is None:
                raise ValueError(f"{plugin.__qualname__} is not an installed plugin: pass kind= to say what it is")
            entries = [PluginEntry(kind, _plugin_name(plugin, source), plugin, source)]
            registry._add(entries[0])
    else:  # a module, or any object with registration hooks
        if not registry.pm.is_registered(plugin):  # an installed package's module already is
            registry.pm.register(plugin, name=source)
        registry.pm.check_pending()
        entries = _add_classes(registry, plugin, source, kind)
    return registry, [e for e in entries if name in (None, e.name)]


def _add_classes(registry: Registry, plugin: Any, source: str, only: str | None = None) -> list[PluginEntry]:
    entries = []
    for kind, hook_name in KINDS.items():
        if only not in (None, kind):
            continue
        for impl in getattr(registry.pm.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            for cls in impl.function() or []:
                known = registry.table[kind].get(getattr(cls, "name", None))
                if known is None or known.cls is not cls:
                    known = PluginEntry(kind, _plugin_name(cls, source), cls, source)
                    registry._add(known)  # the registry's own checks, and its duplicate-name error
                entries.append(known)
    return entries


def _one(entries: list[PluginEntry], plugin: Any) -> PluginEntry:
    if len(entries) != 1:
        names = ", ".join(f'{e.kind} "{e.name}"' for e in entries) or "none"
        raise ValueError(f"{_label(plugin)} provides {names}: pass kind= and name= to pick one")
    return entries[0]


def _table(entry: PluginEntry | None, params: dict[str, Any] | None, setup: str, steps: int,
           settings: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(dataset spec, [defaults] table, config table) of a tiny suite that uses `entry`."""
    defaults = {**CORE, **SETUPS[setup], "steps": steps, "eval_every": steps, "checkpoint_every": steps}
    dataset = defaults.pop("dataset")
    config = dict(settings or {})
    dataset = config.pop("dataset", dataset)
    if entry is not None:
        choice = {"name": entry.name, **(params or {})}
        slot = SLOTS[entry.kind]
        if entry.kind == "dataset":
            dataset = choice
            defaults["architecture"] = SETUPS["points"]["architecture"]  # an MLP models any shape
        elif slot in ("tricks", "metrics", "detectors", "loggers"):
            config[slot] = [*config.get(slot, []), choice]
        else:
            config[slot] = choice
    return dataset, defaults, config


def _spec(registry: Registry, entry: PluginEntry | None, params: dict[str, Any] | None, setup: str,
          steps: int, seed: int, settings: dict[str, Any] | None) -> RunSpec:
    """The RunSpec a suite holding the tiny setup and `entry` would give: the suite loader's own
    layers, validation, config_defaults and check()s."""
    dataset_spec, defaults_table, config_table = _table(entry, params, setup, steps, settings)
    dataset_spec = {"name": dataset_spec} if isinstance(dataset_spec, str) else dict(dataset_spec)
    ds_entry = registry.get("dataset", dataset_spec.pop("name"), f"{FILE}: dataset.name")
    ds_params = parse(getattr(ds_entry.cls, "params", None), dataset_spec, f"{FILE}: dataset")
    check = getattr(ds_entry.cls, "check", None)
    reason = check(ds_params, None) if check else None
    if reason:
        raise UsageError(f'{FILE}: dataset: "{ds_entry.name}" cannot be used: {reason}')
    dataset = PluginChoice("dataset", ds_entry.name, ds_entry.cls, ds_params)
    defaults = flatten(defaults_table, "defaults", FILE)
    config = flatten(config_table, "configs[0]", FILE)
    first = merge([builtin_layer(), defaults, config], FILE)
    merged = merge([builtin_layer(), defaults, plugin_defaults_layer(first, registry, FILE), config], FILE)
    run_settings = settings_from(merged, registry, "tiny", dataset, dataset.instantiate().info(), FILE, "configs[0]")
    return RunSpec("ganbench-testing", Path(f"{FILE}.toml"), "tiny", seed, "default", run_settings)


def _choose(registry: Registry, entry: PluginEntry | None, params: dict[str, Any] | None, data: str,
            steps: int, seed: int, settings: dict[str, Any] | None) -> tuple[str, RunSpec]:
    """The first tiny setup the plugin accepts ("auto": points, else images), and its spec."""
    if data not in (*SETUPS, "auto"):
        raise ValueError(f"data = {data!r}: one of {', '.join(SETUPS)} or 'auto'")
    tried = list(SETUPS) if data == "auto" and (entry is None or entry.kind != "dataset") else [
        "points" if data == "auto" else data]
    refusals = []
    for setup in tried:
        try:
            return setup, _spec(registry, entry, params, setup, steps, seed, settings)
        except UsageError as exc:
            refusals.append((setup, str(exc)))
    if len({why for _, why in refusals}) == 1:
        raise UsageError(refusals[0][1])
    raise UsageError("; ".join(f"{setup}: {why}" for setup, why in refusals))


# --------------------------------------------------------------------------------------------------
# Builders: real objects, tiny and seeded
# --------------------------------------------------------------------------------------------------


def tiny_run(plugin: Any = None, kind: str | None = None, *, name: str | None = None,
             params: dict[str, Any] | None = None, data: Literal["auto", "points", "images"] = "auto",
             seed: int = 0, steps: int = 4, settings: dict[str, Any] | None = None,
             dir: str | Path | None = None) -> Run:
    """A real `Run`, set up and not yet trained: data loaded, models and optimizers built, and
    `plugin` (with `params`, suite-style values) registered on `run.hook` beside the tiny setup's
    built-ins (bce, gaussian, mlp or dcgan). `settings` are suite keys for the run's config
    (`{"batch_size": 24, "tricks": ["ema"]}`). The run's folder is `dir`, or a temporary one that
    lives as long as the Run."""
    registry, entries = registered(plugin, kind, name)
    entry = _one(entries, plugin) if plugin is not None else None
    _, spec = _choose(registry, entry, params, data, steps, seed, settings)
    return _build(spec, dir)


def _build(spec: RunSpec, dir: str | Path | None) -> Run:
    folder = Path(dir) if dir is not None else Path(tempfile.mkdtemp(prefix="ganbench-testing-"))
    run = build_run(spec, folder, CPU)
    if dir is None:
        weakref.finalize(run, shutil.rmtree, folder, ignore_errors=True)
    return run


def tiny_step(index: int = 0, phase: Literal["d", "g"] = "d", update: int = 0) -> Step:
    """Where a hook is called from: generator step `index`, phase "d" or "g", the phase's `update`."""
    return Step(index, phase, update)


def tiny_batch(run: Run | None = None, n: int | None = None, phase: Literal["d", "g"] = "d") -> Batch:
    """What D is about to see in `run` (a fresh `tiny_run()` when None): `n` real samples (the
    run's batch size by default) and as many of G's, drawn with `run.rng` as the loop draws them.
    In the "d" phase the fakes are detached; in the "g" phase they carry G's graph."""
    run = run or tiny_run()
    assert run.models is not None
    n = n or run.settings.batch_size
    real, labels = run.data.sample(n, run.rng)
    fake_labels = run.hook.ganbench_sample_labels(run=run, n=n)
    with torch.set_grad_enabled(phase == "g"):
        fake = generate(run.models.generator, run.hook.ganbench_sample_latent(run=run, n=n), fake_labels)
    return Batch(real=real, fake=fake, real_labels=labels, fake_labels=fake_labels)


def tiny_scores(real: list[float] | torch.Tensor | None = None, fake: list[float] | torch.Tensor | None = None,
                n: int = 8, seed: int = 0, requires_grad: bool = False) -> Scores:
    """D's scores: the given values, or `n` standard-normal ones each, seeded. With
    `requires_grad`, a loss's gradient with respect to each can be checked."""
    rng = torch.Generator().manual_seed(seed)

    def tensor(values: Any) -> torch.Tensor:
        if values is None:
            return torch.randn(n, generator=rng).requires_grad_(requires_grad)
        t = torch.as_tensor(values, dtype=torch.float32).detach().clone()
        return t.requires_grad_(requires_grad)

    return Scores(real=tensor(real), fake=tensor(fake))


def tiny_targets(n: int = 8, real: float = 1.0, fake: float = 0.0) -> Targets:
    """D's per-sample targets, as the loop makes them (1 for real, 0 for fake) unless given."""
    return Targets(real=torch.full((n,), float(real)), fake=torch.full((n,), float(fake)))


# --------------------------------------------------------------------------------------------------
# Training a tiny run
# --------------------------------------------------------------------------------------------------


@dataclass
class PluginRun:
    """What `run_plugin` trained: the Run (models, plugins, folder) and what its files recorded."""

    run: Run
    status: str  # "completed", "diverged", "failed", or a detector's stop status
    reason: str | None
    setup: str  # "points" or "images"
    records: list[dict[str, Any]]  # metrics.jsonl train records, one per step
    evals: list[dict[str, Any]]  # metrics.jsonl eval records (the last step's at least)
    incidents: list[dict[str, Any]]  # incidents.jsonl
    key: str | None = None  # the plugin under test as the run registered it: "trick:my-lr-decay"

    @property
    def losses(self) -> list[tuple[float, float]]:
        """(d_loss, g_loss) of each step."""
        return [(r["d_loss"], r["g_loss"]) for r in self.records]

    @property
    def plugin(self) -> Any:
        """The instance of the plugin under test that the run used."""
        return self.run.plugins[self.key] if self.key else None


def run_plugin(plugin: Any, steps: int = 4, kind: str | None = None, *, name: str | None = None,
               params: dict[str, Any] | None = None, seed: int = 0,
               data: Literal["auto", "points", "images"] = "auto", settings: dict[str, Any] | None = None,
               dir: str | Path | None = None) -> PluginRun:
    """Register `plugin` (a module or object with registration hooks, or a plugin class with
    `kind`) into a real registry and train a tiny real run with it on the CPU for `steps` steps.

    `params` are the plugin's parameters as a suite gives them; bad ones raise `UsageError`, as
    `ganbench validate` would. `data = "auto"` uses the points setup unless the plugin refuses it
    (its check()), then the images one. An exception in a hook propagates with its traceback."""
    registry, entries = registered(plugin, kind, name)
    entry = _one(entries, plugin)
    setup, spec = _choose(registry, entry, params, data, steps, seed, settings)
    return _train(spec, setup, entry, dir)


def _train(spec: RunSpec, setup: str, entry: PluginEntry | None, dir: str | Path | None,
           stop_after: int | None = None) -> PluginRun:
    run = _build(spec, dir)
    stop = StopRequest()

    def progress(record: dict[str, Any]) -> None:
        if record["step"] == stop_after:
            stop.request(signal.SIGTERM)

    status, reason = train(run, progress if stop_after else None, stop)
    return _result(run, status, reason, setup, entry)


def _result(run: Run, status: str, reason: str | None, setup: str, entry: PluginEntry | None) -> PluginRun:
    records = read_jsonl(run.dir / "metrics.jsonl")
    key = None if entry is None or entry.kind == "dataset" else f"{entry.kind}:{entry.name}"
    return PluginRun(run, status, reason, setup, [r for r in records if r["kind"] == "train"],
                     [r for r in records if r["kind"] == "eval"], read_jsonl(run.dir / "incidents.jsonl"), key)


def _resume(spec: RunSpec, setup: str, entry: PluginEntry, folder: Path) -> PluginRun:
    """Stop after step steps // 2 (a stop request, as SIGTERM makes), then resume from the checkpoint."""
    first = _train(spec, setup, entry, folder, stop_after=max(1, spec.settings.steps // 2))
    if first.status != "interrupted":
        return first
    state = checkpoint.read(folder)
    assert state is not None
    run = build_run(spec, folder, CPU)
    loop = checkpoint.restore(run, state)
    run.done = loop.done
    return _result(run, *train(run, resume=loop), setup, entry)
