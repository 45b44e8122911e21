"""Full checkpoints of a run, and resuming from them bit-identically.

A checkpoint (`runs/<id>/checkpoints/last.pt`, written atomically every `checkpoint_every` steps,
at the last step and when the run is interrupted) holds everything the next step depends on:
G and D, both optimizers, every random stream (the run's generator, torch's global one, CUDA's,
Python's and numpy's), the trainer's loop state (counters, the device accumulators of the open
log interval, the fixed evaluation noise), `run.updates`, the sizes of metrics.jsonl and
incidents.jsonl at that step, and each plugin's own state from `ganbench_state_dict`.

It is loaded with `torch.load(weights_only=True)`, so a checkpoint file cannot run code, and
refused in one line when its run id, ganbench version or plugin code hash differ from the run's.

A plugin that keeps state must implement the `ganbench_state_dict` / `ganbench_load_state_dict`
pair. A plugin that implements neither is assumed stateless, and checked: at every checkpoint its
attributes are compared with what they were when the run was set up, and a plugin that changed
marks the checkpoint `resumable: false`, with its name. Such a run restarts from step 0, saying why.
Attributes a plugin lists in `transient` (caches it rebuilds on demand) are not compared.
"""
from __future__ import annotations

import hashlib
import inspect
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ganbench.errors import UsageError
from ganbench.hookspecs import hookimpl
from ganbench.rundir import write_atomic

FORMAT = 1
FILE = Path("checkpoints") / "last.pt"


@dataclass
class LoopState:
    """The trainer's own state between steps. Tensors stay on the run's device."""

    done: int  # steps finished
    images_seen: int
    totals: Tensor  # TRAIN_KEYS summed since the last log record
    step_counter: Tensor  # steps counted on the device (for the first non-finite step)
    first_bad: Tensor  # first step with a non-finite loss, or -1
    first_bad_keys: Tensor  # which losses it was
    last_log_step: int
    fixed_z: Tensor  # the evaluation noise, the same at every eval point
    fixed_labels: Tensor | None
    elapsed_s: float = 0.0  # training wall time before this process (the records' elapsed_s goes on from it)
    eval_pending: bool = False  # interrupted during the eval point at `done`: redo it first


@dataclass
class Loaded:
    """A checkpoint read back: the loop state to continue from, and what it was written with."""

    loop: LoopState
    meta: dict[str, Any]
    state: dict[str, Any] = field(repr=False)


def path_of(run_dir: Path) -> Path:
    return run_dir / FILE


# ---- identity -------------------------------------------------------------------------------------


def plugin_code(settings: Any) -> dict[str, dict[str, Any]]:
    """What identifies the code of every plugin the run uses, by "kind:name": where it came from
    (its distribution and version, or its file), its source file and that file's sha256. env.json
    records it; a completed run whose plugins' files changed since is trained again."""
    choices = [settings.dataset, settings.architecture, settings.loss, settings.latent,
               *settings.tricks, *settings.metrics, *settings.detectors]
    registry = getattr(settings, "registry", None)
    code = {}
    for choice in choices:
        entry = registry.table[choice.kind].get(choice.name) if registry is not None else None
        file = Path(inspect.getsourcefile(choice.cls) or "")
        code[f"{choice.kind}:{choice.name}"] = {
            "source": entry.source if entry else None, "version": entry.version if entry else None,
            "file": str(file), "sha256": _file_hash(file)}
    return code


def _file_hash(file: Path) -> str:
    return hashlib.sha256(file.read_bytes() if file.is_file() else b"").hexdigest()[:16]


def code_changes(recorded: Any, current: dict[str, dict[str, Any]]) -> list[str]:
    """The plugins whose code differs between env.json's `plugins` and now, as readable lines;
    [] when nothing changed, and for a run recorded before env.json kept plugin code (kept as it is)."""
    if not isinstance(recorded, dict):
        return []
    changed = []
    for key, now in current.items():
        then = recorded.get(key)
        if not isinstance(then, dict):
            changed.append(f"{key} was not used by the finished run")
        elif then.get("sha256") != now["sha256"]:
            changed.append(f"{key} ({Path(now['file']).name} {then.get('sha256')} -> {now['sha256']})")
        elif then.get("version") != now["version"]:
            changed.append(f"{key} (version {then.get('version')} -> {now['version']})")
    return changed


