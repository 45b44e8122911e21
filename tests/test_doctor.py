"""`ganbench doctor`: each check catches a deliberately broken test-double plugin, and passes the built-ins.

The test doubles below are plugins of this very file: the suites the tests write name it in their
`plugins` list. Budgets are cut with check parameters so each test takes a few seconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import ganbench
from ganbench.cli import main
from ganbench.doctor import run_doctor
from ganbench.suite import load_suite

CPU = torch.device("cpu")
THIS = Path(__file__).resolve()
# Small budgets: enough for a working network to learn the test-double images.
QUICK = {"d-classifier": {"steps": 60, "batch_size": 32, "held_out": 200},
         "output-range": {"steps": 5, "samples": 128},
         "batchnorm": {"steps": 5, "samples": 64},
         "size-speed": {"warmup": 1, "timed": 2}}


# --------------------------------------------------------------------------------------------------
# Test doubles: one sound architecture and dataset, and one broken in each way a check must catch
# --------------------------------------------------------------------------------------------------


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@dataclass(frozen=True)
class DoubleParams:
    width: ganbench.PositiveInt = 64  # hidden units


class SoundDouble:
    """Test double: a small fully connected G (tanh output) and D that work."""

    name = "test-double-sound"
    params = DoubleParams

    def __init__(self, params: DoubleParams) -> None:
        self.p = params

    def generator_tail(self, n_out: int) -> list[nn.Module]:
        return [nn.Linear(self.p.width, n_out), nn.Tanh()]

    def discriminator(self, n_in: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, self.p.width), nn.LeakyReLU(0.2),
                             nn.Linear(self.p.width, 1), nn.Flatten(0))

    def generator_head(self, z_dim: int) -> list[nn.Module]:
        return [nn.Linear(z_dim, self.p.width), nn.ReLU()]

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        shape = run.data.shape
        n = int(torch.tensor(shape).prod())
        g = nn.Sequential(*self.generator_head(run.settings.z_dim), *self.generator_tail(n), nn.Unflatten(1, shape))
        return ganbench.Models(generator=g, discriminator=self.discriminator(n))


class ZeroedDDouble(SoundDouble):
    """Test double: D's hidden features are multiplied by 0, so D cannot learn anything."""

    name = "test-double-zeroed-d"

    def discriminator(self, n_in: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, self.p.width), nn.LeakyReLU(0.2), Scale(0.0),
                             nn.Linear(self.p.width, 1), nn.Flatten(0))


class SigmoidGDouble(SoundDouble):
    """Test double: G ends in a sigmoid ([0, 1]) while the data is in [-1, 1]."""

    name = "test-double-sigmoid-g"

    def generator_tail(self, n_out: int) -> list[nn.Module]:
        return [nn.Linear(self.p.width, n_out), nn.Sigmoid()]


class DeadLayerDouble(SoundDouble):
    """Test double: G's first layer feeds a ReLU with all-negative inputs, so it and its ReLU are dead."""

    name = "test-double-dead-layer"

    def generator_head(self, z_dim: int) -> list[nn.Module]:
        first = nn.Linear(z_dim, self.p.width)
        nn.init.zeros_(first.weight)
        nn.init.constant_(first.bias, -1.0)
        return [first, nn.ReLU()]


def squares(n: int = 1200) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded 28x28 images of 10 classes in [-1, 1]: a bright bar whose place is the class."""
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    x = -0.9 + 0.1 * torch.randn((n, 1, 28, 28), generator=rng)
    for k in range(10):
        row, col = 3 + 12 * (k // 5), 1 + 5 * (k % 5)
        x[labels == k, :, row:row + 8, col:col + 4] += 1.6
    return x.clamp(-1, 1), labels


class SquaresDouble:
    """Test double: 1,200 28x28 images of 10 classes, in [-1, 1] as ganbench.Data promises."""

    name = "test-double-squares"
    params = None

    def info(self) -> ganbench.DataInfo:
        return ganbench.DataInfo("image", (1, 28, 28), 10)

    def load(self, device: torch.device | str) -> ganbench.TensorData:
        x, y = squares()
        return ganbench.TensorData(x, y, kind="image", num_classes=10).to(device)


class RawPixelsDouble(SquaresDouble):
    """Test double: the same images left in [0, 255] floats (never normalised)."""

    name = "test-double-raw-pixels"

    def load(self, device: torch.device | str) -> ganbench.TensorData:
        x, y = squares()
        return ganbench.TensorData((x + 1) * 127.5, y, kind="image", num_classes=10).to(device)


class UnitImagesDouble(SquaresDouble):
    """Test double: the same images in [0, 1], declared so (`value_range`), for a tanh G to meet."""

    name = "test-double-unit-images"

    def load(self, device: torch.device | str) -> ganbench.TensorData:
        x, y = squares()
        data = ganbench.TensorData((x + 1) / 2, y, kind="image", num_classes=10).to(device)
        data.value_range = (0.0, 1.0)
        return data


@ganbench.hookimpl
def ganbench_register_architectures():
    return [SoundDouble, ZeroedDDouble, SigmoidGDouble, DeadLayerDouble]


@ganbench.hookimpl
def ganbench_register_datasets():
    return [SquaresDouble, RawPixelsDouble, UnitImagesDouble]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def suite_file(tmp_path: Path, architecture: str = "test-double-sound", dataset: str = "test-double-squares",
               configs: str = '[[configs]]\nname = "base"\n', extra: str = "") -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(f"""
[suite]
name = "doctor-test"
question = "Are the test doubles caught?"
plugins = ["{THIS}"]

[dataset]
name = "{dataset}"

