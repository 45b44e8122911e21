"""DCGAN's practice-ablation options, D's feature/head split, and the progressive-growing architecture."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganbench
from ganbench.registry import new_plugin_manager
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import build_run, train
from ganbench_plugins.architectures import dcgan, mlp, progressive_dcgan
from ganbench_plugins.architectures.split import SplitSequential

N = 8
Z_DIM = 16
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(shape=(1, 28, 28), kind="image", steps=100) -> ganbench.Run:
    return ganbench.Run(settings=SimpleNamespace(z_dim=Z_DIM, steps=steps), seed=0, device=CPU,
                        data=ganbench.DataInfo(kind, shape, None), dir=Path("unused"), hook=None,
                        rng=torch.Generator().manual_seed(0))


def types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules()}


# --------------------------------------------------------------------------------------------------
# DCGAN options
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 64])
def test_pooling_replaces_every_strided_conv(size):
    torch.manual_seed(0)
    models = dcgan.DCGAN(dcgan.Params(width=8, resampling="pool")).ganbench_build_models(run=make_run((3, size, size)))
    G, D = models.generator, models.discriminator
    strided = [m for m in list(G.modules()) + list(D.modules())
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.stride != (1, 1)]
    assert strided == []
    assert nn.AvgPool2d in types(D) and nn.Upsample in types(G)
    # G keeps only its first layer's 1x1 -> start x start projection as a transposed conv.
    assert [m.kernel_size for m in G.modules() if isinstance(m, nn.ConvTranspose2d)] == [(7, 7) if size == 28 else (4, 4)]
    x = G(torch.randn(N, Z_DIM))
    assert x.shape == (N, 3, size, size) and D(x).shape == (N,)


def test_strided_is_the_default_and_unchanged():
    p = dcgan.Params()
    assert (p.resampling, p.d_activation, p.output, p.init, p.d_norm) == ("strided", "leaky-relu", "tanh", "normal-0.02", "batch")
    models = dcgan.DCGAN(dcgan.Params(width=8)).ganbench_build_models(run=make_run())
    assert nn.AvgPool2d not in types(models.discriminator) and nn.Upsample not in types(models.generator)
    assert [type(m) for m in models.discriminator] == [
        nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.Conv2d, nn.Flatten]


@pytest.mark.parametrize("size", [28, 64])
def test_d_width_narrows_d_and_leaves_g(size):
    """Metz et al.'s D at 1/4 of G: D's channels start from d_width, G's layers stay width's."""
    def build(**kw):
        torch.manual_seed(0)
        return dcgan.DCGAN(dcgan.Params(width=16, **kw)).ganbench_build_models(run=make_run((3, size, size)))

    same, narrow = build(), build(d_width=4)
    convs = [(m.in_channels, m.out_channels) for m in narrow.discriminator.modules() if isinstance(m, nn.Conv2d)]
    n_up = 2 if size == 28 else 4
    assert convs == [(3, 4)] + [(4 * 2 ** i, 8 * 2 ** i) for i in range(n_up - 1)] + [(4 * 2 ** (n_up - 1), 1)]
    assert [(m.in_channels, m.out_channels) for m in same.discriminator.modules() if isinstance(m, nn.Conv2d)][0] == (3, 16)
    g_same, g_narrow = same.generator.state_dict(), narrow.generator.state_dict()  # G's shapes are width's
    assert {k: v.shape for k, v in g_same.items()} == {k: v.shape for k, v in g_narrow.items()}
    assert dcgan.Params(width=16).d_width is None and build(d_width=16).discriminator.state_dict().keys() == \
        same.discriminator.state_dict().keys()
    x = narrow.generator(torch.randn(N, Z_DIM))
    assert narrow.discriminator(x).shape == (N,)


def test_relu_in_d():
    models = dcgan.DCGAN(dcgan.Params(width=8, d_activation="relu")).ganbench_build_models(run=make_run())
    assert nn.LeakyReLU not in types(models.discriminator) and nn.ReLU in types(models.discriminator)


def test_sigmoid_output_lies_in_0_1():
    models = dcgan.DCGAN(dcgan.Params(width=8, output="sigmoid")).ganbench_build_models(run=make_run())
    assert isinstance(models.generator[-1], nn.Sigmoid)
    x = models.generator(torch.randn(N, Z_DIM) * 10)
    assert x.min() >= 0 and x.max() <= 1 and x.min() < 0.5 < x.max()


@pytest.mark.parametrize("arch", [dcgan.DCGAN(dcgan.Params(width=8)), mlp.MLP(mlp.Params(width=16))])
def test_d_splits_into_features_and_head(arch):
    models = arch.ganbench_build_models(run=make_run())
    D = models.discriminator
    assert isinstance(D, SplitSequential) and type(arch).splits_discriminator
    assert len(D.features) + len(D.head) == len(D)
    assert isinstance(D.head[0], (nn.Conv2d, nn.Linear)) and isinstance(D.head[-1], nn.Flatten)
    D.eval()
    x = torch.randn(N, 1, 28, 28)
    assert torch.equal(D(x), D.head(D.features(x)))


# --------------------------------------------------------------------------------------------------
# Progressive growing
# --------------------------------------------------------------------------------------------------


def test_schedule_stabilises_then_fades_in_each_level():
    s = progressive_dcgan.Schedule(levels=3, phase_steps=10)
    expected = {0: (0, 1.0), 9: (0, 1.0), 10: (1, 0.0), 15: (1, 0.5), 19: (1, 0.9), 20: (1, 1.0),
                30: (2, 0.0), 35: (2, 0.5), 40: (2, 1.0), 1000: (2, 1.0)}
    for index, value in expected.items():
        level, alpha = s.at(index)
        assert (level, pytest.approx(alpha)) == value, index
    assert copy.deepcopy(s) is s  # EMA's copy of G follows the same schedule


def build_progressive(steps=50, size=28, **params):
    torch.manual_seed(0)
    arch = progressive_dcgan.ProgressiveDCGAN(progressive_dcgan.Params(width=8, **params))
    models = arch.ganbench_build_models(run=make_run((1, size, size), steps=steps))
    return arch, models


def test_default_phases_split_the_run_evenly():
    arch, _ = build_progressive(steps=50)  # 3 levels: 5 phases of 10 steps
    assert arch.schedule.phase_steps == 10
    arch, _ = build_progressive(steps=70, size=32)  # 4 levels: 7 phases of 10 steps
    assert arch.schedule.levels == 4 and arch.schedule.phase_steps == 10


def test_g_returns_full_resolution_and_fades_in_continuously():
    arch, models = build_progressive()
    G, s = models.generator.eval(), arch.schedule
    z = torch.randn(N, Z_DIM)
    outputs = {}
    with torch.no_grad():
        for index in (0, 10, 15, 20, 30, 40):
            s.set(index)
            outputs[index] = G(z)
            assert outputs[index].shape == (N, 1, 28, 28)
    # Level 0: 7x7 images, upsampled; blocks of 4x4 pixels are constant.
    assert torch.allclose(outputs[0], F.interpolate(F.avg_pool2d(outputs[0], 4), scale_factor=4), atol=1e-7)
    # A fade starts exactly where the previous level left off, and ends at the new level.
    assert torch.allclose(outputs[10], outputs[0], atol=1e-6)
    assert torch.allclose(outputs[30], outputs[20], atol=1e-6)
    assert not torch.allclose(outputs[15], outputs[10]) and not torch.allclose(outputs[40], outputs[30])


def test_d_sees_the_current_resolution_and_fades_in_continuously():
    arch, models = build_progressive()
    D, s = models.discriminator.eval(), arch.schedule
    real = torch.rand(N, 1, 28, 28) * 2 - 1
    fake = models.generator(torch.randn(N, Z_DIM)).detach()

    def scores_at(index):
        s.set(index)
        batch = ganbench.Batch(real=real, fake=fake)
        arch.ganbench_discriminator_inputs(batch=batch)
        with torch.no_grad():
            return batch, D(batch.real), D(batch.fake)

    batch, real0, _ = scores_at(0)
    assert batch.real.shape[-1] == 7 and torch.allclose(batch.real, F.avg_pool2d(real, 4))
    batch, real10, _ = scores_at(10)  # fading into 14x14, alpha 0: the 7x7 image, upsampled
    assert batch.real.shape[-1] == 14
    assert torch.allclose(batch.real, F.interpolate(F.avg_pool2d(real, 4), scale_factor=2), atol=1e-6)
    assert torch.allclose(real10, real0, atol=1e-5)
    batch, _, _ = scores_at(40)
    assert torch.equal(batch.real, real) and torch.equal(batch.fake, fake)
    # Full-resolution input is pooled down by D itself (penalties, probes).
    s.set(0)
    with torch.no_grad():
        assert torch.allclose(D(real), real0, atol=1e-5)


def test_progressive_registers_and_trains_with_tricks(write_suite, tmp_path):
    pm = new_plugin_manager()
    pm.register(progressive_dcgan)
    ((cls,),) = pm.hook.ganbench_register_architectures()
    assert cls.name == "progressive-dcgan" and "Karras et al. 2018" in progressive_dcgan.__doc__.splitlines()[0]
    suite = write_suite("""
        [suite]
        name = "grow"
        question = "q"
        [dataset]
        name = "mnist5k"
        [defaults]
        architecture = { name = "progressive-dcgan", width = 8 }
        batch_size = 8
        steps = 6
        log_every = 1
        eval_every = 6
        grid_size = 4
        metrics = []
        tricks = ["minibatch-std", "conditional", "ema", "r1"]
        [[configs]]
        name = "a"
    """)
    run = build_run(load_suite(suite).runs("default")[0], tmp_path / "run", CPU)
    assert train(run)[0] == "completed"
    records = [r for r in read_jsonl(run.dir / "metrics.jsonl") if r["kind"] == "train"]
    # 6 steps over 5 phases: phase_steps 1. The record is written before the step's schedule advance.
    assert [r["resolution"] for r in records] == [7, 14, 14, 28, 28, 28]
    assert [r["fade_alpha"] for r in records] == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    evaluated = run.hook.ganbench_eval_generator(run=run)
    assert evaluated.base.schedule is run.models.generator.base.schedule  # EMA's copy grows with G


# --------------------------------------------------------------------------------------------------
# The 2-D papers' networks: Metz et al.'s tanh MLP and PacGAN's BN-ReLU G with a maxout D
# --------------------------------------------------------------------------------------------------


def test_mlp_with_tanh_and_orthogonal_weights():
    arch = mlp.MLP(mlp.Params(width=16, hidden_layers=2, d_dropout=0.0, activation="tanh", orthogonal_gain=1.4))
    models = arch.ganbench_build_models(run=make_run(shape=(2,), kind="points"))
    for net in (models.generator, models.discriminator):
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert nn.Tanh in types(net) and nn.LeakyReLU not in types(net)
        for layer in linears:  # orthogonal at gain 1.4: W Wᵀ = 1.4² I on the shorter side
            w = layer.weight.detach().double()
            small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            assert torch.allclose(small, 1.96 * torch.eye(len(small), dtype=torch.float64), atol=1e-5)
            assert torch.count_nonzero(layer.bias) == 0


def test_pacgan_networks_follow_the_reference_code():
    from ganbench_plugins.architectures.pacgan_mlp import Maxout, PacganMlp, Params

    models = PacganMlp(Params()).ganbench_build_models(run=make_run(shape=(2,), kind="points"))
    G, D = models.generator, models.discriminator
    g_linears = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in g_linears] == [(Z_DIM, 400), (400, 400), (400, 400), (400, 400), (400, 2)]
    assert [m.bias is None for m in g_linears] == [True, True, True, True, False]  # BatchNorm after each hidden layer
    assert sum(isinstance(m, nn.BatchNorm1d) for m in G.modules()) == 4
    maxouts = [m for m in D.modules() if isinstance(m, Maxout)]
    assert [(m.linear.in_features, m.units, m.pieces) for m in maxouts] == [(2, 200, 5), (200, 200, 5), (200, 200, 5)]
    assert 0.015 < float(maxouts[1].linear.weight.detach().std()) < 0.025  # N(0, 0.02²)
    x = torch.randn(N, 2)
    expected = x @ maxouts[0].linear.weight.T + maxouts[0].linear.bias
    assert torch.equal(maxouts[0](x), expected.view(N, 200, 5).amax(dim=2))
    D.eval()
    assert D(x).shape == (N,) and torch.equal(D(x), D.head(D.features(x)))
    assert G(torch.randn(N, Z_DIM)).shape == (N, 2)


# --------------------------------------------------------------------------------------------------
# Metz et al.'s small Stacked-MNIST DCGAN (PacGAN's unrolled_GAN_experiment code)
# --------------------------------------------------------------------------------------------------


def _metz(d_width=2, channels=3):
    from ganbench_plugins.architectures import metz_dcgan

    arch = metz_dcgan.MetzDCGAN(metz_dcgan.Params(d_width=d_width))
    return arch.ganbench_build_models(run=make_run(shape=(channels, 28, 28)))


@pytest.mark.parametrize("d_width, d_params", [(2, 585), (4, 1889)])
def test_metz_dcgan_has_the_reference_codes_parameter_counts(d_width, d_params):
    # Counted by hand from the code's layers (D=0.25G and D=0.5G/model.py; z 16-D here):
    # G: linear 16 -> 4·4·64 (+ bias), BN 64, 3x3 deconvs 64 -> 32 -> 16 -> 8 (+ biases), BN after
    # each, a 3x3 conv 8 -> 3; D: 3x3 convs 3 -> w -> 2w -> 4w, BN after each, linear 4w·4·4 -> 1.
    g_params = (16 * 1024 + 1024) + 2 * 64 + (9 * 64 * 32 + 32) + 2 * 32 + (9 * 32 * 16 + 16) + 2 * 16 \
        + (9 * 16 * 8 + 8) + 2 * 8 + (9 * 8 * 3 + 3)
    models = _metz(d_width)
    assert sum(p.numel() for p in models.generator.parameters()) == g_params
    assert sum(p.numel() for p in models.discriminator.parameters()) == d_params
    assert sum(isinstance(m, nn.BatchNorm2d) for m in models.discriminator.modules()) == 3  # the first conv's too
    leaks = {m.negative_slope for m in models.discriminator.modules() if isinstance(m, nn.LeakyReLU)}
    assert leaks == {0.3}


def test_metz_dcgan_maps_and_outputs():
    torch.manual_seed(0)
    models = _metz()
    G, D = models.generator, models.discriminator
    sizes, x = [], torch.randn(N, Z_DIM)
    for layer in G:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            sizes.append(x.shape[-1])
    assert sizes == [4, 7, 14, 28] and x.shape == (N, 3, 28, 28) and float(x.detach().abs().max()) <= 1.0
    maps, y = [], x
    for layer in D.features:
        y = layer(y)
        if isinstance(layer, nn.LeakyReLU):
            maps.append(tuple(y.shape[1:]))
    assert maps == [(2, 14, 14), (4, 7, 7), (8, 4, 4)]
    assert D(x).shape == (N,) and torch.equal(D(x), D.head(D.features(x)))


def test_metz_dcgan_pads_as_tensorflow_same():
    # TensorFlow's 'SAME' for a 3x3 stride-2 conv of 28 pixels pads one row and column, after:
    # out[i, j] = sum x[2i + a, 2j + b] w[a, b]. A delta at (0, 0) therefore meets tap (0, 0) at
    # out[0, 0]; torch's symmetric padding=1 would meet tap (1, 1) there. Each tap is labelled.
    from ganbench_plugins.architectures.metz_dcgan import SameConv, SameConvTranspose

    conv = SameConv(1, 1, 28, 2)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]).view(1, 1, 3, 3))
        conv.conv.bias.zero_()
    # (delta's row, column) -> {(out row, out column): tap}; row 1 = 2·0 + 1, column 2 = 2·0 + 2 = 2·1 + 0.
    cases = {(0, 0): {(0, 0): 1.0}, (27, 27): {(13, 13): 5.0}, (1, 2): {(0, 0): 6.0, (0, 1): 4.0}}
    for (r, c), taps in cases.items():
        x = torch.zeros(1, 1, 28, 28)
        x[0, 0, r, c] = 1.0
        out = conv(x).detach()[0, 0]
        assert out.shape == (14, 14)
        assert {(i, j): float(out[i, j]) for i, j in torch.nonzero(out).tolist()} == taps
    # conv2d_transpose is defined as the gradient of that conv: <conv(x), y> = <x, convT(y)>. 5x5 is
    # pacgan-dcgan's kernel, whose 'SAME' padding is odd at every one of its sizes but 7.
    for size_in, out, kernel in [(4, 7, 3), (7, 14, 3), (14, 28, 3), (2, 4, 5), (4, 7, 5), (7, 14, 5), (14, 28, 5),
                                 (8, 16, 5)]:
        forward, transposed = SameConv(2, 3, out, 2, kernel), SameConvTranspose(3, 2, size_in, out, kernel)
        with torch.no_grad():
            transposed.conv.weight.copy_(forward.conv.weight)
            forward.conv.bias.zero_(), transposed.conv.bias.zero_()
        x = torch.randn(1, 2, out, out, dtype=torch.float64, requires_grad=True)
        y = torch.randn(1, 3, size_in, size_in, dtype=torch.float64)
        forward, transposed = forward.double(), transposed.double()
        (forward(x) * y).sum().backward()
        assert torch.allclose(transposed(y), x.grad, atol=1e-12)


def test_metz_dcgan_refuses_data_it_cannot_model():
    from ganbench_plugins.architectures import metz_dcgan

    with pytest.raises(ganbench.UsageError, match=r"28x28 images .* shape \(3, 32, 32\); use dcgan"):
        metz_dcgan.MetzDCGAN(metz_dcgan.Params()).ganbench_build_models(run=make_run(shape=(3, 32, 32)))
    setup = SimpleNamespace(data=SimpleNamespace(kind="image", shape=(3, 28, 28)))
    assert "multiple of 8" in metz_dcgan.MetzDCGAN.check(metz_dcgan.Params(g_width=12), setup)
    assert metz_dcgan.MetzDCGAN.check(metz_dcgan.Params(), setup) is None


# --------------------------------------------------------------------------------------------------
# PacGAN's Stacked-MNIST DCGAN (carpedm20's, PacGAN's VEEGAN_experiment code)
# --------------------------------------------------------------------------------------------------


def _pacgan_dcgan(width=64, shape=(3, 28, 28)):
    from ganbench_plugins.architectures import pacgan_dcgan

    return pacgan_dcgan.PacGANDCGAN(pacgan_dcgan.Params(width=width)).ganbench_build_models(run=make_run(shape=shape))


def test_pacgan_dcgan_has_the_reference_codes_parameter_counts():
    # Counted from the code's layers (VEEGAN_experiment/model.py and ops.py, gf_dim = df_dim = 64,
    # 28 px so s16 = 2; z 16-D here): G: linear 16 -> 2·2·512 (+ bias), BN 512, 5x5 deconvs
    # 512 -> 256 -> 128 -> 64 -> 3 (+ biases), BN after all but the last; D: 5x5 convs
    # 3 -> 64 -> 128 -> 256 -> 512 (+ biases), BN after all but the first, linear 512·2·2 -> 1.
    g_params = (16 * 2048 + 2048) + 2 * 512 + (25 * 512 * 256 + 256) + 2 * 256 + (25 * 256 * 128 + 128) \
        + 2 * 128 + (25 * 128 * 64 + 64) + 2 * 64 + (25 * 64 * 3 + 3)
    d_params = (25 * 3 * 64 + 64) + (25 * 64 * 128 + 128) + 2 * 128 + (25 * 128 * 256 + 256) + 2 * 256 \
        + (25 * 256 * 512 + 512) + 2 * 512 + (2048 + 1)
    models = _pacgan_dcgan()
    assert sum(p.numel() for p in models.generator.parameters()) == g_params
    assert sum(p.numel() for p in models.discriminator.parameters()) == d_params == 4_310_401  # "about 4.3 M"
    assert g_params + (100 - 16) * 2048 == 4_514_819  # the code's z is 100-D: "about 4.5 M"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in models.discriminator.modules()) == 3  # not the first conv's
    assert {m.negative_slope for m in models.discriminator.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    kernels = {m.kernel_size for m in [*models.generator.modules(), *models.discriminator.modules()]
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    assert kernels == {(5, 5)}


@pytest.mark.parametrize("size,g_sides", [(28, [2, 4, 7, 14, 28]), (32, [2, 4, 8, 16, 32]), (16, [1, 2, 4, 8, 16])])
def test_pacgan_dcgan_maps_and_outputs(size, g_sides):
    torch.manual_seed(0)
    models = _pacgan_dcgan(width=8, shape=(3, size, size))
    G, D = models.generator, models.discriminator
    sides, x = [], torch.randn(N, Z_DIM)
    for layer in G:
        x = layer(x)
        if isinstance(layer, (nn.ReLU, nn.Tanh)):
            sides.append(x.shape[-1])
    assert sides == g_sides and x.shape == (N, 3, size, size) and float(x.detach().abs().max()) <= 1.0
    maps, y = [], x
    for layer in D.features:
        y = layer(y)
        if isinstance(layer, nn.LeakyReLU):
            maps.append(tuple(y.shape[1:]))
    assert maps == [(8 * 2 ** i, side, side) for i, side in enumerate(reversed(g_sides[:-1]))]
    assert D(x).shape == (N,) and torch.equal(D(x), D.head(D.features(x)))


def test_pacgan_dcgan_refuses_data_it_cannot_model():
    from ganbench_plugins.architectures import pacgan_dcgan

    arch = pacgan_dcgan.PacGANDCGAN(pacgan_dcgan.Params())
    with pytest.raises(ganbench.UsageError, match=r"square images of at least 16 pixels .* shape \(3, 28, 32\)"):
        arch.ganbench_build_models(run=make_run(shape=(3, 28, 32)))
    setup = SimpleNamespace(data=SimpleNamespace(kind="points", shape=(2,)))
    assert "use dcgan or mlp" in pacgan_dcgan.PacGANDCGAN.check(pacgan_dcgan.Params(), setup)
    assert "(1, 8, 8)" in pacgan_dcgan.PacGANDCGAN.check(pacgan_dcgan.Params(),
                                                        SimpleNamespace(data=SimpleNamespace(kind="image", shape=(1, 8, 8))))
    assert pacgan_dcgan.PacGANDCGAN.check(pacgan_dcgan.Params(),
                                          SimpleNamespace(data=SimpleNamespace(kind="image", shape=(3, 28, 28)))) is None


def test_d_width_enters_the_run_identity_only_when_set():
    """d_width was added after runs of dcgan were made (reports/answer-stability-cpu/): unset, it
    leaves their ids alone (tests/test_speed_settings.py checks the committed ones); set, it is part of them."""
    from ganbench.params import as_dict

    assert "d_width" not in as_dict(dcgan.Params(width=32), identity=True)
    assert as_dict(dcgan.Params(width=32, d_width=8), identity=True)["d_width"] == 8
    assert as_dict(dcgan.Params(width=32), identity=False)["d_width"] is None  # config.json still records it
