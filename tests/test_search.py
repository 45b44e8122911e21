"""The [search] table without training: the space's validation, deterministic sampling, the budget,
and the expected best of n trials against brute force. Also the tiny search suite that
test_search_runs.py trains: ring8 with a 16-unit MLP, 20 steps, and a metric whose value is a known
function of the trial's D learning rate, so which trial is best (and which the median pruner stops)
does not depend on training noise or on the CPU's rounding."""
from __future__ import annotations

import textwrap
from pathlib import Path

METRIC_PLUGIN = '''
"""A test metric (Dodge et al. 2019 style check): the D learning rate's log-distance from 1e-3."""
import math
import ganbench


class LrDistance:
    name = "lr-distance"

    @ganbench.hookimpl
    def ganbench_evaluate(self, run, step, generator):
        lr = run.settings.optimizer_d.lr
        if lr >= 0.1:  # a setting whose runs crash (the space samples below it): its trials fail
            raise RuntimeError(f"lr {lr} is too large for this test metric")
        # Larger at the first eval point, so intermediate values differ from the final one.
        value = abs(math.log10(lr) + 3.0) * (1.0 + 10.0 / step)
        return ganbench.MetricValues(metric=self.name, values={"lr_distance": value},
                                     better={"lr_distance": "min"}, provenance={})


@ganbench.hookimpl
def ganbench_register_metrics():
    return [LrDistance]
'''

SUITE = '''
[suite]
name = "tiny-search"
question = "Which learning rate is closest to 1e-3?"
seeds = [0]
plugins = ["lr_metric.py"]

[dataset]
name = "ring8"

[defaults]
architecture = {{ name = "mlp", width = 16, hidden_layers = 1 }}
z_dim = 4
batch_size = 16
steps = {steps}
log_every = 10
eval_every = 10
grid_size = 16
metrics = ["lr-distance"]
detectors = []
diagnostics = false

[search]
trials = {trials}
seed = {seed}
sampler = "{sampler}"
heartbeat = {heartbeat}
objective = {{ key = "lr_distance", direction = "min" }}
{extra}
[search.space]
"optimizer.d.lr" = {{ log_uniform = [1e-5, 1e-1] }}
"optimizer.d.betas.0" = {{ uniform = [0.0, 0.9] }}

[[configs]]
name = "a"
{config_extra}
'''


