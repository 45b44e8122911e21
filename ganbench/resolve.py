"""Turn the layers of a suite (built-in defaults, [defaults], plugin defaults, a config, a matrix
point, a scale) into one typed RunSettings, remembering where in the file each value came from.

Values are kept as flat dotted keys while merging:
  "steps"                  a core setting
  "optimizer.d.lr"         an optimizer field
  "loss", "loss.<param>"   a plugin choice and its parameters; setting the name replaces the params
  "tricks", "metrics"      ordered plugin lists {name: {param: value}} (configs append to [defaults]);
                           "tricks.<name>.<param>" sets one listed plugin's parameter
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ganbench.data import DataInfo
from ganbench.errors import UsageError, did_you_mean
from ganbench.params import format_value, parse
from ganbench.registry import Registry
from ganbench.settings import (
    BUILTIN_DEFAULTS,
    CORE_KEYS,
    LIST_KEYS,
    PLUGIN_KEYS,
    CoreSettings,
    OptimizerSettings,
    PluginChoice,
    RunSettings,
)

OPTIMIZER_FIELDS = tuple(f.name for f in fields(OptimizerSettings))
PATH_PARAMS = ("path", "root", "weights")  # plugin params that name files, relative to the suite's folder
NETWORKS = ("g", "d")


@dataclass
class Layer:
    """One source of settings: flat values, trick specs, and the file path of each."""

    values: dict[str, Any]
    paths: dict[str, str]
    lists: dict[str, list[tuple[str, dict[str, Any], str]]]  # "tricks"/"metrics" -> [(name, params, path)]

    @property
    def tricks(self) -> list[tuple[str, dict[str, Any], str]]:
        return self.lists.get("tricks", [])


def empty_layer(values: dict[str, Any] | None = None, paths: dict[str, str] | None = None) -> Layer:
    """A layer with these flat values and no plugin lists (scales, matrix points)."""
    return Layer(dict(values or {}), dict(paths or {}), {key: [] for key in LIST_KEYS})


def flatten(table: dict[str, Any], where: str, file: str, allowed_extra: tuple[str, ...] = ()) -> Layer:
    """A [defaults] or [[configs]] table of `file` as a Layer. `where` is the table's path."""
    layer = empty_layer()
    allowed = (*CORE_KEYS, *PLUGIN_KEYS, *LIST_KEYS, "optimizer", "policy", *allowed_extra)
    for key, value in table.items():
        path = f"{where}.{key}"
        if key in allowed_extra:
            continue
        if key not in allowed:
            raise UsageError(f"{file}: {path}: unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")
        if key in CORE_KEYS:
            _put(layer, key, value, path)
        elif key == "optimizer":
            _flatten_optimizer(layer, value, path, file)
        elif key == "policy":
            if not isinstance(value, dict):
                raise UsageError(f'{file}: {path} = {format_value(value)}: expected a table of incident kinds, '
                                 'like {mode-collapse = "stop"}')
            for kind, policy in value.items():
                _put(layer, f"policy.{kind}", policy, f"{path}.{kind}")
        elif key in PLUGIN_KEYS:
            name, params = plugin_spec(value, path, file, need_name=False)
            if name is not None:
                _put(layer, key, name, f"{path}.name" if isinstance(value, dict) else path)
            for p, v in params.items():
                _put(layer, f"{key}.{p}", v, f"{path}.{p}")
        else:
            if not isinstance(value, list):
                raise UsageError(f"{file}: {path} = {format_value(value)}: expected a list of {LIST_KEYS[key]} "
                                 "names or tables")
            layer.paths[key] = path  # an explicit list, even an empty one, is a choice
            for i, spec in enumerate(value):
                name, params = plugin_spec(spec, f"{path}[{i}]", file, need_name=True)
                layer.lists[key].append((name, params, f"{path}[{i}]"))
    return layer