def plugin_code_hash(settings: Any) -> str:
    """sha256 of the source files of every plugin class the run uses, in a stable order."""
    files = sorted({Path(entry["file"]) for entry in plugin_code(settings).values()})
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes() if file.is_file() else b"")
    return digest.hexdigest()[:16]


def identity(run_id: str, settings: Any) -> dict[str, str]:
    from ganbench import __version__

    return {"run_id": run_id, "ganbench": __version__, "plugin_code": plugin_code_hash(settings)}


def refusal(meta: dict[str, Any], expected: dict[str, str]) -> str | None:
    """Why a checkpoint written with `meta` cannot continue the run `expected` describes, or None."""
    names = {"run_id": "run id", "ganbench": "ganbench version", "plugin_code": "plugin code hash"}
    for key, label in names.items():
        if meta.get(key) != expected[key]:
            return f"{label} is {meta.get(key)!r}, this run's is {expected[key]!r}"
    return None


# ---- random streams -------------------------------------------------------------------------------


def rng_state(run: Any) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "run": run.rng.get_state(),
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's tuple holds an ndarray, which weights_only loading refuses: store it as a list
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_state(run: Any, state: dict[str, Any]) -> None:
    run.rng.set_state(state["run"])
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---- plugin state ---------------------------------------------------------------------------------

SAFE_LEAVES = (bool, int, float, str, type(None), Tensor, torch.Size, torch.dtype)


def check_safe(value: Any, where: str) -> None:
    """Refuse what `torch.load(weights_only=True)` could not read back, naming the key."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            check_safe(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_safe(item, f"{where}[{i}]")
    elif not isinstance(value, SAFE_LEAVES):
        raise TypeError(f"{where} is a {type(value).__name__}; a plugin's state may hold only tensors, numbers, "
                        "strings, None, and lists, tuples and dicts of them")


def plugin_states(run: Any) -> dict[str, Any]:
    """{plugin name: its ganbench_state_dict()} for every plugin of the run that implements it."""
    states = {}
    for impl in run.hook.ganbench_state_dict.get_hookimpls():
        state = impl.function(**_args(impl, run=run))
        if state is not None:
            check_safe(state, f"the state of plugin {impl.plugin_name}")
            states[impl.plugin_name] = state
    return states


def load_plugin_states(run: Any, states: dict[str, Any]) -> None:
    impls = {impl.plugin_name: impl for impl in run.hook.ganbench_load_state_dict.get_hookimpls()}
    for name, state in states.items():
        if name not in impls and name.startswith("logger:"):
            continue  # a logger left out on resume (no --logger this time): its place in a tracker is all it kept
        if name not in impls:
            raise RuntimeError(f"the checkpoint holds state for plugin {name}, which has no ganbench_load_state_dict")
        impls[name].function(**_args(impls[name], run=run, state=state))


def _args(impl: Any, **available: Any) -> dict[str, Any]:
    return {name: available[name] for name in impl.argnames}


def plain_state(obj: Any, exclude: tuple[str, ...] = ("p",)) -> dict[str, Any]:
    """An object's attributes as plain data, for `ganbench_state_dict`: numbers, strings, tensors,
    and lists, sets and dicts of them; nested helper objects (ganbench.detection's Sustained and
    Baseline) become dicts of their own attributes. `exclude` names attributes not saved."""
    return {k: _plain(v) for k, v in vars(obj).items() if k not in exclude}


def load_plain_state(obj: Any, state: dict[str, Any]) -> None:
    """The inverse of `plain_state`: set each attribute back, into nested helper objects in place."""
    for key, value in state.items():
        setattr(obj, key, _unplain(getattr(obj, key, None), value))


class PlainState:
    """Inherit this to save every attribute but `p` (the params) in checkpoints and restore it on
    resume: the two state hooks, through `plain_state` and `load_plain_state`. For plugins whose
    state is plain data and helper objects (the built-in detectors' baselines, streaks and bests)."""

    @hookimpl
    def ganbench_state_dict(self) -> dict[str, Any]:
        return plain_state(self)

    @hookimpl
    def ganbench_load_state_dict(self, state: dict[str, Any]) -> None:
        load_plain_state(self, state)


def _plain(value: Any) -> Any:
    if isinstance(value, SAFE_LEAVES):
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (set, frozenset)):  # weights-only loading has no sets: a list, made a set again on load
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
        return {k: _plain(v) for k, v in vars(value).items()}
    raise TypeError(f"cannot save a {type(value).__name__} as plain state")


