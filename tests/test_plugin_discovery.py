"""Plugins come from the built-ins, installed packages' `ganbench` entry points, and suite files."""
from __future__ import annotations

import importlib
import json
import re
import textwrap
from pathlib import Path

import pytest

from ganbench.cli import main
from ganbench.errors import UsageError
from ganbench.registry import Registry
from ganbench.suite import load_suite
from ganbench.trainer import execute

SECTION_5 = {
    "architecture": {"mlp", "dcgan"},
    "loss": {"bce", "minimax", "lsgan", "hinge", "wgan", "wgan-gp"},
    "trick": {"one-sided-label-smoothing", "two-sided-label-smoothing", "noisy-labels", "instance-noise",
              "spectral-norm", "ttur", "ema"},
    "latent": {"gaussian", "uniform"},
    "dataset": {"mnist5k", "ring8", "grid25", "mnist", "fashion-mnist", "cifar10", "celeba", "image-folder"},
}

TRICK_FILE = '''
"""Gradient-noise-free test trick: counts its calls into run.extras (a real plugin, written by a user)."""
from dataclasses import dataclass
import ganbench

@dataclass(frozen=True)
class Params:
    scale: float = 1.0  # multiply D's real inputs by this

class ScaleReal:
    """Scales D's real inputs."""
    name = "{name}"
    params = Params

    def __init__(self, params):
        self.p = params

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, run, batch):
        run.extras["{name}-calls"] = run.extras.get("{name}-calls", 0) + 1
        batch.real = batch.real * self.p.scale

    @ganbench.hookimpl
    def ganbench_run_end(self, run):
        (run.dir / "{name}.txt").write_text(str(run.extras["{name}-calls"]))

@ganbench.hookimpl
def ganbench_register_tricks():
    return [ScaleReal]
'''