def relative_to_suite(params: dict[str, Any], file: str) -> dict[str, Any]:
    """File-naming params (PATH_PARAMS) made absolute against the suite's folder; "" stays ""."""
    folder = Path(file).parent
    return {k: str((folder / Path(v).expanduser()).resolve()) if k in PATH_PARAMS and isinstance(v, str) and v else v
            for k, v in params.items()}


def plugin_spec(value: Any, path: str, file: str, need_name: bool) -> tuple[str | None, dict[str, Any]]:
    """A plugin given as "name" or {name = "...", param = value}; file params made absolute."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict):
        params = relative_to_suite({k: v for k, v in value.items() if k != "name"}, file)
        name = value.get("name")
        if name is None and need_name:
            raise UsageError(f"{file}: {path}.name: required key is missing")
        if name is not None and not isinstance(name, str):
            raise UsageError(f"{file}: {path}.name = {format_value(name)}: expected a plugin name (a string)")
        return name, params
    raise UsageError(f'{file}: {path} = {format_value(value)}: expected a plugin name or a table like {{name = "..."}}')


def _flatten_optimizer(layer: Layer, value: Any, path: str, file: str) -> None:
    if not isinstance(value, dict):
        raise UsageError(f"{file}: {path} = {format_value(value)}: expected a table with g and d")
    for net, settings in value.items():
        if net not in NETWORKS:
            raise UsageError(f"{file}: {path}.{net}: unknown key{did_you_mean(net, NETWORKS)}; allowed: g, d")
        if not isinstance(settings, dict):
            raise UsageError(f"{file}: {path}.{net} = {format_value(settings)}: expected a table like {{lr = 2e-4}}")
        for field_name, v in settings.items():
            _put(layer, f"optimizer.{net}.{field_name}", v, f"{path}.{net}.{field_name}")


def _put(layer: Layer, key: str, value: Any, path: str) -> None:
    layer.values[key] = value
    layer.paths[key] = path


def flat_key_known(key: str) -> bool:
    """Whether a dotted key can be set by a matrix or a plugin's config_defaults."""
    parts = key.split(".")
    if key in CORE_KEYS or key in PLUGIN_KEYS:
        return True
    if parts[0] == "optimizer":
        return len(parts) == 3 and parts[1] in NETWORKS
    if parts[0] == "policy":
        return len(parts) == 2
    if parts[0] in PLUGIN_KEYS:
        return len(parts) == 2
    return parts[0] in LIST_KEYS and len(parts) == 3


def merge(layers: list[Layer], file: str) -> Layer:
    """Later layers win. Naming a plugin drops the parameters lower layers gave the old choice;
    plugin lists (tricks, metrics) accumulate."""
    out = empty_layer()
    listed: dict[str, dict[str, tuple[dict[str, Any], str]]] = {key: {} for key in LIST_KEYS}
    for layer in layers:
        for key in PLUGIN_KEYS:
            if key in layer.values:
                for k in [k for k in out.values if k.startswith(key + ".")]:
                    del out.values[k]
                    del out.paths[k]
        for list_key, entries in layer.lists.items():
            if list_key in layer.paths:
                out.paths[list_key] = layer.paths[list_key]
            for name, params, path in entries:
                if name in listed[list_key]:
                    raise UsageError(f'{file}: {path}: {LIST_KEYS[list_key]} "{name}" is already listed at '
                                     f"{listed[list_key][name][1]}")
                listed[list_key][name] = (dict(params), path)
        for key, value in layer.values.items():
            if key.split(".")[0] in LIST_KEYS:
                list_key, name, param = key.split(".")
                if name not in listed[list_key]:
                    raise UsageError(f'{file}: {layer.paths[key]}: no {LIST_KEYS[list_key]} "{name}" in this '
                                     f"configuration to set {param} on")
                listed[list_key][name][0][param] = value
            out.values[key] = value
            out.paths[key] = layer.paths[key]
    out.lists = {key: [(name, params, path) for name, (params, path) in entries.items()]
                 for key, entries in listed.items()}
    return out


