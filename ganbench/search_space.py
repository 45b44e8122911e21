"""The [search] table of a suite: a budget of trials per configuration over a typed space of settings.

Read and validated completely when the suite is loaded, like every other table: unknown keys,
empty ranges, and distributions whose values do not fit the setting they vary are refused as one
`UsageError` line naming the file, the key, the value and a did-you-mean. `search.py` runs it.

A space key is a flat setting key, as a matrix uses it ("optimizer.d.lr", "d_updates",
"loss.lambda_gp", "tricks.ema.beta"), or a flat key and an index into a list-valued setting
("optimizer.d.betas.0"). A [[configs]] entry may narrow the suite's space (the same key with
another distribution) or extend it (a new key) with its own `search` table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna

from ganbench.errors import UsageError, did_you_mean
from ganbench.params import NonNegativeInt, PositiveInt, as_dict, format_value, parse
from ganbench.resolve import Layer, empty_layer
from ganbench.settings import CORE_KEYS, LIST_KEYS, PLUGIN_KEYS, RunSettings

KINDS = ("uniform", "log_uniform", "int_uniform", "choice")
DIRECTIONS = {"min": "minimize", "max": "maximize"}
AT = ("last", "best")  # the objective's value at the last eval point, or its best over eval points
SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "successive-halving")
# Trials train on seeds 1000, 1001, ...; the best settings are then re-measured on `final_seeds`, which
# must be fresh: a value re-measured on the seeds that selected it is biased towards the selection.
TRIAL_SEED_BASE = 1000
# What a metric plugin records as its headline value, in the ranking's order of preference
# (ganbench.report.ranking.PRIMARY): the objective when the suite names none.
METRIC_PRIMARY = {"fid": "fid", "classifier": "class_fd", "mixture-modes": "modes_covered"}
KNOWN_DIRECTIONS = {"fid": "min", "kid_mean": "min", "class_fd": "min", "classes_covered": "max",
                    "modes_covered": "max", "high_quality_fraction": "max", "class_kl": "min", "mode_kl": "min"}


@dataclass(frozen=True)
class SearchTable:
    """The [search] table, as typed values (space and objective are checked further below)."""

    trials: PositiveInt | dict[str, PositiveInt]  # the budget per configuration, or by scale: { smoke = 3, default = 30 }
    sampler: Literal["random", "tpe"] = "random"  # Optuna's RandomSampler or TPESampler
    seed: NonNegativeInt = 0  # the sampler's seed; trial k of a study samples from (seed, k)
    seeds_per_trial: PositiveInt = 1  # training seeds per trial (1000, 1001, ...); the trial's value is their mean
    final_seeds: list[NonNegativeInt] | None = None  # fresh seeds the best trial is re-measured on (default: suite.seeds)
    objective: dict[str, Any] = field(default_factory=dict)  # {key, direction = "min"|"max", at = "last"|"best"}
    pruner: Literal["none", "median", "successive-halving"] = "none"  # stops unpromising trials at eval points
    storage: str = ""  # an Optuna RDB URL (sqlite:///, postgresql://, mysql://); default: sqlite <out>/search.db
    heartbeat: PositiveInt = 30  # seconds between a running trial's heartbeats; 3 missed ones mark it dead
    space: dict[str, Any] = field(default_factory=dict)  # setting key -> {uniform|log_uniform|int_uniform|choice = ...}


@dataclass(frozen=True)
class Objective:
    key: str  # an eval-record metric key
    direction: str  # "min" or "max"
    at: str = "last"

    @property
    def optuna_direction(self) -> str:
        return DIRECTIONS[self.direction]


@dataclass(frozen=True)
class Search:
    """A suite's validated search: the table, and each configuration's space as Optuna distributions."""

    table: SearchTable
    objective: Objective
    final_seeds: tuple[int, ...]
    spaces: dict[str, dict[str, optuna.distributions.BaseDistribution]]  # config name -> key -> distribution

    def trials(self, scale: str) -> int:
        """The budget per configuration at `scale`: the table's number, or its entry for the scale
        (else its "default" entry)."""
        trials = self.table.trials
        return trials if isinstance(trials, int) else trials.get(scale, trials["default"])

    @property
    def trial_seeds(self) -> tuple[int, ...]:
        return tuple(TRIAL_SEED_BASE + i for i in range(self.table.seeds_per_trial))

    def describe(self, scale: str) -> dict[str, Any]:
        """What suite.json and the study record: enough to tell a study from one of other settings."""
        return {"sampler": self.table.sampler, "seed": self.table.seed, "trials": self.trials(scale),
                "seeds_per_trial": self.table.seeds_per_trial, "trial_seeds": list(self.trial_seeds),
                "final_seeds": list(self.final_seeds), "pruner": self.table.pruner,
                "objective": {"key": self.objective.key, "direction": self.objective.direction,
                              "at": self.objective.at}}


def distribution(spec: Any, where: str) -> optuna.distributions.BaseDistribution:
    """One space entry, {log_uniform = [1e-5, 1e-2]} and the like, as an Optuna distribution."""
    example = 'like { log_uniform = [1e-5, 1e-2] }, { uniform = [0.0, 0.9] }, { int_uniform = [1, 5] } or { choice = [1, 2, 5] }'
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UsageError(f"{where} = {format_value(spec)}: expected one distribution, {example}")
    (kind, value), = spec.items()
    if kind not in KINDS:
        raise UsageError(f"{where}.{kind}: unknown distribution{did_you_mean(kind, KINDS)}; allowed: {', '.join(KINDS)}")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise UsageError(f"{where}.choice = {format_value(value)}: expected a non-empty list of values")
        for v in value:
            if not isinstance(v, (bool, int, float, str)):
                raise UsageError(f"{where}.choice = {format_value(value)}: {format_value(v)} is not a number, "
                                 "string or boolean; a choice picks one scalar value")
        if len({(type(v), v) for v in value}) != len(value):
            raise UsageError(f"{where}.choice = {format_value(value)}: a value is listed twice; list each once")
        return optuna.distributions.CategoricalDistribution(value)
    numbers = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers:
        raise UsageError(f"{where}.{kind} = {format_value(value)}: expected [low, high], two numbers")
    low, high = value
    if not low < high:
        raise UsageError(f"{where}.{kind} = {format_value(value)}: the range is empty; low must be below high")
    if kind == "int_uniform":
        if not all(isinstance(v, int) for v in value):
            raise UsageError(f"{where}.int_uniform = {format_value(value)}: expected two integers; "
                             "use uniform for a real-valued range")
        return optuna.distributions.IntDistribution(low, high)
    if kind == "log_uniform" and low <= 0:
        raise UsageError(f"{where}.log_uniform = {format_value(value)}: a log-uniform range must be above 0")
    return optuna.distributions.FloatDistribution(float(low), float(high), log=kind == "log_uniform")


def flat_values(settings: RunSettings) -> dict[str, Any]:
    """Every setting of a resolved run as a flat key -> value: what a space may vary."""
    out: dict[str, Any] = {k: getattr(settings.core, k) for k in CORE_KEYS}
    for net, opt in (("g", settings.optimizer_g), ("d", settings.optimizer_d)):
        out.update({f"optimizer.{net}.{k}": v for k, v in as_dict(opt).items()})
    for key in PLUGIN_KEYS:
        choice = getattr(settings, key)
        out[key] = choice.name
        out.update({f"{key}.{p}": v for p, v in as_dict(choice.params).items()})
    for list_key in LIST_KEYS:
        for choice in getattr(settings, list_key):
            out.update({f"{list_key}.{choice.name}.{p}": v for p, v in as_dict(choice.params).items()})
    return out


def split_index(key: str, known: dict[str, Any]) -> tuple[str, int | None]:
    """"optimizer.d.betas.0" -> ("optimizer.d.betas", 0) when that setting is a list; else (key, None)."""
    base, _, last = key.rpartition(".")
    if base in known and isinstance(known[base], (list, tuple)) and last.isdigit():
        return base, int(last)
    return key, None


def trial_layer(params: dict[str, Any], known: dict[str, Any], where: str) -> Layer:
    """A trial's parameter values as a settings layer over its configuration, like a matrix point;
    indexed keys replace one element of the configuration's list value."""
    values: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for key, value in params.items():
        base, index = split_index(key, known)
        if index is None:
            values[key] = value
        else:
            current = list(values.get(base, known[base]))
            current[index] = value
            values[base] = current
        paths[base] = f'{where}."{key}"'
    return empty_layer(values, paths)


