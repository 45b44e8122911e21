"""The tricks of issue 6: conditional GAN, minibatch discrimination and std, unrolled G loss, the
balancing tricks, R1, DiffAugment and unit-range data. Each is checked against a value computed
another way, and trains a step through the real trainer (tiny: batch 8, width 8, CPU)."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganbench
from ganbench.evaluation import generate
from ganbench.registry import new_plugin_manager
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import build_run, train
from ganbench_plugins.architectures import dcgan, mlp
from ganbench_plugins.losses import bce, wgan, wgan_gp
from ganbench_plugins.tricks import (
    adaptive_ratio,
    conditional,
    d_lr_decay,
    diff_augment,
    lr_decay,
    minibatch_discrimination,
    minibatch_std,
    r1,
    unit_range,
    unrolled,
)

CPU = torch.device("cpu")
MODULES = [conditional, minibatch_discrimination, minibatch_std, unrolled, adaptive_ratio, d_lr_decay, lr_decay, r1,
           diff_augment, unit_range]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_run(tiny_suite, tmp_path):
    """tiny_run(config_lines) -> a built 2-step mnist5k run (dcgan width 8, batch 8)."""

    def make(extra: str = "") -> ganbench.Run:
        spec = load_suite(tiny_suite(extra)).runs("default")[0]
        return build_run(spec, tmp_path / "run", CPU)

    return make


def setup_double(loss=bce.BCE, arch=dcgan.DCGAN, num_classes=10, kind="image", shape=(1, 28, 28), params=None,
                 g_updates=1):
    return SimpleNamespace(
        loss=SimpleNamespace(name=loss.name, cls=loss),
        architecture=SimpleNamespace(name=arch.name, cls=arch, params=params or arch.params()),
        data=ganbench.DataInfo(kind, shape, num_classes),
        g_updates=g_updates,
    )


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_registers_one_documented_trick(module: ModuleType) -> None:
    pm = new_plugin_manager()
    pm.register(module)
    ((cls,),) = pm.hook.ganbench_register_tricks()
    assert cls.name == module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    assert module.__doc__ and "20" in module.__doc__.splitlines()[0]  # cites its source, with a year
    new_plugin_manager().register(cls(cls.params()) if cls.params else cls())


# --------------------------------------------------------------------------------------------------
# Conditional GAN
# --------------------------------------------------------------------------------------------------


def test_conditional_refuses_data_without_classes() -> None:
    reason = conditional.Conditional.check(conditional.Params(), setup_double(num_classes=None))
    assert isinstance(reason, str) and "labelled" in reason and "\n" not in reason
    assert conditional.Conditional.check(conditional.Params(), setup_double()) is None


def test_conditional_models_depend_on_the_label(tiny_run) -> None:
    run = tiny_run('tricks = ["conditional"]')
    G, D = run.models.generator, run.models.discriminator
    G.eval(), D.eval()
    z = torch.randn(4, run.settings.z_dim)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        x = G(z, zeros)
        assert x.shape == (4, 1, 28, 28)
        assert not torch.allclose(x, G(z, ones))
        assert not torch.allclose(D(x, zeros), D(x, ones))
        # The projection term is exactly <E_D[y], features(x)>.
        h = D.features(x).flatten(1)
        assert torch.allclose(D(x, ones) - D(x, zeros), (h * (D.embedding.weight[1] - D.embedding.weight[0])).sum(1),
                              atol=1e-5)
    labels = run.hook.ganbench_sample_labels(run=run, n=1000)
    assert labels.dtype == torch.long and labels.min() == 0 and labels.max() == 9


def test_conditional_trains_and_evaluates_with_ema(tiny_run) -> None:
    run = tiny_run('tricks = ["conditional", "ema"]')
    assert train(run)[0] == "completed"
    evaluated = run.hook.ganbench_eval_generator(run=run)
    assert isinstance(evaluated, conditional.ConditionalGenerator) and evaluated is not run.models.generator
    assert generate(run, evaluated, 10).shape == (10, 1, 28, 28)  # eval draws labels for G
    assert (run.dir / "samples" / "step-0000002.png").exists()


class LabelScaledD(nn.Module):
    """D(x, y) = (y + 1) · Σx: its input gradient has norm (y + 1)·sqrt(numel) for every x."""

    def forward(self, x, labels):
        return x.flatten(1).sum(1) * (labels.float() + 1)


@pytest.mark.parametrize("penalty", ["wgan-gp", "r1"])
def test_gradient_penalties_score_a_conditional_d_with_the_real_labels(penalty) -> None:
    run = ganbench.Run(settings=None, seed=0, device=CPU, data=None, dir=Path("unused"), hook=None,
                       rng=torch.Generator().manual_seed(0),
                       models=ganbench.Models(generator=nn.Identity(), discriminator=LabelScaledD()))
    real_labels, fake_labels = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 3, 3, 3])
    batch = ganbench.Batch(real=torch.randn(4, 1, 2, 2), fake=torch.randn(4, 1, 2, 2),
                           real_labels=real_labels, fake_labels=fake_labels)
    norms = (real_labels.double() + 1) * 2.0  # sqrt(4 pixels) = 2
    if penalty == "wgan-gp":
        value = wgan_gp.WGANGP(wgan_gp.Params()).ganbench_discriminator_penalty(
            run=run, batch=batch, scores=None)
        expected = 10.0 * ((norms - 1) ** 2).mean()
    else:
        value = r1.R1(r1.Params(gamma=2.0)).ganbench_discriminator_penalty(run=run, batch=batch)
        expected = (norms**2).mean()  # gamma / 2 = 1
    assert math.isclose(value.item(), expected.item(), rel_tol=1e-5)


def test_conditional_wgan_gp_trains_a_step(tiny_run) -> None:
    run = tiny_run('loss = "wgan-gp"\ntricks = ["conditional"]\nd_updates = 1')
    assert train(run)[0] == "completed"


# --------------------------------------------------------------------------------------------------
# Minibatch standard deviation and minibatch discrimination
# --------------------------------------------------------------------------------------------------


def test_minibatch_std_layer_matches_a_per_group_std() -> None:
    h = torch.randn(8, 3, 2, 2)
    out = minibatch_std.MinibatchStdLayer(4)(h)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    for i in range(8):
        group = h[i % 2::2]  # ProGAN's grouping: sample i is in group i % (n / group_size)
        expected = group.std(dim=0, unbiased=False).mean()
        assert torch.allclose(out[i, 3], expected.expand(2, 2), atol=1e-5)
    # A group size that does not divide the batch takes the std over the whole batch.
    out = minibatch_std.MinibatchStdLayer(4)(h[:6])
    assert torch.allclose(out[0, 3, 0, 0], h[:6].std(dim=0, unbiased=False).mean(), atol=1e-5)


def test_minibatch_std_adds_one_input_channel_to_ds_head(tiny_run) -> None:
    torch.manual_seed(0)
    plain = tiny_run("").models.discriminator
    run = tiny_run('tricks = ["minibatch-std", "spectral-norm"]')
    D = run.models.discriminator
    plain_head, head = plain.head[0], D.head[0]
    assert head.in_channels == plain_head.in_channels + 1
    extra = sum(p.numel() for p in D.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == head.kernel_size[0] * head.kernel_size[1]  # one more input channel, one output
    assert any(isinstance(m, minibatch_std.MinibatchStdLayer) for m in D.features)
    assert hasattr(head, "parametrizations")  # spectral norm wrapped the widened head, not the old one
    assert train(run)[0] == "completed"


def test_minibatch_discrimination_layer_matches_the_papers_formula() -> None:
    torch.manual_seed(0)
    layer = minibatch_discrimination.MinibatchDiscriminationLayer(6, kernels=3, kernel_dim=2)
    h = torch.randn(5, 6)
    out = layer(h)
    assert out.shape == (5, 9) and torch.equal(out[:, :6], h)
    M = (h @ layer.T).reshape(5, 3, 2)
    for i in range(5):
        for b in range(3):
            expected = sum(math.exp(-(M[i, b] - M[j, b]).abs().sum().item()) for j in range(5))
            assert math.isclose(out[i, 6 + b].item(), expected, rel_tol=1e-5)


def test_minibatch_discrimination_makes_d_compare_samples(tiny_run) -> None:
    run = tiny_run('tricks = [{ name = "minibatch-discrimination", kernels = 4 }]')
    D = run.models.discriminator.eval()
    x = torch.randn(4, 1, 28, 28)
    other = x.clone()
    other[1:] = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(D(x)[0], D(other)[0])  # sample 0's score depends on its batch
    assert D.head[0].in_channels == 16 + 4  # width 8 doubled once, plus B = 4 kernels
    assert train(run)[0] == "completed"


def test_d_changing_tricks_refuse_an_architecture_without_a_split() -> None:
    class Opaque:
        name, params = "opaque", None

    for cls in (minibatch_std.MinibatchStd, minibatch_discrimination.MinibatchDiscrimination, conditional.Conditional):
        reason = cls.check(cls.params(), setup_double(arch=Opaque, params=object()))
        assert reason and "features" in reason


def test_minibatch_tricks_work_on_the_mlp_on_points(write_suite, tmp_path) -> None:
    suite = write_suite("""
        [suite]
        name = "ring"
        question = "q"
        [dataset]
        name = "ring8"
        [defaults]
        architecture = { name = "mlp", width = 16 }
        batch_size = 8
        steps = 2
        log_every = 1
        eval_every = 2
        grid_size = 4
        metrics = ["mixture-modes"]
        tricks = ["minibatch-std", "minibatch-discrimination"]
        [[configs]]
        name = "a"
    """)
    run = build_run(load_suite(suite).runs("default")[0], tmp_path / "run", CPU)
    assert run.models.discriminator.head[0].in_features == 16 + 1 + 50
    assert train(run)[0] == "completed"


# --------------------------------------------------------------------------------------------------
# Unrolled GAN
# --------------------------------------------------------------------------------------------------


def unrolled_setup(tiny_run, k: int, second_order: bool = False, optimizer: str = "adam", lr: float = 0.01):
    """A run after one D update, and a G-phase batch with G's graph, as the trainer builds them."""
    run = tiny_run(f'tricks = [{{ name = "unrolled", k = {k}, second_order = {str(second_order).lower()} }}]\n'
                   f'optimizer.d = {{ name = "{optimizer}", lr = {lr} }}\narchitecture = {{ name = "dcgan", width = 8, '
                   'd_norm = "none" }')
    G, D = run.models.generator, run.models.discriminator
    real, _ = run.data.sample(8, run.rng)
    z = run.hook.ganbench_sample_latent(run=run, n=8)
    # One real D update, so Adam has moment estimates to replay.
    opt = run.optimizers.discriminator
    loss = F.softplus(-D(real)).mean() + F.softplus(D(G(z).detach())).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    batch = ganbench.Batch(real=real, fake=G(z))
    return run, batch