[defaults]
architecture = {architecture if architecture.startswith("{") else '"' + architecture + '"'}
z_dim = 8
batch_size = 32
steps = 100
metrics = []
detectors = []
{extra}
{configs}
""")
    return path


def doctor(tmp_path: Path, checks: list[str], params: dict | None = None,
           **suite: str) -> dict[str, ganbench.CheckResult]:
    loaded = load_suite(suite_file(tmp_path, **suite))
    chosen = {k: v for k, v in {**QUICK, **(params or {})}.items() if k in checks}
    reports = run_doctor(loaded, "default", CPU, names=checks, params=chosen)
    assert len(reports) == 1
    return {f.check: f.result for f in reports[0].findings}


# --------------------------------------------------------------------------------------------------
# Each check against the double it must catch, and the sound double it must pass
# --------------------------------------------------------------------------------------------------


def test_sound_double_passes_every_check(tmp_path):
    results = doctor(tmp_path, list(QUICK) + ["gradient-flow"])
    assert {name: r.status for name, r in results.items()} == {name: "ok" for name in results}, results
    assert set(results) == {*QUICK, "gradient-flow"}


def test_classifier_check_fails_a_d_that_cannot_learn(tmp_path):
    result = doctor(tmp_path, ["d-classifier"], architecture="test-double-zeroed-d")["d-classifier"]
    assert result.status == "fail", result
    values = result.values["10 classes"]
    assert values["d_accuracy"] < 0.3 and values["reference_accuracy"] > 0.8


def test_output_range_fails_a_sigmoid_against_signed_data(tmp_path):
    result = doctor(tmp_path, ["output-range"], architecture="test-double-sigmoid-g")["output-range"]
    assert result.status == "fail" and "Sigmoid" in result.suggestion, result
    assert result.values["reach"] == (0.0, 1.0)


def test_output_range_fails_unnormalised_data(tmp_path):
    result = doctor(tmp_path, ["output-range"], dataset="test-double-raw-pixels")["output-range"]
    assert result.status == "fail" and "normalise" in result.suggestion, result
    assert result.values["data"][1] > 200


def test_output_range_warns_tanh_against_unit_range_data(tmp_path):
    result = doctor(tmp_path, ["output-range"], dataset="test-double-unit-images")["output-range"]
    assert result.status == "warn" and result.values["coverage"] < 0.6, result


def test_gradient_flow_fails_a_dead_layer(tmp_path):
    result = doctor(tmp_path, ["gradient-flow"], architecture="test-double-dead-layer")["gradient-flow"]
    assert result.status == "fail", result
    assert "0.weight" in result.values["G"]["zero"] and result.values["G"]["dead_relu"]["1"] == 1.0


def test_gradient_flow_fails_a_zeroed_d(tmp_path):
    result = doctor(tmp_path, ["gradient-flow"], architecture="test-double-zeroed-d")["gradient-flow"]
    assert result.status == "fail" and "1.weight" in result.values["D"]["zero"], result


def test_batchnorm_check_warns_combined_batches_with_a_batchnorm_d(tmp_path):
    configs = '[[configs]]\nname = "separate"\n\n[[configs]]\nname = "together"\nd_batch = "combined"\n'
    result = doctor(tmp_path, ["batchnorm"], architecture='{ name = "dcgan", width = 4 }',
                    configs=configs)["batchnorm"]
    assert result.status == "warn" and result.values["combined_configs"] == ["together"], result


def test_builtin_dcgan_on_mnist5k_passes(tmp_path):
    checks = ["d-classifier", "output-range", "gradient-flow", "batchnorm"]
    results = doctor(tmp_path, checks, architecture='{ name = "dcgan", width = 8 }', dataset="mnist5k")
    assert all(r.status != "fail" for r in results.values()), results
    assert results["d-classifier"].status == "ok" and results["output-range"].status == "ok"


def test_builtin_mlp_on_ring8_passes(tmp_path):
    checks = ["d-classifier", "output-range", "gradient-flow"]
    # an MLP D with dropout needs the default 200 steps (60 reach about half the reference's accuracy)
    results = doctor(tmp_path, checks, {"d-classifier": {"steps": 200, "held_out": 200}},
                     architecture='{ name = "mlp", width = 32 }', dataset="ring8")
    assert all(r.status != "fail" for r in results.values()), results
    assert results["d-classifier"].values["8 classes"]["d_accuracy"] > 0.8


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def test_cli_exit_codes_and_json(tmp_path, capsys):
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = suite_file(tmp_path / "good")
    assert main(["doctor", str(good), "--checks", "gradient-flow", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 0 and out["subjects"][0]["checks"][0]["status"] == "ok"

    bad = suite_file(tmp_path / "bad", architecture="test-double-dead-layer")
    assert main(["doctor", str(bad), "--checks", "gradient-flow"]) == 1
    assert "✗" in capsys.readouterr().out

    assert main(["doctor", str(good), "--checks", "no-such-check"]) == 2
    assert 'unknown check' in capsys.readouterr().err
    assert main(["doctor", str(tmp_path / "missing.toml")]) == 2


def test_cli_only_checks_the_named_configs(tmp_path, capsys):
    configs = ('[[configs]]\nname = "sound"\n\n[[configs]]\nname = "dead"\n'
               'architecture = "test-double-dead-layer"\n')
    path = suite_file(tmp_path, configs=configs)
    assert main(["doctor", str(path), "--checks", "gradient-flow", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [s["configs"] for s in out["subjects"]] == [["sound"], ["dead"]]
    assert main(["doctor", str(path), "--checks", "gradient-flow", "--json", "--only", "sound"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["configs"] for s in out["subjects"]] == [["sound"]]
    assert main(["doctor", str(path), "--only", "nope"]) == 2