def _check_key(key: str, known: dict[str, Any], where: str) -> None:
    base, index = split_index(key, known)
    if index is not None:
        size = len(known[base])
        if index >= size:
            raise UsageError(f'{where}."{key}": {base} has {size} values; index {index} is out of range (0-{size - 1})')
        return
    if key not in known:
        raise UsageError(f'{where}."{key}": not a setting of this configuration{did_you_mean(key, list(known))}; '
                         'a space varies a core key (d_updates), optimizer.g.<field>, optimizer.d.<field>[.<index>], '
                         'architecture/loss/latent[.<param>] or tricks/metrics/detectors.<name>.<param>')
    if isinstance(known[key], (list, tuple)):
        raise UsageError(f'{where}."{key}": this setting is a list ({format_value(known[key])}); vary one element '
                         f'of it, like "{key}.0"')


def _candidates(dist: optuna.distributions.BaseDistribution) -> list[Any]:
    """Values that tell whether a distribution fits a setting's type: its ends, or every choice."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def parse_search(raw: Any, config_spaces: dict[str, dict[str, Any]], suite_seeds: list[int], file: str,
                 settings_of: Any, metric_names: list[str], primary: str | None, scales: list[str]) -> Search:
    """Validate the [search] table against every configuration. `settings_of(config, layer)` resolves a
    configuration with an extra layer at every scale (raising UsageError), `config_spaces` holds each
    configuration's own `search` table, and `metric_names` the metrics the first configuration uses."""
    if not isinstance(raw, dict):
        raise UsageError(f"{file}: search = {format_value(raw)}: expected a table [search]")
    unknown = [k for k in raw if k not in SearchTable.__dataclass_fields__]
    if unknown:  # before "trials is missing": a misspelt trials is an unknown key first
        allowed = list(SearchTable.__dataclass_fields__)
        raise UsageError(f"{file}: search.{unknown[0]}: unknown key{did_you_mean(unknown[0], allowed)}; "
                         f"allowed: {', '.join(allowed)}")
    if "trials" not in raw:
        raise UsageError(f"{file}: search.trials is missing: give the budget of trials per configuration, like trials = 20")
    table = parse(SearchTable, raw, f"{file}: search")
    if isinstance(table.trials, dict):
        for scale in table.trials:
            if scale not in scales:
                raise UsageError(f"{file}: search.trials.{scale}: no such scale{did_you_mean(scale, scales)}; "
                                 f"allowed: {', '.join(scales)}")
        if "default" not in table.trials:
            raise UsageError(f"{file}: search.trials = {format_value(table.trials)}: give a default entry, the budget "
                             "of every scale not named, like trials = { smoke = 3, default = 30 }")
    objective = _objective(table.objective, file, metric_names, primary)
    final = tuple(table.final_seeds if table.final_seeds is not None else suite_seeds)
    if not final:
        raise UsageError(f"{file}: search.final_seeds = []: give at least one seed to re-measure the best trial on")
    if len(set(final)) != len(final):
        raise UsageError(f"{file}: search.final_seeds = {format_value(list(final))}: seeds must be distinct")
    trial_seeds = [TRIAL_SEED_BASE + i for i in range(table.seeds_per_trial)]
    clash = sorted(set(final) & set(trial_seeds))
    if clash:
        raise UsageError(f"{file}: search.final_seeds (or suite.seeds) = {format_value(list(final))}: seed {clash[0]} "
                         f"also trains trials (seeds {trial_seeds[0]}-{trial_seeds[-1]}); the best trial must be "
                         f"re-measured on fresh seeds, below {TRIAL_SEED_BASE}")
    spaces = {}
    for config, own in config_spaces.items():
        merged: dict[str, tuple[Any, str]] = {k: (v, f"{file}: search.space") for k, v in table.space.items()}
        if own is not None:
            if not isinstance(own, dict):
                raise UsageError(f"{file}: {config}: search = {format_value(own)}: expected a table of setting "
                                 'keys, like search = { "optimizer.d.lr" = { log_uniform = [1e-4, 1e-3] } }')
            merged.update({k: (v, f"{file}: configs \"{config}\".search") for k, v in own.items()})
        if not merged:
            raise UsageError(f"{file}: search.space is empty for config \"{config}\": give at least one setting to "
                             'search, like "optimizer.d.lr" = { log_uniform = [1e-5, 1e-2] }')
        spaces[config] = {key: _checked(key, spec, where, config, settings_of) for key, (spec, where) in merged.items()}
    return Search(table, objective, final, spaces)


