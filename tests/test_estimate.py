"""`ganbench estimate`: the work counters against independent references, the time model's
arithmetic, and a whole (tiny) suite estimated through the CLI."""
from __future__ import annotations

import json
import types

import pytest
import torch
import torchvision
from torch import nn

from ganbench.cli import main
from ganbench.estimate import due_points, eval_steps
from ganbench.workcount import Cost, DeviceModel, count
from ganbench.evaluation import is_due

RING_SUITE = """
[suite]
name = "tiny-ring"
question = "How long does it take?"
seeds = [0, 1]

[dataset]
name = "ring8"

[defaults]
architecture = { name = "mlp", width = 32, hidden_layers = 2 }
batch_size = 64
steps = 1000
log_every = 10
eval_every = 300
grid_size = 16
metrics = [{ name = "mixture-modes", samples = 500, every = 2 }]

[[configs]]
name = "vanilla"

[[configs]]
name = "wgan-gp"
loss = "wgan-gp"
"""


def test_flops_of_an_mlp_step_match_the_textbook_count():
    # Forward: 2*B*in*out per layer. Backward: as much again for the weight gradient, and again
    # for the input gradient of every layer but the first (its input needs no gradient).
    B, sizes = 32, [(10, 64), (64, 64), (64, 1)]
    net = nn.Sequential(nn.Linear(*sizes[0]), nn.ReLU(), nn.Linear(*sizes[1]), nn.ReLU(), nn.Linear(*sizes[2]))
    x = torch.randn(B, 10)
    cost = count(lambda: net(x).sum().backward())
    forward = sum(2 * B * i * o for i, o in sizes)
    expected = forward + forward + sum(2 * B * i * o for i, o in sizes[1:])
    assert cost.flops == expected
    assert cost.ops > 0


def test_inception_flops_match_torchvisions_published_operation_count(one_thread):
    # torchvision lists Inception-v3 at 5.713 G multiply-adds per 299x299 image; FLOPs count two each.
    weights = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    with torch.no_grad():
        flops = count(lambda: model(torch.zeros(1, 3, 299, 299))).flops
    assert flops / 2e9 == pytest.approx(weights.meta["_ops"], rel=0.01)


def test_memory_traffic_counts_inputs_and_outputs_but_not_views():
    a, b = torch.ones(1000), torch.ones(1000)
    assert count(lambda: a + b) == Cost(ops=1, flops=0, bytes=3 * 4000)
    assert count(lambda: a.view(10, 100)).bytes == 0


def test_the_time_model_overlaps_host_and_device_at_best_and_adds_them_at_worst():
    model = DeviceModel("test model", op_seconds=(1e-6, 2e-6), flops_per_second=(1e9, 5e8),
                        bytes_per_second=(1e9, 5e8), host_scale=(0.5, 1.0), launch_seconds=(0.0, 1e-6))
    cost = Cost(ops=1000, flops=2e6, bytes=1e6)  # device: 3 ms at best, 6 ms at worst
    assert model.seconds(cost) == pytest.approx((max(1e-3, 3e-3), 2e-3 + 6e-3))
    # With a measured host time of 10 ms: 5 ms at best; 10 ms + 1 ms of launches + 6 ms at worst.
    assert model.seconds(cost, host=10e-3) == pytest.approx((5e-3, 17e-3))


@pytest.mark.parametrize("steps, eval_every, every", [(1000, 300, 1), (1000, 300, 2), (3000, 500, 3), (50, 100, 4)])
def test_due_points_agree_with_the_evaluations_own_rule(steps, eval_every, every):
    run_double = types.SimpleNamespace(settings=types.SimpleNamespace(steps=steps, eval_every=eval_every))
    expected = [s for s in range(1, steps + 1) if (s % eval_every == 0 or s == steps) and is_due(run_double, s, every)]
    assert due_points(steps, eval_every, every) == len(expected)
    assert eval_steps(steps, eval_every)[-1] == steps


def test_estimate_of_a_suite_through_the_cli(write_suite, capsys, one_thread):
    path = write_suite(RING_SUITE)
    assert main(["estimate", str(path), "--steps", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suite"] == "tiny-ring" and result["seeds"] == 2 and result["scale"] == "default"
    by_name = {c["config"]: c for c in result["configs"]}
    assert set(by_name) == {"vanilla", "wgan-gp"}
    for c in by_name.values():
        assert c["steps"] == 1000 and c["profiled_steps"] == 10
        assert 0 < c["host_sec_per_step_here"] <= c["sec_per_step_here"]
        fast, slow = c["run_s_gpu"]
        assert 0 < fast <= slow
        modes = next(m for m in c["eval"] if m["metric"] == "mixture-modes")
        assert modes["points"] == 2  # eval points at 300, 600, 900, 1000; every 2nd, and the last
    # WGAN-GP: five critic updates and a gradient penalty per step; more work than vanilla.
    assert by_name["wgan-gp"]["ops_per_step"] > 3 * by_name["vanilla"]["ops_per_step"]
    assert by_name["wgan-gp"]["flops_per_step"] > 3 * by_name["vanilla"]["flops_per_step"]
    total = result["totals"]
    assert total["here_s"] == pytest.approx(2 * sum(c["run_s_here"] for c in by_name.values()) + total["once_here_s"])


def test_estimate_counts_fid_work_through_inception(tiny_suite, capsys, one_thread):
    path = tiny_suite('metrics = [{ name = "fid", kid_subsets = 2 }]\neval_samples = 20\nreal_samples = 30\n')
    assert main(["estimate", str(path), "--steps", "2", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["configs"][0]
    fid_work = next(m for m in config["eval"] if m["metric"] == "fid")
    assert fid_work["points"] == 1
    # 20 generated images per eval point, 30 real ones once, at about 11.4 GFLOP each.
    assert fid_work["per_point"]["flops"] / 20 == pytest.approx(fid_work["once"]["flops"] / 30, rel=0.01)
    assert 10e9 < fid_work["once"]["flops"] / 30 < 13e9
    assert fid_work["host_seconds_per_point"] > 0


def test_estimate_with_a_bad_step_count_is_one_clean_line(tiny_suite, capsys):
    assert main(["estimate", str(tiny_suite()), "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ganbench: error: --steps 0: must be 1 or more"


def test_foreach_optimizers_dispatch_fewer_operators_than_the_cpus_loop(write_suite, one_thread):
    path = write_suite(RING_SUITE)
    from ganbench.estimate import profile_steps
    from ganbench.workcount import calibrate
    from ganbench.suite import load_suite

    spec = load_suite(path).runs("default", ["vanilla"])[0]
    profile = profile_steps(spec, torch.device("cpu"), 5, path.parent / "profile", calibrate(torch.device("cpu")))
    assert profile.per_step.ops < profile.per_step_here.ops
    assert profile.per_step.flops == profile.per_step_here.flops