def builtin_layer() -> Layer:
    layer = flatten(BUILTIN_DEFAULTS, "(built-in defaults)", "ganbench")
    for key in CORE_KEYS:
        layer.values.setdefault(key, getattr(CoreSettings(), key))
        layer.paths.setdefault(key, f"(built-in defaults).{key}")
    return layer


def plugin_defaults_layer(merged: Layer, registry: Registry, file: str) -> Layer:
    """The settings the chosen loss and tricks recommend (`config_defaults`), as a layer."""
    layer = empty_layer()
    chosen = [(kind, merged.values[kind], {k.split(".", 1)[1]: v for k, v in merged.values.items()
                                           if k.startswith(kind + ".")}) for kind in ("loss",)]
    chosen += [("trick", name, params) for name, params, _ in merged.tricks]
    arch_params = _param_names(registry, "architecture", merged.values.get("architecture"))
    for kind, name, raw_params in chosen:
        entry = registry.table[kind].get(name)
        suggest = getattr(entry.cls, "config_defaults", None) if entry else None
        if suggest is None:
            continue
        try:
            params = parse(getattr(entry.cls, "params", None), raw_params, f"{file}: (checked later)")
        except UsageError:
            continue  # the real error is raised, with its path, when the config is validated
        for key, value in (suggest(params) or {}).items():
            if not flat_key_known(key) or key.split(".")[0] in LIST_KEYS:
                raise UsageError(f"{entry.source}: {kind} \"{name}\".config_defaults() returns unknown key \"{key}\"")
            if key.startswith("architecture.") and key.split(".", 1)[1] not in arch_params:
                continue  # only meaningful for architectures that have this parameter
            _put(layer, key, value, f"(defaults of {kind} \"{name}\").{key}")
    return layer


def _param_names(registry: Registry, kind: str, name: Any) -> set[str]:
    entry = registry.table[kind].get(name) if isinstance(name, str) else None
    params = getattr(entry.cls, "params", None) if entry else None
    return {f.name for f in fields(params)} if params else set()


def explicit_lists(merged: Layer) -> set[str]:
    """List keys a suite set, even to [] (an empty list in the file is a choice)."""
    return {k for k in merged.paths if k in LIST_KEYS}


def default_metrics(data: DataInfo, registry: Registry) -> list[str]:
    """Metrics for a suite that names none: FID for images, class metrics for labelled images,
    mode coverage for 2-D mixtures (each only if installed)."""
    wanted = ["fid", "classifier"] if data.kind == "image" else ["mixture-modes"]
    if data.kind == "image" and not data.num_classes:
        wanted.remove("classifier")
    chosen = []
    for name in wanted:
        entry = registry.table["metric"].get(name)
        check = getattr(entry.cls, "check", None) if entry else None
        params = getattr(entry.cls, "params", None) if entry else None
        # A metric the machine cannot compute (no offline Inception weights) is left out of the
        # automatic choice; naming it explicitly still gets its clear error.
        if entry and not (check and check(params() if params else None, _DataOnly(data))):
            chosen.append(name)
    return chosen


@dataclass(frozen=True)
class _DataOnly:
    """What a metric's check() may read before the run's settings exist: the data."""

    data: DataInfo


