"""D as a classifier (Chintala et al. 2016, "How to Train a GAN?" tips: debug D alone on a vanilla
classification task).

D's body, with a fresh linear head, is trained for a short budget on the dataset's labels (or,
without labels, to tell real samples from noise of the data's mean and spread, and, for images,
from the same images with their pixels shuffled). Its held-out accuracy is compared with what a
tiny reference network reaches in the same budget: a D that cannot learn what a two-layer CNN
learns will not learn to tell fakes apart either.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import ganbench


@dataclass(frozen=True)
class Params:
    steps: ganbench.PositiveInt = 200  # training steps, for D's body and for the reference alike
    batch_size: ganbench.PositiveInt = 64  # samples per step
    held_out: ganbench.PositiveInt = 1000  # samples kept out of training, on which accuracy is measured
    lr: ganbench.PositiveFloat = 1e-3  # Adam's learning rate, for both networks
    fail_below: ganbench.Probability = 0.5  # ✗ when D gains less than this share of the reference's gain over chance
    warn_below: ganbench.Probability = 0.85  # ⚠ below this share


class Body(nn.Module):
    """D up to its head: `features` when D exposes them (splits_discriminator), else the input of
    D's last layer with weights, taken with a forward pre-hook."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator
        features = getattr(discriminator, "features", None)
        self.features = features if isinstance(features, nn.Module) else None
        leaves = [m for m in discriminator.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
        self.last = leaves[-1] if leaves else None
        self.how = "D.features" if self.features is not None else f"the input of D's last {type(self.last).__name__}"

    def forward(self, x: Tensor) -> Tensor:
        if self.features is not None:
            return self.features(x).flatten(1)
        if self.last is None:
            raise ganbench.UsageError("D has no layer with weights: there is no body to train")
        seen: list[Tensor] = []
        handle = self.last.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            self.discriminator(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)


def reference(data: ganbench.Data, classes: int) -> nn.Module:
    """A tiny network that learns any of these tasks in a few hundred steps."""
    if data.kind == "image":
        channels = data.shape[0]
        return nn.Sequential(nn.Conv2d(channels, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                             nn.Flatten(), nn.LazyLinear(classes))
    n_in = int(torch.tensor(data.shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, classes))


Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def sources(data: ganbench.Data, held_out: int, device: torch.device) -> tuple[Draw, Draw]:
    """(draw training samples, draw held-out samples) with labels. An in-memory dataset is split
    (the held-out part is never trained on); a generative one (mixtures) is drawn from afresh."""
    if isinstance(data, ganbench.TensorData) and data.y is not None and len(data) >= 2 * held_out:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).to(data.x.device)
        test, train = order[:held_out], order[held_out:]

        def draw_from(pool: Tensor) -> Draw:
            def draw(n: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
                index = pool[torch.randint(len(pool), (n,), generator=rng, device=rng.device).to(pool.device)]
                return data.batch(index), data.y[index]
            return draw

        return draw_from(train), draw_from(test)

    def draw(n: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = data.sample(n, rng)
        assert y is not None
        return x, y

    return draw, draw


def real_or(data: ganbench.Data, negative: str, device: torch.device) -> Draw:
    """Half real samples (label 1), half negatives (label 0): noise of the data's per-feature mean
    and std ("noise"), or the real samples with their values shuffled within each ("shuffled")."""
    probe_rng = torch.Generator(device=device).manual_seed(1)
    probe, _ = data.sample(512, probe_rng)
    mean, std = probe.mean(0), probe.std(0)

    def draw(n: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        real, _ = data.sample(n, rng)
        half = n // 2
        if negative == "noise":
            fake = mean + std * torch.randn(real[half:].shape, generator=rng, device=device)
        else:
            flat = real[half:].flatten(1)
            order = torch.rand(flat.shape, generator=rng, device=device).argsort(1)
            fake = flat.gather(1, order).view_as(real[half:])
        x = torch.cat([real[:half], fake])
        y = torch.cat([torch.ones(half, dtype=torch.long, device=device),
                       torch.zeros(n - half, dtype=torch.long, device=device)])
        return x, y

    return draw


def fit(model: nn.Module, train: Draw, test: Draw, p: Params, device: torch.device) -> float:
    """Train `model` with cross-entropy for p.steps steps; its held-out accuracy (in eval mode)."""
    rng = torch.Generator(device=device).manual_seed(2)
    x, _ = train(2, rng)
    with torch.no_grad():
        model(x)  # materialise lazy layers before the optimizer sees them
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    model.train()
    for _ in range(p.steps):
        x, y = train(p.batch_size, rng)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    test_rng = torch.Generator(device=device).manual_seed(3)
    correct, seen = 0, 0
    with torch.no_grad():
        while seen < p.held_out:
            n = min(250, p.held_out - seen)
            x, y = test(n, test_rng)
            correct += int((model(x).argmax(1) == y).sum())
            seen += n
    return correct / seen


class DClassifier:
    """Trains D's body with a fresh linear head as a classifier, against a tiny reference network."""

    name = "d-classifier"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    def diagnose(self, subject: ganbench.CheckSubject) -> ganbench.CheckResult:
        p, device = self.p, subject.device
        run = subject.build()
        data = run.data
        if data.num_classes:
            train, test = sources(data, p.held_out, device)
            tasks = [(f"{data.num_classes} classes", data.num_classes, train, test)]
        else:
            tasks = [("real vs noise", 2, real_or(data, "noise", device), real_or(data, "noise", device))]
            if data.kind == "image":
                tasks.append(("real vs shuffled pixels", 2, real_or(data, "shuffled", device),
                              real_or(data, "shuffled", device)))
        figures, values, shares = [], {}, []
        how = ""
        for label, classes, train, test in tasks:
            run = subject.build()  # a fresh D for each task
            assert run.models is not None
            body = Body(run.models.discriminator)
            how = body.how
            torch.manual_seed(run.seed)
            model = nn.Sequential(body, nn.LazyLinear(classes)).to(device)
            d_acc = fit(model, train, test, p, device)
            torch.manual_seed(run.seed)
            ref_acc = fit(reference(data, classes).to(device), train, test, p, device)
            chance = 1 / classes
            share = (d_acc - chance) / (ref_acc - chance) if ref_acc - chance > 0.05 else float("nan")
            shares.append((share, label, d_acc, ref_acc, chance))
            figures.append(f"{label}: D {d_acc:.3f}, reference {ref_acc:.3f} (chance {chance:.2f})")
            values[label] = {"d_accuracy": d_acc, "reference_accuracy": ref_acc, "chance": chance,
                             "share_of_reference_gain": None if share != share else share}
        budget = f"held-out accuracy after {p.steps} steps of {p.batch_size}: " + "; ".join(figures)
        values.update(steps=p.steps, batch_size=p.batch_size, held_out=p.held_out, body=how)
        if any(s != s for s, *_ in shares):
            bad = next(label for s, label, *_ in shares if s != s)
            return ganbench.CheckResult("warn", budget, f"the reference network learned nothing on {bad} either: "
                                        "do the labels belong to the samples? (or raise steps)", values)
        share, label, d_acc, ref_acc, chance = min(shares)
        if share < p.fail_below:
            return ganbench.CheckResult(
                "fail", budget, f"D's body ({how}) cannot learn {label} that a two-layer network learns: look for a "
                "detached or zeroed path, a dead layer, or a bottleneck that destroys the input", values)
        if share < p.warn_below:
            return ganbench.CheckResult(
                "warn", budget, f"D's body learns {label} more slowly than a two-layer network ({share:.0%} of its "
                "gain over chance): check D's normalisation and depth", values)
        return ganbench.CheckResult("ok", budget, "", values)


@ganbench.hookimpl
def ganbench_register_checks():
    return [DClassifier]
