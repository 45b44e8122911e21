"""`check_plugin`: what every plugin must do to work in ganbench, checked on tiny real runs."""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pluggy
import torch

from ganbench import checkpoint
from ganbench.errors import UsageError
from ganbench.params import describe, parse
from ganbench.registry import HOOK_NAMES, PluginEntry, Registry
from ganbench.settings import PluginChoice
from ganbench.state import MetricValues
from ganbench.testing.tiny import CPU, PluginRun, _choose, _label, _resume, _train, registered
from ganbench.trainer import TRAIN_KEYS

WALL_CLOCK = ("sec_per_step", "elapsed_s")  # the only values two runs of one seed may differ in
# What an instance of each kind must implement (a trick: any per-run hook; a dataset: methods).
REQUIRED = {"architecture": ("ganbench_build_models",),
            "loss": ("ganbench_discriminator_loss", "ganbench_generator_loss"),
            "latent": ("ganbench_sample_latent",), "metric": ("ganbench_evaluate",),
            "detector": ("ganbench_detect",), "dataset": ("info", "load"), "trick": (),
            "logger": ("ganbench_log",), "check": ("diagnose",), "executor": ("run",)}
# Values of the wrong type for any typed parameter: a field must refuse one of them.
BAD_VALUES = ("ganbench.testing: not a value", {"not": "a value"})


class PluginCheckFailed(AssertionError):
    """A plugin failed `check_plugin`: the message names the plugin, the check and why."""


@dataclass(frozen=True)
class Checked:
    """One plugin that passed `check_plugin`, and what was checked."""

    kind: str
    name: str
    setup: str  # the tiny setup it trained in
    checks: tuple[str, ...]


def check_plugin(plugin: Any, kind: str | None = None, *, name: str | None = None,
                 params: dict[str, Any] | None = None, steps: int = 3, seed: int = 0,
                 data: Literal["auto", "points", "images"] = "auto", settings: dict[str, Any] | None = None,
                 resume: bool = True) -> list[Checked]:
    """Check every plugin class `plugin` provides (of `kind`, named `name`) the way ganbench will
    use it; raise `PluginCheckFailed` (an AssertionError) naming the first check that fails.

    Every kind:
      loads      the registry accepts it: hook names are hookspecs, marked @ganbench.hookimpl,
                 with argument names the hookspec has (a loss: `uses_targets` and `scores` too)
      summary    the class has a docstring (`ganbench plugins` prints its first line)
      params     a frozen dataclass, or None; every field has a default and a `# description`,
                 and a value of the wrong type for any field is refused with a UsageError
      hooks      it implements what its kind needs (below); a trick, some hook or config_defaults
      trains     a tiny run with it (`params`) completes `steps` steps with finite losses
      seeded     a second run of the same seed is identical: every record but wall-clock times,
                 the final weights, optimizer, random and plugin states, bit for bit
      stateless  it keeps no state outside ganbench_state_dict (its runs stay resumable)
      resumes    (`resume`) a run stopped halfway and resumed from its checkpoint ends identical
    By kind, on the trained run:
      architecture  G maps (n, z_dim) to (n, *data.shape); D maps samples to (n,) scores
      latent        ganbench_sample_latent gives (n, z_dim) floats, finite, on the run's device
      dataset       load() matches info(); sample(n, rng) gives n finite samples (images in
                    [-1, 1]) and labels, the same for the same seed; content_hash() is stable
      metric        ganbench_evaluate returns MetricValues of its own name, finite values in the
                    eval record, `better` of "min"/"max" for its own keys, JSON provenance
      detector      declares `kinds` ({incident kind: status}); its incidents were accepted
    Same-process determinism is what is checked; a plugin's reproducibility across machines
    is not. On one CPU thread a check takes about half a second.
    """
    try:
        registry, entries = registered(plugin, kind, name)
    except (UsageError, pluggy.PluginValidationError) as exc:
        raise PluginCheckFailed(f"{_label(plugin)}: loads: {exc}") from None
    if not entries:
        what = f'{kind or "plugin"} classes' + (f' named "{name}"' if name else "")
        raise PluginCheckFailed(f"{_label(plugin)}: loads: it registers no {what}; is its ganbench_register_* "
                                "function marked @ganbench.hookimpl?")
    return [_check_entry(registry, entry, params, steps, seed, data, settings, resume) for entry in entries]


