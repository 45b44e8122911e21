"""BatchNorm and how batches reach it (Ioffe & Szegedy 2015; Chintala et al. 2016, "How to Train a
GAN?" tip 4: real and fake in separate mini-batches).

D with BatchNorm while `d_batch = "combined"` normalises real and fake samples with each other's
statistics. G with BatchNorm samples differently in eval mode (running statistics, which metrics
and sample grids use) than in train mode (batch statistics, which D trained against): the figure
is that difference after a few training steps, as a share of the samples' spread.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import ganbench


@dataclass(frozen=True)
class Params:
    steps: ganbench.PositiveInt = 20  # training steps before G's eval and train modes are compared
    samples: ganbench.PositiveInt = 256  # samples compared
    gap_warn: ganbench.PositiveFloat = 1.0  # ⚠ when mean |train - eval| is this share of the samples' std (early in training the running statistics lag)


def batchnorms(network: nn.Module) -> list[str]:
    return [name for name, m in network.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BatchNormCheck:
    """D's BatchNorm with combined real and fake batches; G's eval-mode samples against its train-mode ones."""

    name = "batchnorm"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    def diagnose(self, subject: ganbench.CheckSubject) -> ganbench.CheckResult:
        p = self.p
        run = subject.build()
        assert run.models is not None
        d_bn, g_bn = batchnorms(run.models.discriminator), batchnorms(run.models.generator)
        combined = list(dict.fromkeys(s.config for s in subject.specs if s.settings.d_batch == "combined"))
        subject.train(run, p.steps)
        G = run.models.generator
        z = run.hook.ganbench_sample_latent(run=run, n=p.samples)
        labels = run.hook.ganbench_sample_labels(run=run, n=p.samples)
        state = {k: v.clone() for k, v in G.state_dict().items()}
        with torch.no_grad():
            G.eval()
            in_eval = ganbench.generate(G, z, labels)
            G.train()
            in_train = ganbench.generate(G, z, labels)
        G.load_state_dict(state)  # the train-mode pass moved the running statistics
        gap = float((in_train - in_eval).abs().mean() / in_train.std().clamp_min(1e-12))
        figure = (f"D has {len(d_bn)} BatchNorm layer(s), G {len(g_bn)}; "
                  f"{'configs ' + ', '.join(combined) + ' use' if combined else 'no config uses'} d_batch = \"combined\"; "
                  f"G's eval-mode samples differ from train-mode by {gap:.2f} of their std after {p.steps} steps")
        values = {"d_batchnorm": d_bn, "g_batchnorm": g_bn, "combined_configs": combined, "eval_train_gap": gap,
                  "steps": p.steps}
        if not torch.isfinite(torch.tensor(gap)):
            return ganbench.CheckResult("fail", figure, "G's samples are not finite in one of the modes", values)
        warns = []
        if d_bn and combined:
            warns.append(f"{', '.join(combined)}: D's BatchNorm mixes real and fake statistics in one batch; use "
                         'd_batch = "separate", or d_norm = "layer" / spectral norm in D')
        if gap > p.gap_warn:
            warns.append("the evaluated G (eval mode, BatchNorm's running statistics) is not the G that D trained "
                         "against: compare the sample grids, or use an EMA of G or no BatchNorm in G")
        if warns:
            return ganbench.CheckResult("warn", figure, "; ".join(warns), values)
        return ganbench.CheckResult("ok", figure, "", values)


@ganbench.hookimpl
def ganbench_register_checks():
    return [BatchNormCheck]