def _checked(key: str, spec: Any, where: str, config: str, settings_of: Any) -> optuna.distributions.BaseDistribution:
    dist = distribution(spec, f'{where}."{key}"')
    known = flat_values(settings_of(config, empty_layer()))
    _check_key(key, known, where)
    for value in _candidates(dist):
        try:
            settings_of(config, trial_layer({key: value}, known, where))
        except UsageError as exc:  # its message starts with the file again (once per nested layer): name it once
            file = where.split(": ", 1)[0]
            detail = str(exc).replace(f"{file}: ", "")
            raise UsageError(f'{where}."{key}" = {format_value(spec)}: the value {format_value(value)} does not fit '
                             f'config "{config}": {detail}') from None
    return dist


def _objective(raw: dict[str, Any], file: str, metric_names: list[str], primary: str | None) -> Objective:
    where = f"{file}: search.objective"
    allowed = ("key", "direction", "at")
    for k in raw:
        if k not in allowed:
            raise UsageError(f"{where}.{k}: unknown key{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")
    key = raw.get("key", primary)
    if key is None:
        chosen = [METRIC_PRIMARY[m] for m in METRIC_PRIMARY if m in metric_names]
        if not chosen:
            raise UsageError(f"{where}.key is missing, and none of the suite's metrics ({', '.join(metric_names) or 'none'}) "
                             f"records a built-in primary value; name the metric key to optimise, like key = \"class_fd\"")
        key = chosen[0]
    if not isinstance(key, str) or not key.strip():
        raise UsageError(f"{where}.key = {format_value(key)}: expected a metric key, like \"class_fd\"")
    direction = raw.get("direction", KNOWN_DIRECTIONS.get(key))
    if direction is None:
        raise UsageError(f'{where}.direction is missing: "{key}" is not a built-in metric key, so say whether lower '
                         'or higher is better: direction = "min" or "max"')
    if direction not in DIRECTIONS:
        raise UsageError(f"{where}.direction = {format_value(direction)}: expected \"min\" or \"max\""
                         f"{did_you_mean(str(direction), list(DIRECTIONS))}")
    if key in KNOWN_DIRECTIONS and direction != KNOWN_DIRECTIONS[key]:
        raise UsageError(f'{where}.direction = "{direction}": "{key}" is better when {KNOWN_DIRECTIONS[key]}imal; '
                         "leave direction out")
    at = raw.get("at", "last")
    if at not in AT:
        raise UsageError(f"{where}.at = {format_value(at)}: expected one of: {', '.join(AT)}{did_you_mean(str(at), AT)}")
    return Objective(key, direction, at)


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