def _check_entry(registry: Registry, entry: PluginEntry, params: dict[str, Any] | None, steps: int, seed: int,
                 data: str, settings: dict[str, Any] | None, resume: bool) -> Checked:
    where = f'{entry.kind} "{entry.name}" ({entry.source})'
    done = ["loads"]

    def fail(check: str, why: str) -> PluginCheckFailed:
        return PluginCheckFailed(f"{where}: {check}: {why}")

    if not (entry.cls.__doc__ or "").strip():
        raise fail("summary", "the class has no docstring; `ganbench plugins` prints its first line")
    done.append("summary")
    why = _params_problem(entry.cls)
    if why:
        raise fail("params", why)
    done.append("params")
    why = _hooks_problem(entry)
    if why:
        raise fail("hooks", why)
    done.append("hooks")

    if entry.kind == "executor":  # an executor trains whole runs elsewhere; tests/test_executors*.py run each
        return Checked(entry.kind, entry.name, "none", tuple(done))
    if entry.kind == "check":  # a check never trains in a run: it diagnoses one, as `ganbench doctor` does
        why = _check_problem(registry, entry, params, data, steps, seed, settings)
        if why:
            raise fail("diagnoses", why)
        return Checked(entry.kind, entry.name, "points", (*done, "diagnoses"))

    try:
        setup, spec = _choose(registry, entry, params, data, steps, seed, settings)
    except UsageError as exc:
        raise fail("trains", f"no tiny setup accepts it: {exc}") from None

    def attempt(check: str, train: Any, *args: Any) -> PluginRun:
        try:
            return train(*args)
        except Exception as exc:  # a bug in a hook: named here, its traceback chained below
            raise fail(check, f"{type(exc).__name__}: {exc}") from exc

    with tempfile.TemporaryDirectory(prefix="ganbench-check-") as tmp:
        first = attempt("trains", _train, spec, setup, entry, Path(tmp) / "a")
        if first.status != "completed":
            raise fail("trains", f"the tiny {setup} run ended {first.status}: {first.reason}")
        for record in first.records:
            bad = [k for k in TRAIN_KEYS[:3] if not math.isfinite(record[k])]
            if bad:
                raise fail("trains", f"non-finite {', '.join(bad)} at step {record['step']}")
        done.append(f"trains ({setup}, {steps} steps)")
        why = _kind_problem(entry, first)
        if why:
            raise fail(entry.kind, why)
        done.append(entry.kind)

        second = attempt("seeded", _train, spec, setup, entry, Path(tmp) / "b")
        why = _difference(_comparable(first), _comparable(second), "run")
        if why:
            raise fail("seeded", f"two runs of seed {seed} differ: {why}; draw every random number with run.rng")
        done.append("seeded")
        meta = (checkpoint.read(first.run.dir) or {}).get("meta", {})
        if not meta.get("resumable", True):
            raise fail("stateless", "its attributes changed during the run, and it implements no "
                       f"ganbench_state_dict: {'; '.join(meta['not_resumable_because'])}; implement the pair "
                       "(ganbench.plain_state), or list caches in the class's `transient` tuple")
        done.append("stateless")
        if resume and steps >= 2:
            resumed = attempt("resumes", _resume, spec, setup, entry, Path(tmp) / "c")
            why = _difference(_comparable(first), _comparable(resumed), "run")
            if why:
                raise fail("resumes", f"a run resumed at step {max(1, steps // 2)} ends otherwise: {why}")
            done.append("resumes")
    return Checked(entry.kind, entry.name, setup, tuple(done))