def g_loss_and_grads(run, batch, hook_loss: bool):
    step = ganbench.Step(0, "g")
    scores = ganbench.Scores(real=None, fake=run.models.discriminator(batch.fake))
    if hook_loss:
        loss = run.hook.ganbench_generator_loss(run=run, step=step, batch=batch, scores=scores)
    else:
        loss = F.softplus(-scores.fake).mean()
    grads = torch.autograd.grad(loss, list(run.models.generator.parameters()), retain_graph=True)
    return loss, grads


def test_unrolled_with_k0_is_the_plain_loss(tiny_run) -> None:
    run, batch = unrolled_setup(tiny_run, k=0)
    plain, plain_grads = g_loss_and_grads(run, batch, hook_loss=False)
    unrolled_loss, unrolled_grads = g_loss_and_grads(run, batch, hook_loss=True)
    assert torch.equal(unrolled_loss, plain)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain_grads, unrolled_grads))


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 0.01), ("sgd", 1.0)])
def test_unrolled_first_order_equals_ks_real_steps_on_a_copy(tiny_run, optimizer, lr) -> None:
    run, batch = unrolled_setup(tiny_run, k=2, optimizer=optimizer, lr=lr)
    D, opt = run.models.discriminator, run.optimizers.discriminator
    before = {k: v.clone() for k, v in D.state_dict().items()}
    adam_before = {k: v.clone() for k, v in opt.state[next(D.parameters())].items()} if optimizer == "adam" else {}
    loss, _ = g_loss_and_grads(run, batch, hook_loss=True)

    # Reference: the same k steps taken for real, by a copy of D and its optimizer.
    D_copy, opt_copy = copy.deepcopy((D, opt))
    D_copy.requires_grad_(True)
    real, fake = batch.real, batch.fake.detach()
    for _ in range(2):
        d_loss = F.binary_cross_entropy_with_logits(D_copy(real), torch.ones(8)) \
            + F.binary_cross_entropy_with_logits(D_copy(fake), torch.zeros(8))
        opt_copy.zero_grad()
        d_loss.backward()
        opt_copy.step()
    expected = F.softplus(-D_copy(batch.fake)).mean()
    plain = F.softplus(-D(batch.fake)).mean()
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-4, abs_tol=1e-6)
    assert not math.isclose(loss.item(), plain.item(), rel_tol=1e-4)
    # D itself, its buffers and its optimizer state are untouched.
    assert all(torch.equal(v, before[k]) for k, v in D.state_dict().items())
    for key, value in adam_before.items():
        assert torch.equal(opt.state[next(D.parameters())][key], value)