def settings_from(merged: Layer, registry: Registry, config: str, dataset: PluginChoice,
                  data: DataInfo, file: str, where: str) -> RunSettings:
    """Validate a merged layer into RunSettings; every error names the key's path in the file."""
    v, paths = merged.values, {k: f"{file}: {p}" for k, p in merged.paths.items()}
    core = parse(CoreSettings, {k: v[k] for k in CORE_KEYS}, f"{file}: {where}", paths)
    if not merged.lists["metrics"] and "metrics" not in explicit_lists(merged):
        merged.lists["metrics"] = [(name, {}, "(metrics chosen for the data)") for name in default_metrics(data, registry)]
    if not merged.lists["detectors"] and "detectors" not in explicit_lists(merged):
        merged.lists["detectors"] = [(name, {}, "(every installed detector)") for name in registry.names("detector")]
    optimizers = []
    for net in NETWORKS:
        prefix = f"optimizer.{net}."
        values = {k[len(prefix):]: x for k, x in v.items() if k.startswith(prefix)}
        sub_paths = {k[len(prefix):]: p for k, p in paths.items() if k.startswith(prefix)}
        optimizers.append(parse(OptimizerSettings, values, f"{file}: {where}.optimizer.{net}", sub_paths))
    choices = {}
    for key, kind in PLUGIN_KEYS.items():
        entry = registry.get(kind, v[key], paths[key]) if isinstance(v[key], str) else None
        if entry is None:
            raise UsageError(f"{paths[key]} = {format_value(v[key])}: expected a plugin name")
        values = {k.split(".", 1)[1]: x for k, x in v.items() if k.startswith(key + ".")}
        sub_paths = {k.split(".", 1)[1]: p for k, p in paths.items() if k.startswith(key + ".")}
        params = parse(getattr(entry.cls, "params", None), values, f"{file}: {where}.{key}", sub_paths)
        choices[key] = PluginChoice(kind, entry.name, entry.cls, params)
    listed: dict[str, tuple[PluginChoice, ...]] = {}
    for list_key, kind in LIST_KEYS.items():
        chosen = []
        for name, raw_params, path in merged.lists[list_key]:
            entry = registry.get(kind, name, f"{file}: {path}")
            sub_paths = {p: paths[f"{list_key}.{name}.{p}"] for p in raw_params if f"{list_key}.{name}.{p}" in paths}
            params = parse(getattr(entry.cls, "params", None), raw_params, f"{file}: {path}", sub_paths)
            chosen.append(PluginChoice(kind, entry.name, entry.cls, params))
        listed[list_key] = tuple(chosen)
    settings = RunSettings(
        config=config, core=core, dataset=dataset, data=data,
        architecture=choices["architecture"], loss=choices["loss"], latent=choices["latent"],
        tricks=listed["tricks"], metrics=listed["metrics"], detectors=listed["detectors"],
        policy=incident_policy(merged, listed["detectors"], paths), loggers=listed["loggers"],
        optimizer_g=optimizers[0], optimizer_d=optimizers[1],
        origins=dict(merged.paths), registry=registry,
    )
    for choice in (settings.architecture, settings.loss, settings.latent, *settings.tricks, *settings.metrics,
                   *settings.detectors, *settings.loggers):
        check = getattr(choice.cls, "check", None)
        reason = check(choice.params, settings) if check else None
        if reason:
            raise UsageError(f'{file}: {where}: {choice.kind} "{choice.name}" cannot be used here: {reason}')
    return settings


def incident_policy(merged: Layer, detectors: tuple[PluginChoice, ...], paths: dict[str, str]) -> dict[str, str]:
    """The `policy` table: each key an incident kind one of the chosen detectors raises, each value
    "record" or "stop". Two detectors may not raise the same kind: its policy would be ambiguous."""
    from ganbench.incidents import POLICIES

    owner: dict[str, str] = {}
    for choice in detectors:
        for kind in getattr(choice.cls, "kinds", {}):
            if kind in owner:
                raise UsageError(f'{paths.get("detectors", "detectors")}: detectors "{owner[kind]}" and "{choice.name}" '
                                 f'both raise incidents of kind "{kind}"; choose one of them')
            owner[kind] = choice.name
    policy = {}
    for key, value in merged.values.items():
        if not key.startswith("policy."):
            continue
        kind = key.split(".", 1)[1]
        if kind not in owner:
            raise UsageError(f"{paths[key]}: unknown incident kind \"{kind}\"{did_you_mean(kind, owner)}; the chosen "
                             f"detectors raise: {', '.join(sorted(owner)) or 'none'}")
        if value not in POLICIES:
            raise UsageError(f"{paths[key]} = {format_value(value)}: expected one of: {', '.join(POLICIES)}")
        policy[kind] = value
    return policy