def _unplain(current: Any, value: Any) -> Any:
    if isinstance(current, (set, frozenset)) and isinstance(value, list):
        return type(current)(value)
    if isinstance(current, dict) and isinstance(value, dict):
        return {k: _unplain(current.get(k), v) for k, v in value.items()}
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)) and len(current) == len(value):
        return type(current)(_unplain(c, v) for c, v in zip(current, value))
    if (current is not None and hasattr(current, "__dict__") and not isinstance(current, (nn.Module, type))
            and isinstance(value, dict)):
        load_plain_state(current, value)
        return current
    return value


# ---- the stateless check ---------------------------------------------------------------------------


class StatelessCheck:
    """Fingerprints of the plugins that implement no state hooks, taken when the run is set up."""

    def __init__(self, run: Any) -> None:
        stateful = {impl.plugin_name for impl in run.hook.ganbench_state_dict.get_hookimpls()}
        self.skip = {id(m) for net in (run.models.generator, run.models.discriminator) for m in net.modules()}
        self.plugins = {name: plugin for name, plugin in run.plugins.items()
                        if name not in stateful and not name.startswith("core")}
        self.before = {name: self.fingerprint(plugin) for name, plugin in self.plugins.items()}

    def fingerprint(self, plugin: Any) -> dict[str, Any]:
        transient = set(getattr(plugin, "transient", ()))
        return {k: _fingerprint(v, self.skip) for k, v in vars(plugin).items() if k not in transient}

    def changed(self) -> list[str]:
        """'trick:foo (attributes a, b)' for each plugin whose attributes changed since set-up."""
        found = []
        for name, plugin in self.plugins.items():
            now, before = self.fingerprint(plugin), self.before[name]
            keys = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
            if keys:
                found.append(f"{name} (attributes {', '.join(keys)})")
        return found


def _fingerprint(value: Any, skip: set[int], depth: int = 0) -> Any:
    if depth > 5:
        return ("deep", id(value))
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, Tensor):
        return ("tensor", id(value), value._version)
    if isinstance(value, nn.Module):
        if id(value) in skip:  # part of G or D, which the checkpoint holds
            return ("module", id(value))
        return ("module", id(value), tuple((k, id(t), t._version) for k, t in value.state_dict(keep_vars=True).items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_fingerprint(v, skip, depth + 1) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _fingerprint(v, skip, depth + 1)) for k, v in value.items()))
    if hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        return ("object", id(value), tuple((k, _fingerprint(v, skip, depth + 1)) for k, v in vars(value).items()))
    return ("other", id(value))


# ---- save and load --------------------------------------------------------------------------------


def save(run: Any, loop: LoopState, ident: dict[str, str], not_resumable: list[str]) -> None:
    """Write the run's full state atomically; the previous checkpoint stays until this one is whole."""
    assert run.models is not None and run.optimizers is not None
    eval_generator = run.hook.ganbench_eval_generator(run=run)
    state = {
        "format": FORMAT,
        "meta": {**ident, "step": loop.done, "device": run.device.type, "resumable": not not_resumable,
                 "not_resumable_because": not_resumable},
        "loop": {f.name: getattr(loop, f.name) for f in fields(LoopState)},
        "models": {"generator": run.models.generator.state_dict(),
                   "discriminator": run.models.discriminator.state_dict()},
        # The generator that is evaluated (EMA's copy, for instance) is also saved on its own, so
        # a finished run's samples can be drawn from the checkpoint alone.
        "eval_generator": None if eval_generator is run.models.generator else eval_generator.state_dict(),
        "optimizers": {"generator": run.optimizers.generator.state_dict(),
                       "discriminator": run.optimizers.discriminator.state_dict()},
        "updates": {"d": run.updates.d, "g": run.updates.g},
        "rng": rng_state(run),
        "files": {name: _size(run.dir / name) for name in ("metrics.jsonl", "incidents.jsonl")},
        "extras": {"metric_better": dict(run.extras.get("metric_better", {}))},
        "plugins": plugin_states(run),
    }
    write_atomic(path_of(run.dir), lambda f: torch.save(state, f))


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def read(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint's content, loaded weights-only (no code can run), or None when there is none."""
    path = path_of(run_dir)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: refused, never unpickled
        raise UsageError(f"{path}: not a readable ganbench checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); pass --restart to train the run from step 0") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("meta"), dict):
        raise UsageError(f"{path}: not a ganbench checkpoint of format {FORMAT}; pass --restart to train the run from step 0")
    return state