def test_unrolled_second_order_carries_more_gradient_than_first_order(tiny_run) -> None:
    # Two runs built from the same seed: the same G, D, optimizer state and batch.
    run, batch = unrolled_setup(tiny_run, k=2, second_order=False)
    first_loss, first = g_loss_and_grads(run, batch, hook_loss=True)
    run, batch = unrolled_setup(tiny_run, k=2, second_order=True)
    second_loss, second = g_loss_and_grads(run, batch, hook_loss=True)
    assert torch.allclose(first_loss, second_loss, atol=1e-6)  # the same look-ahead D ...
    assert all(torch.isfinite(g).all() for g in second)
    assert any(not torch.allclose(a, b, atol=1e-7) for a, b in zip(first, second))  # ... a different gradient
    # The guard against re-entering itself is released after each call.
    again, _ = g_loss_and_grads(run, batch, hook_loss=True)
    assert torch.allclose(again, second_loss)


# --------------------------------------------------------------------------------------------------
# Balancing: adaptive D:G ratio and D learning-rate decay
# --------------------------------------------------------------------------------------------------


def test_adaptive_ratio_adds_g_updates_while_d_is_too_strong() -> None:
    trick = adaptive_ratio.AdaptiveRatio(adaptive_ratio.Params(strong_acc=0.9, weak_acc=0.7, max_g_updates=3))
    run = SimpleNamespace(settings=SimpleNamespace(g_updates=1), updates=ganbench.Updates(d=1, g=1))
    seen = []
    for acc in (0.95, 0.8, 0.99, 0.99, float("nan"), 0.6, 0.5, 0.5):
        record = {"d_acc": acc, "d_loss": 0.1}
        trick.ganbench_log_record(run=run, record=record)
        seen.append(record["g_updates"])
    assert seen == [2, 2, 3, 3, 3, 2, 1, 1]
    assert run.updates.d == 1


