"""The package's plugins pass ganbench's conformance check and do what they say, on tiny CPU runs."""
import math

import pytest
import torch

import ganbench
import ganbench.testing as gt
from my_gan_tricks import lr_decay, nn_distance, ragan


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # tiny models: a second thread only adds hand-offs


@pytest.mark.parametrize("module", [lr_decay, ragan, nn_distance])
def test_conforms(module):
    gt.check_plugin(module)  # loads, validates params, trains, reproduces, resumes


def test_lr_decay_reaches_zero():
    result = gt.run_plugin(lr_decay, steps=8, params={"start": 0.5})
    lrs = [r["lr_g"] for r in result.records]
    assert lrs[:4] == [lrs[0]] * 4 and lrs[4] < lrs[0] and lrs[-1] == 0.0


def test_lr_decay_refuses_a_bad_start():
    with pytest.raises(ganbench.UsageError, match="start"):
        gt.run_plugin(lr_decay, params={"start": 1.5})


def ragan_by_hand(real, fake):
    """The paper's eq. (RaSGAN), written with sigmoids and logs."""
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    mr, mf = sum(real) / len(real), sum(fake) / len(fake)
    d = (-sum(math.log(sig(r - mf)) for r in real) / len(real)
         - sum(math.log(1 - sig(f - mr)) for f in fake) / len(fake))
    g = (-sum(math.log(sig(f - mr)) for f in fake) / len(fake)
         - sum(math.log(1 - sig(r - mf)) for r in real) / len(real))
    return d, g


def test_ragan_discriminator_loss_matches_the_paper():
    scores = gt.tiny_scores(real=[2.0, -0.5, 1.0], fake=[0.3, -1.0, 0.0])
    d = ragan.RaGAN().ganbench_discriminator_loss(scores=scores, targets=gt.tiny_targets(3))
    assert float(d) == pytest.approx(ragan_by_hand(scores.real.tolist(), scores.fake.tolist())[0], rel=1e-6)


def test_ragan_generator_loss_scores_the_real_batch_itself():
    run = gt.tiny_run(ragan)
    batch = gt.tiny_batch(run, n=6, phase="g")
    D = run.models.discriminator.eval()  # the MLP's D has dropout: score the same way twice
    fake = D(batch.fake)
    scores = ganbench.Scores(real=None, fake=fake)  # as the loop gives it in G's phase
    g = run.plugins["loss:ragan"].ganbench_generator_loss(run=run, batch=batch, scores=scores)
    with torch.no_grad():
        real = D(batch.real)
    assert g.item() == pytest.approx(ragan_by_hand(real.tolist(), fake.tolist())[1], rel=1e-5)
    g.backward()  # G's graph reaches its parameters
    assert all(p.grad is not None for p in run.models.generator.parameters())


def test_nn_distance_matches_a_brute_force_reference():
    real, fake = torch.randn(7, 3), torch.randn(5, 3)
    dist = lambda a, b: math.dist(a.tolist(), b.tolist())  # noqa: E731
    got = nn_distance.nn_distances(real, fake)
    assert got[nn_distance.FAKE_TO_REAL] == pytest.approx(sum(min(dist(f, r) for r in real) for f in fake) / 5)
    assert got[nn_distance.REAL_TO_FAKE] == pytest.approx(sum(min(dist(r, f) for f in fake) for r in real) / 7)


def test_nn_distance_is_recorded_at_the_eval_point():
    result = gt.run_plugin(nn_distance, steps=2)
    last = result.evals[-1]
    assert last[nn_distance.FAKE_TO_REAL] > 0 and last[nn_distance.REAL_TO_FAKE] > 0


def test_nn_distance_refuses_a_space_the_data_lacks():
    with pytest.raises(ganbench.UsageError, match="pixels"):
        gt.run_plugin(nn_distance, params={"space": "inception"}, data="points")
