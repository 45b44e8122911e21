"""Read a TOML suite, validate all of it, and expand it into runs.

Every error a suite can hold is raised here, as a one-line UsageError naming the file and the key,
before any training starts and before any run directory exists.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganbench.data import DataInfo
from ganbench.errors import UsageError, did_you_mean
from ganbench.params import as_dict, format_value, parse
from ganbench.registry import Registry
from ganbench.resolve import (
    Layer,
    builtin_layer,
    empty_layer,
    flat_key_known,
    flatten,
    merge,
    plugin_defaults_layer,
    PATH_PARAMS,
    plugin_spec,
    settings_from,
)
from ganbench.settings import (CORE_KEYS, SPEED_KEYS, CoreSettings, OptimizerSettings, PluginChoice, RunSettings,
                               speed_changes)

TOP_KEYS = ("suite", "dataset", "defaults", "scales", "configs", "search", "executor")
SCALES = ("smoke", "default", "paper")  # every suite has these; it may declare more under [scales.<name>]
SCALE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# A scale shortens or lengthens a run; it may set only these.
SCALE_KEYS = ("steps", "log_every", "eval_every", "batch_size", "grid_size", "eval_samples", "real_samples",
              "checkpoint_every")
# Settings that change how a run is kept, not what it computes: not part of its identity.
NOT_IDENTITY = ("checkpoint_every",)
# Sample counts follow the usual protocol: 50k generated samples for paper-scale FID (Heusel et al.
# 2017), 10k as the common cheaper setting, and a few hundred at smoke scale, where FID is biased
# upwards and only indicative (KID, reported beside it, is unbiased).
BUILTIN_SCALES: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 200, "log_every": 10, "eval_every": 100, "eval_samples": 256, "real_samples": 500},
    "default": {},  # what the suite says; eval_samples and real_samples default to 10,000
    "paper": {"eval_samples": 50_000, "real_samples": 50_000},
}


@dataclass(frozen=True)
class SuiteHeader:
    """The [suite] table."""

    name: str  # short name; reports go to reports/<name>/ by default
    question: str  # the question this suite answers, printed at the top of its report
    seeds: list[int] = field(default_factory=lambda: [0])  # every config runs once per seed
    baseline: str = ""  # the config others are compared against (default: the first)
    plugins: list[str] = field(default_factory=list)  # plugin files, relative to the suite file
    expects: str = ""  # what the literature expects, with its source
    primary: str | None = None  # the metric key the report ranks by (default: FID, or the next built-in one recorded)
    plot: list[str] = field(default_factory=list)  # train-record keys the report adds to its diagnostics figure


@dataclass(frozen=True)
class RunSpec:
    """One training run: a configuration at a scale, with a seed."""

    suite: str
    suite_file: Path
    config: str
    seed: int
    scale: str
    settings: RunSettings
    search: dict[str, Any] | None = None  # a search trial's study, number and params (config.json only, not the id)

    def resolved(self, identity: bool = False) -> dict[str, Any]:
        """Every value the run uses, as JSON: the content of config.json. With `identity`, what the
        run id hashes: without the plugin parameters marked `REPORT_ONLY`."""
        s = self.settings

        def choice(c: PluginChoice) -> dict[str, Any]:
            return {"name": c.name, "params": as_dict(c.params, identity)}

        return {
            "suite": self.suite,
            "suite_file": str(self.suite_file),
            "config": self.config,
            "seed": self.seed,
            "scale": self.scale,
            "dataset": choice(s.dataset),
            "data": {"kind": s.data.kind, "shape": list(s.data.shape), "num_classes": s.data.num_classes},
            "settings": {
                **as_dict(s.core),
                "optimizer": {"g": as_dict(s.optimizer_g), "d": as_dict(s.optimizer_d)},
                "architecture": choice(s.architecture),
                "loss": choice(s.loss),
                "latent": choice(s.latent),
                "tricks": [choice(t) for t in s.tricks],
                "metrics": [choice(m) for m in s.metrics],
                "detectors": [choice(d) for d in s.detectors],
                "policy": dict(s.policy),
                # Where the run's records are also sent: logging changes no number, so no identity.
                **({} if identity else {"loggers": [choice(lg) for lg in s.loggers]}),
            },
            "origins": dict(sorted(s.origins.items())),
            # What the report reads from the run's folder alone; it changes no number, so no identity.
            **({} if identity else {"plot": plugin_plot(s)}),
            **({} if identity or self.search is None else {"search": self.search}),
        }

    @property
    def run_id(self) -> str:
        """Stable for the same resolved settings and seed, so a re-run finds its finished runs."""
        identity = {k: v for k, v in self.resolved(identity=True).items() if k not in ("suite_file", "origins", "scale")}
        identity["settings"] = {k: v for k, v in identity["settings"].items() if k not in (*NOT_IDENTITY, *SPEED_KEYS)}
        # Only the speed settings that are not at their default: a run from before they existed keeps its id.
        identity["settings"].update(speed_changes(self.settings.core))
        identity["dataset"] = {**identity["dataset"], "params": {
            k: v for k, v in identity["dataset"]["params"].items() if k not in PATH_PARAMS}}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.config).strip("-")[:60] or "config"
        return f"{slug}-s{self.seed}-{digest}"


def plugin_plot(settings: RunSettings, where: str = "") -> dict[str, str]:
    """Train-record keys the run's plugins declare in a class attribute `plot` (the keys a trick adds
    in `ganbench_log_record`), each with the plugin that asked: {"lecam_reg": 'trick "lecam"'}."""
    s = settings
    found: dict[str, str] = {}
    for choice in (s.dataset, s.architecture, s.loss, s.latent, *s.tricks, *s.metrics, *s.detectors):
        keys = getattr(choice.cls, "plot", ())
        if isinstance(keys, str) or not isinstance(keys, (tuple, list)) or not all(
                isinstance(k, str) and k.strip() for k in keys):
            raise UsageError(f'{where or s.config}: {choice.kind} "{choice.name}" ({choice.cls.__qualname__}): '
                             f"plot = {keys!r}: expected a tuple of train-record keys, like plot = (\"lecam_reg\",)")
        for key in keys:
            found.setdefault(key, f'{choice.kind} "{choice.name}"')
    return found


def spec_from_resolved(resolved: dict[str, Any], registry: Registry) -> RunSpec:
    """Rebuild a RunSpec from `RunSpec.resolved()` (the content of config.json).

    A run's process uses this instead of re-reading the suite, so editing the suite file while a
    suite runs cannot change, or lose, the runs already planned.
    """
    where = f"config.json of {resolved['config']} seed {resolved['seed']}"
    settings = resolved["settings"]

    def choice(kind: str, spec: dict[str, Any]) -> PluginChoice:
        entry = registry.get(kind, spec["name"], where)
        return PluginChoice(kind, entry.name, entry.cls,
                            parse(getattr(entry.cls, "params", None), spec["params"], f"{where}: {kind}"))

    core_fields = {k: settings[k] for k in CORE_KEYS if k in settings}  # a config.json older than a key: its default
    data = resolved["data"]
    run_settings = RunSettings(
        config=resolved["config"],
        core=parse(CoreSettings, core_fields, where),
        dataset=choice("dataset", resolved["dataset"]),
        data=DataInfo(data["kind"], tuple(data["shape"]), data["num_classes"]),
        architecture=choice("architecture", settings["architecture"]),
        loss=choice("loss", settings["loss"]),
        latent=choice("latent", settings["latent"]),
        tricks=tuple(choice("trick", t) for t in settings["tricks"]),
        metrics=tuple(choice("metric", m) for m in settings["metrics"]),
        detectors=tuple(choice("detector", d) for d in settings["detectors"]),
        policy=dict(settings["policy"]),
        loggers=tuple(choice("logger", lg) for lg in settings.get("loggers", [])),
        optimizer_g=parse(OptimizerSettings, settings["optimizer"]["g"], f"{where}: optimizer.g"),
        optimizer_d=parse(OptimizerSettings, settings["optimizer"]["d"], f"{where}: optimizer.d"),
        origins=dict(resolved.get("origins", {})), registry=registry,
    )
    return RunSpec(resolved["suite"], Path(resolved["suite_file"]), resolved["config"], resolved["seed"],
                   resolved["scale"], run_settings, resolved.get("search"))


@dataclass
class Config:
    """A [[configs]] entry after matrix expansion: its name and its layers."""

    name: str
    where: str
    layers: list[Layer]
    search: Any = None  # its own `search` table: narrows or extends the suite's [search] space


@dataclass
class Suite:
    path: Path
    header: SuiteHeader
    registry: Registry
    dataset: PluginChoice
    data: DataInfo
    configs: list[Config]
    defaults: Layer
    scales: dict[str, Layer]
    loggers: tuple[str, ...] = ()  # `ganbench run --logger NAME`: added to every config
    search: Any = None  # the [search] table, validated (ganbench.search_space.Search), or None
    # The [executor] table (ganbench.executors.Choice), or None: where runs train, never in a run id.
    executor: Any = None

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def baseline(self) -> str:
        return self.header.baseline or self.configs[0].name

    def report_control(self) -> dict[str, Any]:
        """What suite.json carries for the report: the chosen primary metric and the extra keys to plot."""
        return {"primary": self.header.primary, "plot": list(self.header.plot)}

    def file_record(self) -> dict[str, Any]:
        """What suite.json says of the suite file: its absolute path, and its path inside the git
        checkout that holds it (None outside one), which a report shows so that a committed report
        names `suites/x.toml`, not the folder of the machine or worktree it ran in."""
        path = self.path.resolve()
        repo = next((p for p in path.parents if (p / ".git").exists()), None)  # a worktree's .git is a file
        return {"suite_file": str(path), "suite_file_in_repo": path.relative_to(repo).as_posix() if repo else None}

    def config_names(self) -> list[str]:
        return [c.name for c in self.configs]

    def runs(self, scale: str, only: list[str] | None = None) -> list[RunSpec]:
        """Every (config, seed) at `scale`, configs in suite order, validated."""
        if scale not in self.scales:
            names = list(self.scales)
            raise UsageError(f'--scale "{scale}": {self.path} has no such scale{did_you_mean(scale, names)}; '
                             f"allowed: {', '.join(names)}")
        names = self.config_names()
        for name in only or []:
            if name not in names:
                raise UsageError(f'--only "{name}": no such config in {self.path}{did_you_mean(name, names)}; '
                                 f"available: {', '.join(names)}")
        specs = []
        for config in self.configs:
            if only and config.name not in only:
                continue
            settings = self.settings(config, scale)
            specs += [RunSpec(self.name, self.path, config.name, seed, scale, settings) for seed in self.header.seeds]
        return specs

    def settings_with(self, name: str, layer: Layer) -> RunSettings:
        """Config `name` with one more layer (a search trial's values), validated at every scale;
        the default scale's settings."""
        config = next(c for c in self.configs if c.name == name)
        extended = Config(config.name, config.where, [*config.layers, layer])
        for scale in self.scales:
            self.settings(extended, scale)
        return self.settings(extended, "default")

    def settings(self, config: Config, scale: str) -> RunSettings:
        file = str(self.path)
        first = merge([builtin_layer(), self.defaults, *config.layers, self.scales[scale]], file)
        plugin_layer = plugin_defaults_layer(first, self.registry, file)
        merged = merge([builtin_layer(), self.defaults, plugin_layer, *config.layers, self.scales[scale]], file)
        listed = {name for name, _, _ in merged.lists["loggers"]}
        merged.lists["loggers"] += [(name, {}, "(--logger)") for name in self.loggers if name not in listed]
        return settings_from(merged, self.registry, config.name, self.dataset, self.data, file, config.where)


def load_suite(path: str | Path, data_root: str | None = None, loggers: list[str] | tuple[str, ...] = ()) -> Suite:
    """Parse and validate a suite file completely, at every scale. `loggers` (from `--logger`) are
    added to every config."""
    path = Path(path)
    file = str(path)
    tree = _read_toml(path)
    for key in tree:
        if key not in TOP_KEYS:
            raise UsageError(f"{file}: {key}: unknown table{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("suite", "dataset", "configs"):
        if key not in tree:
            raise UsageError(f"{file}: [{key}] is missing; a suite needs [suite], [dataset] and at least one [[configs]]")

    header = parse(SuiteHeader, _table(tree, "suite", file), f"{file}: suite")
    if not header.seeds:
        raise UsageError(f"{file}: suite.seeds = []: give at least one seed")
    for i, seed in enumerate(header.seeds):
        if seed < 0:
            raise UsageError(f"{file}: suite.seeds[{i}] = {seed}: seeds must be >= 0")
    if len(set(header.seeds)) != len(header.seeds):
        raise UsageError(f"{file}: suite.seeds = {format_value(header.seeds)}: seeds must be distinct")
    _check_report_control(header, file)
    plugin_files = []
    for i, name in enumerate(header.plugins):
        plugin_path = (path.parent / name).resolve()
        if not plugin_path.is_file():
            raise UsageError(f'{file}: suite.plugins[{i}] = "{name}": file not found ({plugin_path})')
        plugin_files.append(plugin_path)
    registry = Registry(plugin_files)

    dataset, data = _dataset(tree, registry, path, data_root)
    defaults = flatten(_table(tree, "defaults", file, required=False), "defaults", file)
    scales = _scales(tree, file)
    configs = _configs(tree, file)
    if header.baseline and header.baseline not in [c.name for c in configs]:
        names = [c.name for c in configs]
        raise UsageError(f'{file}: suite.baseline = "{header.baseline}": no such config{did_you_mean(header.baseline, names)}; '
                         f"available: {', '.join(names)}")
    for name in loggers:
        registry.get("logger", name, "--logger")
    suite = Suite(path, header, registry, dataset, data, configs, defaults, scales, tuple(dict.fromkeys(loggers)))
    if "executor" in tree:
        from ganbench.executors import table as executor_table

        suite.executor = executor_table(tree["executor"], registry, file)
    for scale in scales:
        for config in configs:
            plugin_plot(suite.settings(config, scale), f"{file}: {config.where}")
    if "search" in tree:
        try:
            from ganbench.search_space import parse_search
        except ModuleNotFoundError as exc:
            if exc.name != "optuna":
                raise
            raise UsageError(f"{file}: search: a [search] table needs Optuna, which is not installed: "
                             "pip install 'ganbench[search]'") from None

        suite.search = parse_search(tree["search"], {c.name: c.search for c in configs}, header.seeds, file,
                                    suite.settings_with, [m.name for m in suite.settings(configs[0], "default").metrics],
                                    header.primary, list(scales))
    else:
        for config in configs:
            if config.search is not None:
                raise UsageError(f"{file}: {config.where}.search: a config's search space needs a [search] table "
                                 "in the suite (with its trials budget)")
    return suite


def _check_report_control(header: SuiteHeader, file: str) -> None:
    """suite.primary and suite.plot name keys the runs will record. Which keys a metric plugin or a
    trick writes is known only once it runs, so the report says when a key was never recorded;
    here only the form is checked."""
    if header.primary is not None and (not header.primary.strip() or header.primary != header.primary.strip()):
        raise UsageError(f"{file}: suite.primary = {format_value(header.primary)}: expected a metric key, like "
                         '"fid" or the key a metric plugin records, without spaces around it; leave it out to rank '
                         "by FID (or the next built-in metric recorded)")
    for i, key in enumerate(header.plot):
        if not key.strip() or key != key.strip():
            raise UsageError(f"{file}: suite.plot[{i}] = {format_value(key)}: expected a train-record key, like "
                             '"d_acc" or a key a trick adds to metrics.jsonl, without spaces around it')
        if key in header.plot[:i]:
            raise UsageError(f"{file}: suite.plot = {format_value(header.plot)}: {format_value(key)} is listed twice; "
                             "list each key once")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the file: {exc}") from None
    if not text.strip():
        raise UsageError(f"{path}: the file is empty; a suite needs [suite], [dataset] and at least one [[configs]]")
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: TOML syntax error: {exc}") from None
    bad = _non_finite(tree, "")
    if bad:
        raise UsageError(f"{path}: {bad[0]} = {bad[1]}: nan and inf are not allowed in a suite")
    return tree


def _non_finite(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path, repr(value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, sub in items:
        found = _non_finite(sub, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."))
        if found:
            return found
    return None


def _table(tree: dict[str, Any], key: str, file: str, required: bool = True) -> dict[str, Any]:
    value = tree.get(key, {} if not required else None)
    if not isinstance(value, dict):
        raise UsageError(f"{file}: {key} = {format_value(value)}: expected a table [{key}]")
    return value


def _dataset(tree: dict[str, Any], registry: Registry, path: Path, data_root: str | None) -> tuple[PluginChoice, DataInfo]:
    file = str(path)
    table = _table(tree, "dataset", file)
    name, raw = plugin_spec(table, "dataset", file, need_name=True)
    entry = registry.get("dataset", name, f"{file}: dataset.name")
    params_cls = getattr(entry.cls, "params", None)
    field_names = set(getattr(params_cls, "__dataclass_fields__", {}))
    raw = dict(raw)
    if data_root is not None and "root" in field_names:
        raw["root"] = os.path.abspath(os.path.expanduser(data_root))
    params = parse(params_cls, raw, f"{file}: dataset")
    check = getattr(entry.cls, "check", None)
    reason = check(params, None) if check else None
    if reason:
        raise UsageError(f'{file}: dataset: "{name}" cannot be used: {reason}')
    choice = PluginChoice("dataset", entry.name, entry.cls, params)
    return choice, choice.instantiate().info()


def _scales(tree: dict[str, Any], file: str) -> dict[str, Layer]:
    """The built-in scales, then the suite's own in file order. A scale of the suite's own starts
    from the suite's settings, like `default`."""
    table = _table(tree, "scales", file, required=False)
    for name in table:
        if name not in SCALES and not SCALE_NAME.fullmatch(name):
            raise UsageError(f'{file}: scales."{name}": a scale name is lower-case letters, digits, "-" and "_", '
                             f"starting with a letter or digit (built in: {', '.join(SCALES)})")
        near = difflib.get_close_matches(name, SCALES, n=1, cutoff=0.85)
        if name not in SCALES and near:
            raise UsageError(f'{file}: scales.{name}: did you mean "{near[0]}"? A scale of the suite\'s own cannot be '
                             f"spelt this close to a built-in one ({', '.join(SCALES)}); rename it")
    layers = {}
    for name in [*SCALES, *(n for n in table if n not in SCALES)]:
        given = table.get(name, {})
        if not isinstance(given, dict):
            raise UsageError(f"{file}: scales.{name} = {format_value(given)}: expected a table [scales.{name}]")
        for key in given:
            if key not in SCALE_KEYS:
                raise UsageError(f"{file}: scales.{name}.{key}: a scale cannot set this key{did_you_mean(key, SCALE_KEYS)}; "
                                 f"allowed: {', '.join(SCALE_KEYS)}")
        values = {**BUILTIN_SCALES.get(name, {}), **given}
        paths = {k: f"scales.{name}.{k}" if k in given else f"(built-in scale {name}).{k}" for k in values}
        layers[name] = empty_layer(values, paths)
    return layers


def _configs(tree: dict[str, Any], file: str) -> list[Config]:
    entries = tree["configs"]
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{file}: configs: expected at least one [[configs]] table")
    configs: list[Config] = []
    for i, entry in enumerate(entries):
        where = f"configs[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{file}: {where}: expected a table")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"{file}: {where}.name: every config needs a name (a non-empty string)")
        layer = flatten(entry, where, file, allowed_extra=("name", "matrix", "search"))
        matrix = entry.get("matrix")
        if matrix is None:
            configs.append(Config(name, where, [layer], entry.get("search")))
            continue
        configs += [Config(c.name, c.where, c.layers, entry.get("search"))
                    for c in _expand_matrix(name, where, layer, matrix, file)]
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f'{file}: configs: the name "{name}" is used twice; config names must be unique')
    return configs


def _expand_matrix(name: str, where: str, layer: Layer, matrix: Any, file: str) -> list[Config]:
    if not isinstance(matrix, dict) or not matrix:
        raise UsageError(f'{file}: {where}.matrix: expected a table like {{"optimizer.d.lr" = [1e-4, 2e-4]}}')
    for key, values in matrix.items():
        path = f'{where}.matrix."{key}"'
        if not flat_key_known(key):
            raise UsageError(f"{file}: {path}: not a setting a matrix can vary; use a core key "
                             f"({', '.join(CORE_KEYS)}), optimizer.g.<field>, optimizer.d.<field>, "
                             "architecture/loss/latent[.<param>], policy.<incident kind>, tricks.<name>.<param>, "
                             "metrics.<name>.<param>, detectors.<name>.<param> or loggers.<name>.<param>")
        if not isinstance(values, list) or not values:
            raise UsageError(f"{file}: {path} = {format_value(values)}: expected a non-empty list of values")
    configs = []
    keys = list(matrix)
    for combo in itertools.product(*(list(enumerate(matrix[k])) for k in keys)):
        values = {k: v for k, (_, v) in zip(keys, combo)}
        paths = {k: f'{where}.matrix."{k}"[{j}]' for k, (j, _) in zip(keys, combo)}
        label = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
        configs.append(Config(f"{name}[{label}]", where, [layer, empty_layer(values, paths)]))
    return configs