def test_adaptive_ratio_refuses_critic_losses_and_bad_thresholds() -> None:
    cls = adaptive_ratio.AdaptiveRatio
    assert '"wgan"' in cls.check(cls.params(), setup_double(loss=wgan.WGAN))
    assert "weak_acc" in cls.check(adaptive_ratio.Params(strong_acc=0.5, weak_acc=0.6), setup_double())
    assert cls.check(cls.params(), setup_double()) is None


def test_adaptive_ratio_changes_the_trainers_g_updates(tiny_run) -> None:
    # strong_acc ~ 0: D always counts as too strong, so G gets one more update per log record.
    run = tiny_run('tricks = [{ name = "adaptive-ratio", strong_acc = 1e-9, weak_acc = 0.0 }]\nsteps = 3')
    assert train(run)[0] == "completed"
    records = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["g_updates"] for r in records] == [2, 3, 4]
    assert run.updates.g == 4


def test_d_lr_decay_halves_ds_learning_rate_near_zero_loss() -> None:
    trick = d_lr_decay.DLrDecay(d_lr_decay.Params(loss_floor=0.1, factor=0.5, min_scale=0.2))
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0)
    run = SimpleNamespace(optimizers=SimpleNamespace(discriminator=opt))
    scales = []
    for loss in (0.5, 0.05, float("nan"), 0.1, 0.01, 0.01):
        record = {"d_loss": loss}
        trick.ganbench_log_record(run=run, record=record)
        scales.append(record["d_lr_scale"])
    assert scales == [1.0, 0.5, 0.5, 0.25, 0.2, 0.2]
    assert opt.param_groups[0]["lr"] == 0.2
    assert "floor" in d_lr_decay.DLrDecay.check(d_lr_decay.Params(), setup_double(loss=wgan.WGAN))


def test_d_lr_decay_lowers_the_trainers_d_learning_rate(tiny_run) -> None:
    run = tiny_run('tricks = [{ name = "d-lr-decay", loss_floor = 1e9 }]')
    assert train(run)[0] == "completed"
    assert run.optimizers.discriminator.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.25)
    assert run.optimizers.generator.param_groups[0]["lr"] == 2e-4