def _check_problem(registry: Registry, entry: PluginEntry, params: dict[str, Any] | None, data: str,
                   steps: int, seed: int, settings: dict[str, Any] | None) -> str | None:
    """A doctor check's diagnose() on the tiny setup's architecture × dataset returns a
    ganbench.CheckResult, or None where it does not apply."""
    from ganbench.doctor import CheckResult, CheckSubject

    _, spec = _choose(registry, None, None, data, steps, seed, settings)
    check = entry.cls(parse(getattr(entry.cls, "params", None), dict(params or {}), "params")) \
        if getattr(entry.cls, "params", None) is not None else entry.cls()
    with tempfile.TemporaryDirectory(prefix="ganbench-check-") as tmp:
        subject = CheckSubject("tiny", spec, [spec], CPU, Path(tmp))
        try:
            result = check.diagnose(subject)
        except Exception as exc:  # a bug in the check: named here
            return f"diagnose raised {type(exc).__name__}: {exc}"
    if result is not None and not isinstance(result, CheckResult):
        return f"diagnose returned {result!r}, not a ganbench.CheckResult or None"
    return None


def _params_problem(cls: type) -> str | None:
    params = getattr(cls, "params", None)
    if params is None:
        return None
    if not dataclasses.is_dataclass(params) or not params.__dataclass_params__.frozen:
        return f"params = {params!r} is not a frozen dataclass (@dataclass(frozen=True))"
    missing = [f.name for f in dataclasses.fields(params)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        return f"field {missing[0]} has no default: a suite that names the plugin alone must work"
    defaults = params()
    try:  # the defaults as if a suite wrote them out, so each is held to its own field's type
        parse(params, {f.name: getattr(defaults, f.name) for f in dataclasses.fields(params)}, "params")
    except UsageError as exc:
        return f"a default does not validate: {exc}"
    for info in describe(params):
        if not info.help:
            return f"field {info.name} has no description: end its line with a `# comment`"
        refused = False
        for bad in BAD_VALUES:
            try:
                parse(params, {info.name: bad}, "params")
            except UsageError:
                refused = True
                break
        if not refused:
            return (f"field {info.name} ({info.type}) accepts {BAD_VALUES}: give it a type "
                    "(float, ganbench.PositiveInt, typing.Literal[...], ...)")
    return None


def _hooks_problem(entry: PluginEntry) -> str | None:
    names = {a for a in dir(entry.cls) if a in HOOK_NAMES}
    if entry.kind == "trick":
        if not names and getattr(entry.cls, "config_defaults", None) is None:
            return "it implements no hook and recommends no settings (config_defaults): it changes nothing"
        return None
    missing = [h for h in REQUIRED[entry.kind]
               if not (h in names if h.startswith("ganbench_") else callable(getattr(entry.cls, h, None)))]
    if missing:
        return f"a {entry.kind} implements {', '.join(REQUIRED[entry.kind])}; missing: {', '.join(missing)}"
    return None


def _kind_problem(entry: PluginEntry, result: PluginRun) -> str | None:
    run = result.run
    assert run.models is not None
    n = 5
    if entry.kind == "architecture":
        G, D = run.models.generator, run.models.discriminator
        G.eval(), D.eval()
        with torch.no_grad():
            z = run.hook.ganbench_sample_latent(run=run, n=n)
            x = G(z)
            if tuple(x.shape) != (n, *run.data.shape):
                return f"G maps {tuple(z.shape)} latents to {tuple(x.shape)}, not {(n, *run.data.shape)}"
            scores = D(x)
            if tuple(scores.shape) != (n,):
                return f"D maps {tuple(x.shape)} samples to {tuple(scores.shape)} scores, not ({n},)"
    elif entry.kind == "latent":
        z = run.hook.ganbench_sample_latent(run=run, n=n)
        want = (n, run.settings.z_dim)
        if tuple(z.shape) != want or not z.is_floating_point() or z.device.type != run.device.type:
            return (f"ganbench_sample_latent(n={n}) gave {z.dtype} {tuple(z.shape)} on {z.device}, "
                    f"not floats {want} on cpu")
        if not torch.isfinite(z).all():
            return "ganbench_sample_latent gave non-finite values"
    elif entry.kind == "dataset":
        return _dataset_problem(run.settings.dataset)
    elif entry.kind == "metric":
        return _metric_problem(entry, result)
    elif entry.kind == "detector":
        kinds = getattr(entry.cls, "kinds", None)
        if not isinstance(kinds, dict) or not kinds or not all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in kinds.items()):
            return f'kinds = {kinds!r}: declare the incident kinds it raises, {{"my-kind": "stopped"}}'
    return None


