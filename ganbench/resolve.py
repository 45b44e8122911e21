"""Turn the layers of a suite (built-in defaults, [defaults], plugin defaults, a config, a matrix
point, a scale) into one typed RunSettings, remembering where in the file each value came from.

Values are kept as flat dotted keys while merging:
  "steps"                  a core setting
  "optimizer.d.lr"         an optimizer field
  "loss", "loss.<param>"   a plugin choice and its parameters; setting the name replaces the params
  "tricks"                 an ordered {name: {param: value}} (configs append to [defaults])
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ganbench.data import DataInfo
from ganbench.errors import UsageError, did_you_mean
from ganbench.params import format_value, parse
from ganbench.registry import Registry
from ganbench.settings import (
    BUILTIN_DEFAULTS,
    CORE_KEYS,
    PLUGIN_KEYS,
    CoreSettings,
    OptimizerSettings,
    PluginChoice,
    RunSettings,
)

OPTIMIZER_FIELDS = tuple(f.name for f in fields(OptimizerSettings))
NETWORKS = ("g", "d")


@dataclass
class Layer:
    """One source of settings: flat values, trick specs, and the file path of each."""

    values: dict[str, Any]
    paths: dict[str, str]
    tricks: list[tuple[str, dict[str, Any], str]]  # (name, params, path)


def flatten(table: dict[str, Any], where: str, file: str, allowed_extra: tuple[str, ...] = ()) -> Layer:
    """A [defaults] or [[configs]] table of `file` as a Layer. `where` is the table's path."""
    layer = Layer({}, {}, [])
    allowed = (*CORE_KEYS, *PLUGIN_KEYS, "tricks", "optimizer", *allowed_extra)
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
        elif key in PLUGIN_KEYS:
            name, params = plugin_spec(value, path, file, need_name=False)
            if name is not None:
                _put(layer, key, name, f"{path}.name" if isinstance(value, dict) else path)
            for p, v in params.items():
                _put(layer, f"{key}.{p}", v, f"{path}.{p}")
        else:
            if not isinstance(value, list):
                raise UsageError(f"{file}: {path} = {format_value(value)}: expected a list of trick names or tables")
            for i, spec in enumerate(value):
                name, params = plugin_spec(spec, f"{path}[{i}]", file, need_name=True)
                layer.tricks.append((name, params, f"{path}[{i}]"))
    return layer


def plugin_spec(value: Any, path: str, file: str, need_name: bool) -> tuple[str | None, dict[str, Any]]:
    """A plugin given as "name" or {name = "...", param = value}."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict):
        params = {k: v for k, v in value.items() if k != "name"}
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
    if parts[0] in PLUGIN_KEYS:
        return len(parts) == 2
    return parts[0] == "tricks" and len(parts) == 3


def layer_from_flat(values: dict[str, Any], paths: dict[str, str]) -> Layer:
    """A Layer from dotted keys (a matrix point); "tricks.<name>.<param>" keys stay flat."""
    return Layer(dict(values), dict(paths), [])


def merge(layers: list[Layer], file: str) -> Layer:
    """Later layers win. Naming a plugin drops the parameters lower layers gave the old choice."""
    out = Layer({}, {}, [])
    trick_params: dict[str, tuple[dict[str, Any], str]] = {}
    trick_param_paths: dict[str, str] = {}
    for layer in layers:
        for key in PLUGIN_KEYS:
            if key in layer.values:
                for k in [k for k in out.values if k.startswith(key + ".")]:
                    del out.values[k]
                    del out.paths[k]
        for key, value in layer.values.items():
            if key.startswith("tricks."):
                _, name, param = key.split(".")
                if name not in trick_params:
                    raise UsageError(f'{file}: {layer.paths[key]}: no trick "{name}" in this configuration to set {param} on')
                trick_params[name][0][param] = value
                trick_param_paths[f"{name}.{param}"] = layer.paths[key]
            else:
                out.values[key] = value
                out.paths[key] = layer.paths[key]
        for name, params, path in layer.tricks:
            if name in trick_params:
                raise UsageError(f'{file}: {path}: trick "{name}" is already listed at {trick_params[name][1]}')
            trick_params[name] = (dict(params), path)
    out.tricks = [(name, params, path) for name, (params, path) in trick_params.items()]
    out.paths.update({f"tricks.{k}": v for k, v in trick_param_paths.items()})
    return out


def builtin_layer() -> Layer:
    layer = flatten(BUILTIN_DEFAULTS, "(built-in defaults)", "ganbench")
    for key in CORE_KEYS:
        layer.values.setdefault(key, getattr(CoreSettings(), key))
        layer.paths.setdefault(key, f"(built-in defaults).{key}")
    return layer


def plugin_defaults_layer(merged: Layer, registry: Registry, file: str) -> Layer:
    """The settings the chosen loss and tricks recommend (`config_defaults`), as a layer."""
    layer = Layer({}, {}, [])
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
            if not flat_key_known(key) or key.startswith("tricks."):
                raise UsageError(f"{entry.source}: {kind} \"{name}\".config_defaults() returns unknown key \"{key}\"")
            if key.startswith("architecture.") and key.split(".", 1)[1] not in arch_params:
                continue  # only meaningful for architectures that have this parameter
            _put(layer, key, value, f"(defaults of {kind} \"{name}\").{key}")
    return layer


def _param_names(registry: Registry, kind: str, name: Any) -> set[str]:
    entry = registry.table[kind].get(name) if isinstance(name, str) else None
    params = getattr(entry.cls, "params", None) if entry else None
    return {f.name for f in fields(params)} if params else set()


def settings_from(merged: Layer, registry: Registry, config: str, dataset: PluginChoice,
                  data: DataInfo, file: str, where: str) -> RunSettings:
    """Validate a merged layer into RunSettings; every error names the key's path in the file."""
    v, paths = merged.values, {k: f"{file}: {p}" for k, p in merged.paths.items()}
    core = parse(CoreSettings, {k: v[k] for k in CORE_KEYS}, f"{file}: {where}", paths)
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
    tricks = []
    for name, raw_params, path in merged.tricks:
        entry = registry.get("trick", name, f"{file}: {path}")
        sub_paths = {p: f"{file}: {merged.paths[f'tricks.{name}.{p}']}" for p in raw_params
                     if f"tricks.{name}.{p}" in merged.paths}
        params = parse(getattr(entry.cls, "params", None), raw_params, f"{file}: {path}", sub_paths)
        tricks.append(PluginChoice("trick", entry.name, entry.cls, params))
    settings = RunSettings(
        config=config, core=core, dataset=dataset, data=data,
        architecture=choices["architecture"], loss=choices["loss"], latent=choices["latent"],
        tricks=tuple(tricks), optimizer_g=optimizers[0], optimizer_d=optimizers[1],
        origins=dict(merged.paths),
    )
    for choice in (settings.architecture, settings.loss, settings.latent, *settings.tricks):
        check = getattr(choice.cls, "check", None)
        reason = check(choice.params, settings) if check else None
        if reason:
            raise UsageError(f'{file}: {where}: {choice.kind} "{choice.name}" cannot be used here: {reason}')
    return settings