def test_lr_decay_follows_gulrajani_et_als_schedule_after_the_constant_share() -> None:
    """Step i (from 0) trains at 1 - i/steps of the rate in gan_cifar_resnet.py (DECAY); with
    start_fraction the first share of the run keeps the whole rate (CycleGAN's half and half)."""
    def scales(**params) -> list[float]:
        trick = lr_decay.LrDecay(lr_decay.Params(**params))
        return [trick.scale_at(i, 10) for i in range(11)]

    assert scales() == pytest.approx([1 - i / 10 for i in range(11)], abs=1e-12)
    assert scales(start_fraction=0.5) == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.0], abs=1e-12)
    assert scales(start_fraction=0.6, final_scale=0.2) == pytest.approx([1] * 7 + [0.8, 0.6, 0.4, 0.2], abs=1e-12)


@pytest.mark.parametrize("networks,g_scale,d_scale", [("both", 0.5, 0.5), ("generator", 0.5, 1.0),
                                                       ("discriminator", 1.0, 0.5)])
def test_lr_decay_sets_the_trainers_learning_rates(tiny_run, networks, g_scale, d_scale) -> None:
    run = tiny_run(f'tricks = [{{ name = "lr-decay", final_scale = 0.5, networks = "{networks}" }}]\nsteps = 4')
    assert train(run)[0] == "completed"
    assert run.optimizers.generator.param_groups[0]["lr"] == pytest.approx(2e-4 * g_scale, rel=1e-12)
    assert run.optimizers.discriminator.param_groups[0]["lr"] == pytest.approx(2e-4 * d_scale, rel=1e-12)
    records = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"]  # each: the next step's rate
    expected = [0.875, 0.75, 0.625, 0.5]
    assert [r["lr_g"] for r in records] == pytest.approx([2e-4 * (s if g_scale < 1 else 1) for s in expected], rel=1e-12)
    assert [r["lr_d"] for r in records] == pytest.approx([2e-4 * (s if d_scale < 1 else 1) for s in expected], rel=1e-12)


def test_lr_decay_refuses_a_run_it_cannot_decay(tiny_suite) -> None:
    with pytest.raises(ganbench.UsageError, match=r"start_fraction = 1.0 leaves none of the run's \d+ steps"):
        load_suite(tiny_suite('tricks = [{ name = "lr-decay", start_fraction = 1.0 }]')).runs("default")
    with pytest.raises(ganbench.UsageError, match="d-lr-decay also sets D's learning rate"):
        load_suite(tiny_suite('tricks = ["d-lr-decay", "lr-decay"]')).runs("default")
    load_suite(tiny_suite('tricks = ["d-lr-decay", { name = "lr-decay", networks = "generator" }]')).runs("default")


# --------------------------------------------------------------------------------------------------
# R1 and DiffAugment
# --------------------------------------------------------------------------------------------------