def _dataset_problem(choice: PluginChoice) -> str | None:
    plugin = choice.instantiate()
    info, data = plugin.info(), plugin.load(CPU)
    if data.info != info:
        return f"load() gives {data.info}, but info() says {info}"
    samples = []
    for _ in range(2):
        x, y = data.sample(5, torch.Generator().manual_seed(0))
        samples.append((x, y))
    x, y = samples[0]
    if tuple(x.shape) != (5, *info.shape):
        return f"sample(5, rng) gave samples of shape {tuple(x.shape)}, not {(5, *info.shape)}"
    if not torch.isfinite(x).all():
        return "sample(5, rng) gave non-finite samples"
    if info.kind == "image" and (x.min() < -1 or x.max() > 1):
        return f"image samples lie in [{float(x.min()):.3g}, {float(x.max()):.3g}], not [-1, 1]"
    if (y is None) != (info.num_classes is None) or (y is not None and tuple(y.shape) != (5,)):
        return f"sample gave labels {None if y is None else tuple(y.shape)} for num_classes = {info.num_classes}"
    if not torch.equal(x, samples[1][0]) or (y is not None and not torch.equal(y, samples[1][1])):
        return "sample(n, rng) differs for two generators of one seed: draw with `rng`"
    digest = data.content_hash()
    if not isinstance(digest, str) or not digest or digest != plugin.load(CPU).content_hash():
        return f"content_hash() = {digest!r}: give a string that is the same for the same data"
    return None


def _metric_problem(entry: PluginEntry, result: PluginRun) -> str | None:
    run = result.run
    generator = run.hook.ganbench_eval_generator(run=run)
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        found = run.hook.ganbench_evaluate(run=run, step=run.done, generator=generator)
    generator.train(was_training)
    ours = [v for v in found if isinstance(v, MetricValues) and v.metric == entry.name]
    if len(ours) != 1:
        return (f"ganbench_evaluate at the last step returned {found!r}, not one "
                f"MetricValues(metric={entry.name!r}, ...)")
    (values,) = ours
    bad = {k: v for k, v in values.values.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
    if not values.values or bad:
        return f"values = {values.values!r}: give finite numbers (not {bad})"
    last = result.evals[-1]
    missing = [k for k in values.values if k not in last]
    if missing:
        return f"the eval record lacks {', '.join(missing)}"
    wrong = {k: v for k, v in values.better.items() if k not in values.values or v not in ("min", "max")}
    if wrong:
        return f"better = {values.better!r}: each key one of its values, each value \"min\" or \"max\" (not {wrong})"
    try:
        json.dumps(values.provenance)
    except TypeError as exc:
        return f"provenance is not plain JSON: {exc}"
    return None


def _comparable(result: PluginRun) -> dict[str, Any]:
    """What two runs of one seed must share: records without wall-clock times, and the final
    checkpoint's weights, optimizer, random and plugin states."""
    state = checkpoint.read(result.run.dir) or {}
    return {
        "status": (result.status, result.reason),
        "records": [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in result.records],
        "evals": result.evals,
        "incidents": result.incidents,
        "loop": {k: v for k, v in (state.get("loop") or {}).items() if k != "elapsed_s"},
        **{k: state.get(k) for k in ("models", "eval_generator", "optimizers", "updates", "rng", "extras")},
        # A logger's state names things outside the run (an MLflow run id, fresh for every run).
        "plugins": {k: v for k, v in (state.get("plugins") or {}).items() if not k.startswith("logger:")},
    }


def _difference(a: Any, b: Any, where: str) -> str | None:
    """Where `a` and `b` first differ (tensors bit for bit, NaN equal to NaN), or None."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        both = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        if not both or a.dtype != b.dtype or a.shape != b.shape:
            return f"{where} differs in type or shape"
        same = (torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
                if a.is_floating_point() else torch.equal(a, b))
        return None if same else f"{where} differs"
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            if key not in a or key not in b:
                return f"{where}.{key} is in one run only"
            found = _difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where} has {len(a)} entries against {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"