def restore(run: Any, state: dict[str, Any]) -> LoopState:
    """Put a checkpoint's state into a freshly built run; cut the run's logs back to that step."""
    assert run.models is not None and run.optimizers is not None
    device = run.device
    run.models.generator.load_state_dict(state["models"]["generator"])
    run.models.discriminator.load_state_dict(state["models"]["discriminator"])
    run.optimizers.generator.load_state_dict(state["optimizers"]["generator"])
    run.optimizers.discriminator.load_state_dict(state["optimizers"]["discriminator"])
    run.updates.d, run.updates.g = state["updates"]["d"], state["updates"]["g"]
    run.extras.setdefault("metric_better", {}).update(state["extras"]["metric_better"])
    load_plugin_states(run, state["plugins"])
    load_rng_state(run, state["rng"])
    for name, size in state["files"].items():
        _truncate(run.dir / name, size)
    loop = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in state["loop"].items()}
    loop = LoopState(**loop)
    for grid in (run.dir / "samples").glob("step-*.png"):  # grids drawn after the checkpoint are redrawn
        if _grid_step(grid) > loop.done or (loop.eval_pending and _grid_step(grid) == loop.done):
            grid.unlink()
    return loop


def _grid_step(path: Path) -> int:
    try:
        return int(path.stem.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _truncate(path: Path, size: int) -> None:
    """Cut a log back to `size` bytes: the records written after the checkpoint are written again."""
    have = _size(path)
    if have < size:
        raise RuntimeError(f"{path} has {have} bytes, fewer than the {size} the checkpoint recorded: "
                           "the log was damaged; pass --restart to train the run from step 0")
    if have > size:
        with open(path, "r+b") as f:
            f.truncate(size)


# ---- whether a run resumes ------------------------------------------------------------------------

# Statuses whose run did not reach its end: they continue from their checkpoint. A run that
# completed is skipped; one that diverged, collapsed or was stopped by a policy is a finding and
# is trained again from step 0.
RESUMABLE = ("interrupted", "running", "failed")


@dataclass
class Plan:
    """How a run starts: from `state` (a checkpoint's content), or from step 0 (`state` None)."""

    state: dict[str, Any] | None
    status: dict[str, Any]  # the run's status.json as found
    note: str | None = None  # why a run that has a checkpoint starts from step 0 all the same


def plan(spec: Any, run_dir: Path, restart: bool = False, device: Any = None) -> Plan:
    """Decide how `spec` starts in `run_dir` (on `device`). A checkpoint of another run, ganbench
    version, plugin code or device type is a UsageError (one line, before anything trains): resume
    it with what wrote it, or pass --restart. Any machine may resume a run from its folder."""
    from ganbench.rundir import read_status

    status = read_status(run_dir)
    status = status if isinstance(status, dict) else {}
    path = path_of(run_dir)
    if not path.is_file():
        return Plan(None, status)
    if restart:
        return Plan(None, status, "--restart: trained from step 0, its checkpoint discarded")
    if status.get("status") not in RESUMABLE:
        return Plan(None, status)
    state = read(run_dir)
    assert state is not None
    meta = state["meta"]
    why = refusal(meta, identity(spec.run_id, spec.settings))
    if why:
        raise UsageError(f"{path}: cannot resume {spec.config} seed {spec.seed} from step {meta.get('step')}: "
                         f"the checkpoint's {why}; resume it with the code that wrote it, or pass --restart "
                         "to train it again from step 0")
    if device is not None and meta.get("device") != torch.device(device).type:
        raise UsageError(f"{path}: cannot resume {spec.config} seed {spec.seed} from step {meta.get('step')}: it was "
                         f"written on {meta.get('device')} and would continue on {torch.device(device).type}, whose "
                         "random streams and kernels differ; resume it there, or pass --restart to train it again "
                         "from step 0")
    if not meta.get("resumable", False):
        because = "; ".join(meta.get("not_resumable_because") or ["unknown"])
        return Plan(None, status, f"trained from step 0: its checkpoint at step {meta.get('step')} could not be "
                                  f"resumed, because these plugins keep state without ganbench_state_dict: {because}")
    return Plan(state, status)