def test_r1_is_half_gamma_times_the_squared_input_gradient() -> None:
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(1), nn.Linear(4, 1), nn.Flatten(0))
    run = ganbench.Run(settings=None, seed=0, device=CPU, data=None, dir=Path("unused"), hook=None,
                       rng=torch.Generator(), models=ganbench.Models(generator=nn.Identity(), discriminator=D))
    real = torch.randn(6, 1, 2, 2)
    penalty = r1.R1(r1.Params(gamma=3.0)).ganbench_discriminator_penalty(
        run=run, batch=ganbench.Batch(real=real, fake=torch.zeros_like(real)))
    w = D[1].weight
    # A linear D has input gradient w for every sample: the penalty is gamma/2 ||w||², with gradient gamma·w.
    assert math.isclose(penalty.item(), 1.5 * w.pow(2).sum().item(), rel_tol=1e-5)
    (grad_w,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(grad_w, 3.0 * w)


def test_r1_trains_a_step(tiny_run) -> None:
    run = tiny_run('tricks = [{ name = "r1", gamma = 10.0 }]')
    assert train(run)[0] == "completed"
    records = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"]
    assert all(r["d_penalty"] > 0 for r in records)


def augment_run(seed: int = 0) -> ganbench.Run:
    return ganbench.Run(settings=None, seed=seed, device=CPU, data=None, dir=Path("unused"), hook=None,
                        rng=torch.Generator().manual_seed(seed))


def test_diff_augment_keeps_shapes_is_differentiable_and_reproduces() -> None:
    trick = diff_augment.DiffAugment(diff_augment.Params())
    fake = torch.randn(8, 3, 16, 16, requires_grad=True)
    batch = ganbench.Batch(real=torch.randn(8, 3, 16, 16), fake=fake)
    trick.ganbench_discriminator_inputs(run=augment_run(), batch=batch)
    assert batch.real.shape == batch.fake.shape == (8, 3, 16, 16)
    batch.fake.pow(2).sum().backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    # Cutout alone leaves zero gradient in its square: 8x8 of each sample's 16x16 pixels, or fewer at an edge.
    x = torch.randn(8, 3, 16, 16, requires_grad=True)
    diff_augment.cutout(augment_run(), x, diff_augment.Params()).sum().backward()
    dead = (x.grad == 0).all(dim=1).flatten(1).sum(1)
    assert (dead > 0).all() and (dead <= 64).all() and (dead == 64).any()
    again = ganbench.Batch(real=batch.real.new_zeros(0), fake=fake.detach())
    a = trick.augment(augment_run(3), fake.detach())
    b = trick.augment(augment_run(3), again.fake)
    assert torch.equal(a, b)


def test_diff_augment_translation_shifts_each_image_with_zero_fill() -> None:
    params = diff_augment.Params(translation=0.25)
    x = torch.arange(64.0).reshape(1, 1, 8, 8).repeat(16, 1, 1, 1) + 1  # no zero in the image itself
    out = diff_augment.translation(augment_run(), x, params)
    shifts = set()
    for img in out[:, 0]:
        found = None
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.zeros(8, 8)
                src = x[0, 0]
                ys, xs = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 8 + min(dx, 0))
                yd, xd = slice(max(-dy, 0), 8 + min(-dy, 0)), slice(max(-dx, 0), 8 + min(-dx, 0))
                expected[yd, xd] = src[ys, xs]
                if torch.equal(img, expected):
                    found = (dy, dx)
        assert found is not None
        shifts.add(found)
    assert len(shifts) > 1


def test_diff_augment_refuses_unknown_policies_and_points() -> None:
    cls = diff_augment.DiffAugment
    assert "colour" in cls.check(diff_augment.Params(policy="colour"), setup_double())
    assert "points" in cls.check(diff_augment.Params(), setup_double(kind="points", shape=(2,)))
    assert cls.check(diff_augment.Params(policy="translation, cutout"), setup_double()) is None


def test_diff_augment_and_r1_train_a_conditional_step(tiny_run) -> None:
    run = tiny_run('tricks = ["diff-augment", "r1", "conditional"]')
    assert train(run)[0] == "completed"


# --------------------------------------------------------------------------------------------------
# Data in [0, 1]
# --------------------------------------------------------------------------------------------------


def test_unit_range_sets_a_sigmoid_g_and_refuses_architectures_without_one(tiny_suite) -> None:
    assert unit_range.UnitRange.config_defaults(None) == {"architecture.output": "sigmoid"}
    spec = load_suite(tiny_suite('tricks = ["unit-range"]')).runs("default")[0]
    assert spec.settings.architecture.params.output == "sigmoid"
    assert "sigmoid" in unit_range.UnitRange.check(None, setup_double(arch=mlp.MLP))
    assert unit_range.UnitRange.check(None, setup_double(params=dcgan.Params(output="tanh")))


def test_unit_range_trains_in_0_1_and_evaluates_in_minus1_1(tiny_run) -> None:
    run = tiny_run('tricks = ["unit-range", "ema"]')
    assert isinstance(list(run.models.generator)[-1], nn.Sigmoid)
    batch = ganbench.Batch(real=torch.tensor([[-1.0, 0.0, 1.0]]), fake=torch.zeros(1, 3))
    run.hook.ganbench_discriminator_inputs(run=run, step=ganbench.Step(0, "d"), batch=batch)
    assert torch.equal(batch.real, torch.tensor([[0.0, 0.5, 1.0]]))
    assert train(run)[0] == "completed"
    view = run.hook.ganbench_eval_generator(run=run)
    ema_copy = view.generator
    assert ema_copy is not run.models.generator  # the [-1, 1] view wraps EMA's copy
    assert not any(p.requires_grad for p in ema_copy.parameters())
    assert run.hook.ganbench_eval_generator(run=run) is view
    z = torch.randn(4, run.settings.z_dim)
    with torch.no_grad():
        assert torch.allclose(view(z), 2 * ema_copy(z) - 1)
        assert view(z).min() >= -1 and view(z).max() <= 1