def write_search_suite(folder: Path, trials: int = 3, seed: int = 0, sampler: str = "random", steps: int = 20,
                       heartbeat: int = 30, extra: str = "", config_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lr_metric.py").write_text(textwrap.dedent(METRIC_PLUGIN))
    path = folder / "search.toml"
    path.write_text(SUITE.format(trials=trials, seed=seed, sampler=sampler, steps=steps, heartbeat=heartbeat,
                                 extra=extra, config_extra=config_extra))
    return path


# ---------------------------------------------------------------------------------------------
# The space is validated: every mistake is one line naming the key, with a did-you-mean.

import itertools  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pytest  # noqa: E402

from ganbench.cli import main  # noqa: E402
from ganbench.errors import UsageError  # noqa: E402
from ganbench.report.budget import (expected_best, expected_best_without_replacement,  # noqa: E402
                                    ranking_changes, curve)
from ganbench.search_study import ask, open_storage, open_studies  # noqa: E402
from ganbench.suite import load_suite  # noqa: E402


def _with_space(tmp_path: Path, space: str, search_extra: str = "", config_extra: str = "") -> Path:
    path = write_search_suite(tmp_path, extra=search_extra, config_extra=config_extra)
    text = path.read_text()
    head, _, _ = text.partition("[search.space]")
    configs = text[text.index("[[configs]]"):]
    path.write_text(f"{head}[search.space]\n{space}\n\n{configs}")
    return path


BAD_SPACES = [
    ("unknown-key", '"optimizer.d.lrr" = { log_uniform = [1e-5, 1e-2] }', ['"optimizer.d.lrr"', 'did you mean "optimizer.d.lr"']),
    ("unknown-core-key", 'd_update = { choice = [1, 2] }', ['"d_update"', 'did you mean "d_updates"']),
    ("empty-range", '"optimizer.d.lr" = { log_uniform = [1e-2, 1e-5] }', ["the range is empty"]),
    ("log-at-zero", '"optimizer.d.lr" = { log_uniform = [0.0, 1e-2] }', ["must be above 0"]),
    ("float-for-int", 'd_updates = { uniform = [1, 5] }', ['"d_updates"', "does not fit", "integer"]),
    ("string-for-float", '"optimizer.d.lr" = { choice = ["fast", "slow"] }', ['"optimizer.d.lr"', "does not fit"]),
    ("out-of-type-range", '"optimizer.d.betas.0" = { uniform = [0.0, 1.5] }', ['"optimizer.d.betas.0"', "does not fit", "1.5"]),
    ("index-out-of-range", '"optimizer.d.betas.2" = { uniform = [0.0, 0.5] }', ["index 2 is out of range"]),
    ("list-without-index", '"optimizer.d.betas" = { uniform = [0.0, 0.5] }', ['vary one element', '"optimizer.d.betas.0"']),
    ("unknown-distribution", '"optimizer.d.lr" = { loguniform = [1e-5, 1e-2] }', ["unknown distribution", 'did you mean "log_uniform"']),
    ("two-distributions", '"optimizer.d.lr" = { uniform = [0.1, 0.2], choice = [1] }', ["expected one distribution"]),
    ("empty-choice", 'd_updates = { choice = [] }', ["non-empty list"]),
    ("bad-plugin-choice", 'loss = { choice = ["bce", "hinj"] }', ['"loss"', "does not fit", 'did you mean "hinge"']),
]


@pytest.mark.parametrize("space, expected", [c[1:] for c in BAD_SPACES], ids=[c[0] for c in BAD_SPACES])
def test_a_bad_space_is_one_line(tmp_path, space, expected):
    path = _with_space(tmp_path, space)
    with pytest.raises(UsageError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for part in expected:
        assert part in message, message


BAD_TABLES = [
    ("unknown-search-key", "trails = 3\n", ["search.trails", 'did you mean "trials"']),
    ("unknown-sampler", "", ["sampler"], 'sampler = "random"', 'sampler = "grid"'),
    ("unknown-pruner", 'pruner = "medain"\n', ["search.pruner", "median"]),
    ("objective-direction", "", ["direction", "min"], 'direction = "min"', 'direction = "up"'),
    ("final-seeds-reuse-trial-seeds", "final_seeds = [1000]\n", ["seed 1000 also trains trials", "fresh seeds"]),
    ("trials-unknown-scale", "", ["search.trials.smok", 'did you mean "smoke"'], "trials = 3", "trials = { smok = 2, default = 3 }"),
    ("trials-without-default", "", ["give a default entry"], "trials = 3", "trials = { smoke = 2 }"),
]


@pytest.mark.parametrize("extra, expected, old, new", [(c[1], c[2], *(c[3:] or ("", ""))) for c in BAD_TABLES],
                         ids=[c[0] for c in BAD_TABLES])
def test_a_bad_search_table_is_one_line(tmp_path, extra, expected, old, new):
    path = write_search_suite(tmp_path, extra=extra)
    if old:
        path.write_text(path.read_text().replace(old, new))
    with pytest.raises(UsageError) as caught:
        load_suite(path)
    for part in expected:
        assert part in str(caught.value), str(caught.value)


def test_a_config_narrows_and_extends_the_space(tmp_path):
    path = write_search_suite(tmp_path, config_extra='search = { "optimizer.d.lr" = { log_uniform = [1e-4, 1e-3] }, '
                                                      'd_updates = { choice = [1, 2] } }')
    search = load_suite(path).search
    space = search.spaces["a"]
    assert (space["optimizer.d.lr"].low, space["optimizer.d.lr"].high) == (1e-4, 1e-3)
    assert space["d_updates"].choices == (1, 2)
    assert "optimizer.d.betas.0" in space


def test_the_budget_may_depend_on_the_scale(tmp_path):
    path = write_search_suite(tmp_path)
    path.write_text(path.read_text().replace("trials = 3", "trials = { smoke = 2, default = 5 }"))
    search = load_suite(path).search
    assert (search.trials("smoke"), search.trials("default"), search.trials("paper")) == (2, 5, 5)


def test_a_config_search_needs_a_search_table(tmp_path):
    path = write_search_suite(tmp_path, config_extra='search = { d_updates = { choice = [1, 2] } }')
    text = path.read_text()
    start, end = text.index("[search]"), text.index("[[configs]]")
    path.write_text(text[:start] + text[end:])
    with pytest.raises(UsageError, match="needs a \\[search\\] table"):
        load_suite(path)


def test_a_misspelt_trials_is_an_unknown_key_not_a_missing_one(tmp_path):
    path = write_search_suite(tmp_path)
    path.write_text(path.read_text().replace("trials = 3", "trails = 3"))
    with pytest.raises(UsageError, match='search.trails: unknown key \\(did you mean "trials"'):
        load_suite(path)


def test_a_value_that_does_not_fit_names_the_file_once(tmp_path):
    path = _with_space(tmp_path, '"optimizer.d.betas.0" = { uniform = [0.0, 1.5] }')
    with pytest.raises(UsageError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert "the value 1.5 does not fit" in message and "less than or equal to 1" in message
    assert message.count(str(path)) == 1, message


def test_a_search_without_optuna_names_the_extra(tmp_path, monkeypatch):
    import builtins
    import sys

    path = write_search_suite(tmp_path)
    real_import = builtins.__import__

    def without_optuna(name, *args, **kwargs):  # a double for an install without the [search] extra
        if name == "optuna" or name.startswith("optuna."):
            raise ModuleNotFoundError(f"No module named {name!r}", name="optuna")
        return real_import(name, *args, **kwargs)

    for module in [m for m in sys.modules if m.startswith(("optuna", "ganbench.search"))]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", without_optuna)
    with pytest.raises(UsageError, match=r"pip install 'ganbench\[search\]'"):
        load_suite(path)


def test_validate_counts_the_trial_runs(tmp_path, capsys):
    path = write_search_suite(tmp_path, trials=3)
    assert main(["validate", str(path)]) == 0
    search = load_suite(path).search
    configs = len(load_suite(path).configs)
    out = capsys.readouterr().out
    assert f"{3 * len(search.trial_seeds) * configs} trial runs + {len(search.final_seeds) * configs} final runs" in out


def test_the_cli_exits_2_on_a_bad_space(tmp_path, capsys):
    path = _with_space(tmp_path, '"optimizer.d.lrr" = { log_uniform = [1e-5, 1e-2] }')
    assert main(["validate", str(path)]) == 2
    assert 'did you mean "optimizer.d.lr"' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Sampling is deterministic for a sampler seed, also across a resume.

def _sample(suite_path: Path, db: Path, count: int, resume_after: int | None = None) -> list[dict]:
    params = []
    suite = load_suite(suite_path)
    for chunk in ([count] if resume_after is None else [resume_after, count - resume_after]):
        storage = open_storage(f"sqlite:///{db}", 30)  # a new process, as after a resume
        (entry,) = open_studies(suite, "default", None, storage)
        for _ in range(chunk):
            trial = ask(suite, "default", entry)
            params.append(trial.trial.params)
            # A value that depends on the params, so TPE's later draws depend on the earlier ones.
            entry.study.tell(trial.trial, abs(math.log10(trial.trial.params["optimizer.d.lr"]) + 3))
    return params


# TPE draws its first 10 trials at random (Optuna's n_startup_trials), then from its model of the values.
@pytest.mark.parametrize("sampler, count", [("random", 6), ("tpe", 12)])
def test_sampling_is_deterministic_for_a_seed(tmp_path, sampler, count):
    first = _sample(write_search_suite(tmp_path / "one", trials=count, sampler=sampler), tmp_path / "1.db", count)
    again = _sample(write_search_suite(tmp_path / "two", trials=count, sampler=sampler), tmp_path / "2.db", count,
                    resume_after=count - 2)
    other = _sample(write_search_suite(tmp_path / "three", trials=count, seed=7, sampler=sampler), tmp_path / "3.db", 2)
    assert first == again
    assert first[:2] != other
    assert len({p["optimizer.d.lr"] for p in first}) == count  # no draw repeated within a study


def test_trial_runs_carry_the_trial_and_its_values(tmp_path):
    suite = load_suite(write_search_suite(tmp_path, trials=2))
    (entry,) = open_studies(suite, "default", None, open_storage(f"sqlite:///{tmp_path / 's.db'}", 30))
    trial = ask(suite, "default", entry)
    (spec,) = trial.specs
    params = trial.trial.params
    assert spec.seed == 1000
    assert spec.settings.optimizer_d.lr == params["optimizer.d.lr"]
    assert spec.settings.optimizer_d.betas == (params["optimizer.d.betas.0"], 0.999)
    resolved = spec.resolved()
    assert resolved["search"] == {"study": "tiny-search/a@default", "trial": 0, "params": params}
    assert trial.trial.user_attrs["run_ids"] == [spec.run_id]


def test_the_budget_is_never_exceeded(tmp_path):
    suite = load_suite(write_search_suite(tmp_path, trials=2))
    (entry,) = open_studies(suite, "default", None, open_storage(f"sqlite:///{tmp_path / 's.db'}", 30))
    asked = [ask(suite, "default", entry) for _ in range(3)]
    assert [a is None for a in asked] == [False, False, True]
    assert entry.done


# ---------------------------------------------------------------------------------------------
# The expected best of n trials equals a brute-force enumeration.

@pytest.mark.parametrize("direction", ["min", "max"])
def test_expected_best_equals_brute_force(direction):
    values = [3.0, 1.0, 4.0, 1.5, 9.0]
    pick = min if direction == "min" else max
    for n in range(1, 5):
        draws = [pick(d) for d in itertools.product(values, repeat=n)]  # every ordered draw, equally likely
        mean, std = expected_best(values, n, direction)
        assert mean == pytest.approx(np.mean(draws), rel=1e-12)
        assert std == pytest.approx(np.std(draws), rel=1e-9)
        distinct = [pick(c) for c in itertools.combinations(values, n)]
        assert expected_best_without_replacement(values, n, direction) == pytest.approx(np.mean(distinct), rel=1e-12)


def test_expected_best_limits():
    values = [2.0, 5.0, 7.0]
    assert expected_best(values, 1, "max")[0] == pytest.approx(np.mean(values))
    assert expected_best(values, 200, "max")[0] == pytest.approx(7.0)
    assert expected_best(values, 200, "min")[0] == pytest.approx(2.0)
    assert expected_best_without_replacement(values, 3, "min") == 2.0


def test_ranking_changes_with_the_budget():
    # "steady" is good on average; "spiky" is usually bad but its best trial is the best of all.
    curves = {"steady": curve([5.0, 5.1, 5.2, 5.3], "min", 4), "spiky": curve([1.0, 9.0, 9.5, 9.8], "min", 4)}
    changes, orders = ranking_changes(curves, "min")
    assert changes
    assert orders[1] == ["steady", "spiky"] and orders[4] == ["spiky", "steady"]
    same = {"x": curve([1.0, 2.0], "min"), "y": curve([3.0, 4.0], "min")}
    assert ranking_changes(same, "min") == (False, {1: ["x", "y"], 2: ["x", "y"]})


def test_a_storage_whose_tables_another_program_created_at_once_is_opened(tmp_path, monkeypatch):
    # optuna-dashboard or a script opening a new SQLite file at the moment a worker does, without
    # ganbench's lock, makes the worker's table creation fail with "already exists" (seen in CI, from a
    # test's poller). The worker tries again and finds the tables. The double below raises that error
    # once (plumbing only); the second call opens the real file.
    real, calls = optuna.storages.RDBStorage, []

    def racing_storage(url, **kwargs):  # test double: the first call loses the race
        calls.append(url)
        if len(calls) == 1:
            real(url, **kwargs)  # the other program's creation
            raise RuntimeError("(sqlite3.OperationalError) table studies already exists")
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing_storage)
    storage = open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    monkeypatch.undo()
    assert len(calls) == 2 and optuna.create_study(study_name="s", storage=storage).study_name == "s"
