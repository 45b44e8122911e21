"""Plugin discovery and the name -> class table.

Plugin modules come from the `ganbench` entry-point group (the built-ins use it too: no back door)
and from Python files named in a suite. Their registration hooks return classes; the core owns the
table, and a name defined twice within a kind is an error that names both sources.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from ganbench import hookspecs
from ganbench.errors import UsageError, did_you_mean
from ganbench.params import ParamInfo, describe

ENTRY_POINT_GROUP = "ganbench"
# kind -> registration hook; the plural is only used in messages.
KINDS = {
    "architecture": "ganbench_register_architectures",
    "loss": "ganbench_register_losses",
    "trick": "ganbench_register_tricks",
    "latent": "ganbench_register_latents",
    "dataset": "ganbench_register_datasets",
    "metric": "ganbench_register_metrics",
    "detector": "ganbench_register_detectors",
    "check": "ganbench_register_checks",
    "logger": "ganbench_register_loggers",
    "executor": "ganbench_register_executors",
}
# "(Metz et al. 2017, "Unrolled ...")": a parenthesis with a four-digit year, as STYLE.md asks each
# plugin module's docstring to open with.
CITATION = re.compile(r"\(([^()]*\b(?:19|20)\d\d\b[^()]*)\)")
BARE_CITATION = re.compile(r"\b([A-Z][\w-]+(?: et al\.| & [A-Z][\w-]+)? (?:19|20)\d\d)\b")
# What a loss's D outputs mean (its `scores`), which detectors and tricks read to judge D.
SCORE_KINDS = {
    "logit": "D outputs logits; accuracy is real > 0, fake < 0 (bce, minimax)",
    "least-squares": "D regresses to fixed targets (lsgan)",
    "margin": "D aims past fixed margins (hinge)",
    "critic": "unbounded critic values with no saturation point (wgan, wgan-gp)",
    "relativistic": "logits of real against fake scores (RaGAN); the raw scores' offset is free",
    "other": "none of these: detectors that judge D by its scores leave the run alone",
}
HOOK_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("ganbench_"))


@dataclass(frozen=True)
class PluginEntry:
    """One plugin class in the table."""

    kind: str
    name: str
    cls: type
    source: str  # "ganbench 0.1.0 (ganbench_plugins.tricks.ema)" or "file /abs/my_trick.py"
    version: str | None = None  # its distribution's version; None for a plugin file

    @property
    def params(self) -> list[ParamInfo]:
        return describe(getattr(self.cls, "params", None))

    @property
    def config_defaults(self) -> dict[str, Any]:
        """The run settings this plugin recommends, at its default parameters."""
        suggest = getattr(self.cls, "config_defaults", None)
        params = getattr(self.cls, "params", None)
        return dict(suggest(params() if params else None) or {}) if suggest else {}

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def paper(self) -> str:
        """The source the plugin cites: its class's `paper` attribute, else the module docstring's
        first parenthesis holding a year, else its first "Author et al. YEAR", else ""."""
        declared = getattr(self.cls, "paper", None)
        if isinstance(declared, str):
            return declared
        module = sys.modules.get(self.cls.__module__)
        doc = " ".join(((module.__doc__ if module else None) or "").split())
        match = CITATION.search(doc) or BARE_CITATION.search(doc)
        return match.group(1) if match else ""


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_file(path: Path) -> ModuleType:
    """Import a plugin file under a module name derived from its path, so two files may share a stem."""
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    mod_name = f"ganbench_file_plugins.{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


class Registry:
    """Every plugin class that is installed or named by a suite, by kind and name."""

    def __init__(self, files: tuple[Path, ...] | list[Path] = ()) -> None:
        self.pm = new_plugin_manager()
        try:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except pluggy.PluginValidationError as exc:
            where = f"plugin module {getattr(exc.plugin, '__name__', exc.plugin)}"
            raise validation_error(exc, self.pm, where) from None
        sources: dict[int, str] = {}
        versions: dict[int, str] = {}
        for plugin, dist in self.pm.list_plugin_distinfo():
            sources[id(plugin)] = f"{dist.project_name} {dist.version} ({plugin.__name__})"
            versions[id(plugin)] = dist.version
        for path in files:
            module = load_file(Path(path))
            if self.pm.is_registered(module):
                continue
            sources[id(module)] = f"file {Path(path).resolve()}"
            try:
                self.pm.register(module, name=f"file:{Path(path).resolve()}")
            except pluggy.PluginValidationError as exc:
                raise validation_error(exc, self.pm, sources[id(module)]) from None
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise validation_error(exc, self.pm, sources.get(id(exc.plugin), str(exc.plugin))) from None
        self.table: dict[str, dict[str, PluginEntry]] = {kind: {} for kind in KINDS}
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                source = sources.get(id(impl.plugin), impl.plugin_name)
                for cls in impl.function() or []:
                    self._add(PluginEntry(kind, _plugin_name(cls, source), cls, source, versions.get(id(impl.plugin))))

    def _add(self, entry: PluginEntry) -> None:
        table = self.table[entry.kind]
        if entry.name in table and table[entry.name].cls is not entry.cls:
            raise UsageError(
                f'duplicate {entry.kind} name "{entry.name}": defined by {table[entry.name].source} '
                f"and by {entry.source}; rename one of them"
            )
        _check_hooks(entry)
        if entry.kind == "loss":
            _check_loss(entry)
        table[entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self.table[kind])

    def get(self, kind: str, name: str, where: str) -> PluginEntry:
        """The entry for `name`, or a UsageError at `where` listing the names that exist."""
        try:
            return self.table[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none installed"
            raise UsageError(
                f'{where} = "{name}": unknown {kind}{did_you_mean(name, self.table[kind])}; '
                f"available: {available}"
            ) from None

    def entries(self) -> list[PluginEntry]:
        return [e for kind in KINDS for _, e in sorted(self.table[kind].items())]


def _plugin_name(cls: Any, source: str) -> str:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise UsageError(f"{source}: plugin class {cls!r} needs a `name` string attribute")
    return name


def _check_loss(entry: PluginEntry) -> None:
    """A loss says what D's outputs mean and whether it reads Targets: detectors and the label
    tricks act on both, so a missing or misspelt value is refused, not read as a default."""
    where = f'{entry.source}: loss "{entry.name}"'
    uses_targets = getattr(entry.cls, "uses_targets", None)
    if not isinstance(uses_targets, bool):
        raise UsageError(f"{where}: uses_targets = {uses_targets!r}: set it to True when the loss reads "
                         "ganbench.Targets (label smoothing and noisy labels then apply), else False")
    scores = getattr(entry.cls, "scores", None)
    if scores not in SCORE_KINDS:
        hint = did_you_mean(scores, SCORE_KINDS) if isinstance(scores, str) else ""
        raise UsageError(f"{where}: scores = {scores!r}: unknown kind{hint}; allowed: {', '.join(SCORE_KINDS)}")


def _check_hooks(entry: PluginEntry) -> None:
    """Refuse misspelt hook names and wrong argument names now, not at the first training step."""
    for attr in dir(entry.cls):
        if not attr.startswith("ganbench_"):
            continue
        if attr not in HOOK_NAMES:
            raise UsageError(
                f"{entry.source}: {entry.kind} \"{entry.name}\" defines {attr}, which is not a "
                f"ganbench hook{did_you_mean(attr, HOOK_NAMES)}"
            )
        if getattr(getattr(entry.cls, attr), f"{hookspecs.PROJECT}_impl", None) is None:
            raise UsageError(
                f"{entry.source}: {entry.kind} \"{entry.name}\" defines {attr} without "
                "@ganbench.hookimpl, so it would never be called"
            )
    # Register a bare instance (no __init__) on a scratch manager: pluggy checks argument names.
    probe = object.__new__(entry.cls)
    pm = new_plugin_manager()
    try:
        pm.register(probe)
    except pluggy.PluginValidationError as exc:
        raise validation_error(exc, pm, f'{entry.source}: {entry.kind} "{entry.name}"') from None


def validation_error(exc: pluggy.PluginValidationError, pm: pluggy.PluginManager, where: str) -> UsageError:
    """Pluggy's refusal as one line: pluggy names the plugin by its id() over several lines, and
    does not say which argument was meant. `where` names the plugin (its source, kind and name)."""
    plugin = exc.plugin
    for attr in sorted(dir(plugin)):
        function = getattr(plugin, attr, None) if attr.startswith("ganbench_") else None
        if getattr(function, f"{hookspecs.PROJECT}_impl", None) is None:
            continue
        at = _location(function)
        if attr not in HOOK_NAMES:
            return UsageError(f"{where}: {attr} ({at}) is not a ganbench hook{did_you_mean(attr, HOOK_NAMES)}")
        spec = getattr(pm.hook, attr).spec
        passed = [*spec.argnames, *spec.kwargnames]
        # As pluggy counts them: arguments without a default must be among the hook's arguments.
        wanted = [p.name for p in inspect.signature(function).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
        unknown = [f'"{name}"{did_you_mean(name, passed)}' for name in wanted if name not in passed]
        if unknown:
            return UsageError(f"{where}: {attr} ({at}) takes {', '.join(unknown)}, which the hook does not pass; "
                              f"{attr} passes: {', '.join(passed)}")
    return UsageError(f"{where}: {' '.join(str(exc).split())}")  # another refusal: pluggy's words, on one line


def _location(function: Any) -> str:
    """"/abs/my_trick.py:23": where a function is defined, or "?" for one without Python source."""
    function = inspect.unwrap(getattr(function, "__func__", function))
    code = getattr(function, "__code__", None)
    if code is None:
        return "?"
    line = code.co_firstlineno  # the first decorator's line: the `def` is the one to point at
    try:
        source, first = inspect.getsourcelines(function)
        line = first + next(i for i, text in enumerate(source) if text.lstrip().startswith(("def ", "async def ")))
    except (OSError, TypeError, StopIteration):
        pass
    return f"{code.co_filename}:{line}"


def run_plugin_manager(plugins: list[tuple[str, Any]], diagnostics: bool = True) -> pluggy.PluginManager:
    """A fresh manager for one run. `plugins` is [(name, object)] in call order (first is called first).
    The core's own plugins come with it: its defaults (called last) and, unless turned off, its
    diagnostics (tryfirst, so they see gradients and batches before any trick changes them)."""
    from ganbench.defaults import CoreDefaults
    from ganbench.diagnostics import Diagnostics

    pm = new_plugin_manager()
    pm.register(CoreDefaults(), name="core")
    if diagnostics:
        pm.register(Diagnostics(), name="core:diagnostics")
    # pluggy calls the last-registered implementation first, so register in reverse call order.
    for name, obj in reversed(plugins):
        pm.register(obj, name=name)
    pm.check_pending()
    return pm