def install_entry_point_package(root: Path, dist: str, module: str, source: str) -> None:
    """A real installed distribution (dist-info with entry_points.txt) on a sys.path folder."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[ganbench]\nmy-trick = {module}\n")


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    install_entry_point_package(site, "ganbench-scale-real", "ganbench_scale_real", TRICK_FILE.format(name="scale-real"))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def test_builtins_come_through_the_entry_point_group():
    registry = Registry()
    for kind, names in SECTION_5.items():
        assert names <= set(registry.names(kind)), (kind, names - set(registry.names(kind)))
    assert registry.table["loss"]["bce"].source.startswith("ganbench 0.1.0 (ganbench_plugins.losses.bce)")


def test_an_installed_package_entry_point_is_discovered(third_party):
    entry = Registry().table["trick"]["scale-real"]
    assert entry.source == "ganbench-scale-real 0.3 (ganbench_scale_real)"
    assert [p.name for p in entry.params] == ["scale"]
    assert entry.params[0].help == "multiply D's real inputs by this"


def test_a_file_named_in_a_suite_is_loaded_and_registered_for_its_run_only(tiny_suite, tmp_path):
    (tmp_path / "my_trick.py").write_text(TRICK_FILE.format(name="scale-real"))
    path = tiny_suite('tricks = [{ name = "scale-real", scale = 0.5 }]\n[[configs]]\nname = "b"\n')
    text = path.read_text().replace('seeds = [0]', 'seeds = [0]\nplugins = ["./my_trick.py"]')
    path.write_text(text)
    suite = load_suite(path)
    entry = suite.registry.table["trick"]["scale-real"]
    assert entry.source == f"file {tmp_path / 'my_trick.py'}"
    with_trick, without = suite.runs("default")
    execute(with_trick, tmp_path / "a", device_cpu())
    execute(without, tmp_path / "b", device_cpu())
    # 2 steps x (1 D update + 1 G update) = 4 calls, in the run that named it, and none elsewhere
    assert (tmp_path / "a" / "scale-real.txt").read_text() == "4"
    assert not (tmp_path / "b" / "scale-real.txt").exists()


def device_cpu():
    import torch

    return torch.device("cpu")


def test_duplicate_names_are_an_error_naming_both_sources(third_party, tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(TRICK_FILE.format(name="scale-real"))
    with pytest.raises(UsageError) as info:
        Registry([clash])
    message = str(info.value)
    assert 'duplicate trick name "scale-real"' in message
    assert "ganbench-scale-real 0.3 (ganbench_scale_real)" in message and f"file {clash}" in message


def test_a_file_may_not_shadow_a_builtin(tmp_path):
    clash = tmp_path / "ema.py"
    clash.write_text(TRICK_FILE.format(name="ema"))
    with pytest.raises(UsageError, match=r'duplicate trick name "ema": defined by ganbench 0.1.0 .* and by file'):
        Registry([clash])


def test_misspelt_hook_is_refused_with_a_suggestion(tmp_path):
    bad = tmp_path / "typo.py"
    bad.write_text(TRICK_FILE.format(name="typo").replace("def ganbench_discriminator_inputs",
                                                          "def ganbench_discrimnator_inputs"))
    with pytest.raises(UsageError, match='defines ganbench_discrimnator_inputs, which is not a ganbench hook '
                                         r'\(did you mean "ganbench_discriminator_inputs"\?\)'):
        Registry([bad])


def test_hook_without_marker_is_refused(tmp_path):
    bad = tmp_path / "unmarked.py"
    bad.write_text(TRICK_FILE.format(name="unmarked").replace(
        "    @ganbench.hookimpl\n    def ganbench_run_end", "    def ganbench_run_end"))
    with pytest.raises(UsageError, match="without @ganbench.hookimpl"):
        Registry([bad])


def test_wrong_hook_argument_is_refused(tmp_path):
    bad = tmp_path / "badarg.py"
    bad.write_text(TRICK_FILE.format(name="badarg").replace("(self, run, batch)", "(self, run, btch)"))
    with pytest.raises(UsageError, match="btch"):
        Registry([bad])


def test_plugins_json_lists_everything_with_the_documented_keys(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert all({"kind", "name", "source", "params"} <= set(item) for item in listing)
    for kind, names in SECTION_5.items():
        assert names <= {i["name"] for i in listing if i["kind"] == kind}
    smoothing = next(i for i in listing if i["name"] == "one-sided-label-smoothing")
    assert smoothing["params"] == [{"name": "real", "type": "float (>= 0.0, <= 1.0)", "default": 0.9,
                                    "help": smoothing["params"][0]["help"]}]
    assert smoothing["params"][0]["help"]
    assert all(p["help"] for item in listing for p in item["params"]), "every parameter has a description"


def test_plugins_table_prints(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for names in SECTION_5.values():
        for name in names:
            assert name in out


def test_plugins_show_the_source_paper(capsys, tmp_path):
    assert main(["plugins", "--json"]) == 0
    listing = {(i["kind"], i["name"]): i for i in json.loads(capsys.readouterr().out)}
    # from the module docstring's first parenthesis with a year
    assert listing["trick", "unrolled"]["paper"].startswith("Metz et al. 2017")
    # a module of several datasets names each one's own paper
    assert listing["dataset", "cifar10"]["paper"].startswith("Krizhevsky 2009")
    assert listing["dataset", "mnist"]["paper"].startswith("LeCun et al. 1998")
    plugin = tmp_path / "cited.py"
    plugin.write_text('"""A made-up trick, in the spirit of Nobody & Somebody 2031."""\nimport ganbench\n\n'
                      'class Cited:\n    """A trick."""\n    name = "cited"\n    params = None\n\n'
                      '@ganbench.hookimpl\ndef ganbench_register_tricks():\n    return [Cited]\n')
    entry = Registry([plugin]).get("trick", "cited", "test")
    assert entry.paper == "Nobody & Somebody 2031"
    assert main(["plugins"]) == 0
    assert "paper: Metz et al. 2017" in capsys.readouterr().out


LOSS_PLUGIN = '''"""A relativistic loss, for the registry's checks."""
import ganbench

class Ragan:
    """RaGAN."""
    name = "ragan"
    params = None
{attrs}

@ganbench.hookimpl
def ganbench_register_losses():
    return [Ragan]
'''


@pytest.mark.parametrize("attrs, message", [
    ('    uses_targets = True\n    scores = "relativistc"',
     'loss "ragan": scores = \'relativistc\': unknown kind (did you mean "relativistic"?); allowed: logit, '),
    ('    scores = "relativistic"', 'loss "ragan": uses_targets = None: set it to True when the loss reads'),
])
def test_a_loss_must_say_what_its_scores_mean_and_whether_it_reads_targets(tmp_path, attrs, message):
    plugin = tmp_path / f"ragan_{len(attrs)}.py"
    plugin.write_text(LOSS_PLUGIN.format(attrs=attrs))
    with pytest.raises(UsageError, match=re.escape(message)):
        Registry([plugin])


def test_label_smoothing_names_an_installed_third_party_target_loss(tmp_path, tiny_suite):
    plugin = tmp_path / "ragan_ok.py"
    plugin.write_text(LOSS_PLUGIN.format(attrs='    uses_targets = True\n    scores = "relativistic"'))
    path = tiny_suite('loss = "wgan"\ntricks = ["one-sided-label-smoothing"]')
    path.write_text(path.read_text().replace('seeds = [0]', f'seeds = [0]\nplugins = ["{plugin}"]'))
    with pytest.raises(UsageError, match=r"use a loss that does: bce, dragan, lsgan, minimax, ragan$"):
        load_suite(path)
