"""Unrolled GAN (Metz et al. 2017, "Unrolled Generative Adversarial Networks"): G's loss is taken
against D as it will be after k more of its own updates.

At each G update the trick copies D's weights, makes k functional D updates on the current batch
(torch.func.functional_call; D's own weights, buffers and optimizer state are left untouched), and
scores `batch.fake` with the unrolled weights; the run's loss then turns those scores into G's loss.

Gradient flow: with `second_order = false` (the default, the common cheaper approximation) the
unrolled weights are constants, so G's gradient is the ordinary one taken at the look-ahead D. With
`second_order = true` (the paper's full method) the k updates are differentiated too (create_graph),
so G's gradient also carries how D's updates would respond to G, at several times the cost.

The look-ahead updates replay D's optimizer: Adam and AdamW from their live moment estimates and
step count (weight decay left out), any other optimizer as plain gradient steps at D's learning
rate. They use targets 1 and 0 and the loss alone: target tricks, penalties and weight clipping
are not replayed. BatchNorm statistics and spectral-norm vectors are not advanced by them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

import ganbench


@dataclass(frozen=True)
class Params:
    k: ganbench.NonNegativeInt = 5  # D updates G looks ahead (the paper: 5 to 10; 0 is the plain loss)
    second_order: bool = False  # differentiate through the unrolled updates (the paper's full method; slower)


class Unrolled:
    """G's loss against D unrolled k steps ahead (Metz et al. 2017); first-order unless second_order is set."""

    name = "unrolled"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self._inside = False  # set while the run's loss is asked for G's loss on the unrolled scores

    def unrolled_weights(self, run: ganbench.Run, step: ganbench.Step, batch: ganbench.Batch,
                         buffers: dict[str, Tensor]) -> dict[str, Tensor]:
        """D's weights after k functional updates on `batch`, by name."""
        D, opt = run.models.discriminator, run.optimizers.discriminator
        live = dict(D.named_parameters())
        theta = {name: p.detach().requires_grad_(True) for name, p in live.items()}
        if self.p.k == 0:
            return theta
        group = opt.param_groups[0]
        lr = group["lr"]
        adam = isinstance(opt, (torch.optim.Adam, torch.optim.AdamW))
        if adam:
            b1, b2 = group["betas"]
            eps = group["eps"]
            state = {name: opt.state.get(p, {}) for name, p in live.items()}
            m = {name: s.get("exp_avg", torch.zeros_like(live[name])) for name, s in state.items()}
            v = {name: s.get("exp_avg_sq", torch.zeros_like(live[name])) for name, s in state.items()}
            t = {name: s.get("step", 0) for name, s in state.items()}  # a tensor on the host or device: no read
        real = batch.real.detach()
        fake = batch.fake if self.p.second_order else batch.fake.detach()
        real_labels = batch.real_labels if batch.fake_labels is not None else None
        n = real.shape[0]
        targets = ganbench.Targets(real=torch.ones(n, device=real.device), fake=torch.zeros(n, device=real.device))
        for _ in range(self.p.k):
            scores = ganbench.Scores(real=self.score(D, theta, buffers, real, real_labels),
                                     fake=self.score(D, theta, buffers, fake, batch.fake_labels))
            d_loss = run.hook.ganbench_discriminator_loss(run=run, step=step, scores=scores, targets=targets)
            names = list(theta)
            grads = torch.autograd.grad(d_loss, [theta[k] for k in names], create_graph=self.p.second_order,
                                        allow_unused=True)
            new = {}
            for name, g in zip(names, grads):
                if g is None:  # a weight this loss does not reach
                    new[name] = theta[name]
                    continue
                if adam:
                    m[name] = b1 * m[name] + (1 - b1) * g
                    v[name] = b2 * v[name] + (1 - b2) * g * g
                    t[name] = t[name] + 1
                    m_hat = m[name] / (1 - b1 ** t[name])
                    # The tiny term keeps sqrt differentiable where v is exactly 0 (second order).
                    v_hat = v[name] / (1 - b2 ** t[name]) + 1e-30
                    new[name] = theta[name] - lr * m_hat / (v_hat.sqrt() + eps)
                else:
                    new[name] = theta[name] - lr * g
            theta = new if self.p.second_order else {k: w.detach().requires_grad_(True) for k, w in new.items()}
        return theta

    @staticmethod
    def score(D: torch.nn.Module, theta: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
              labels: Tensor | None) -> Tensor:
        args = (x,) if labels is None else (x, labels)
        return functional_call(D, {**theta, **buffers}, args)

    # tryfirst: answer before the loss plugin, then ask the loss (this hook stops at first result).
    @ganbench.hookimpl(tryfirst=True)
    def ganbench_generator_loss(self, run: ganbench.Run, step: ganbench.Step, batch: ganbench.Batch,
                                scores: ganbench.Scores) -> Tensor | None:
        if self._inside:
            return None  # the call below: let the run's loss answer
        D = run.models.discriminator
        # Copies, so the look-ahead's forward passes do not move BatchNorm or spectral-norm state.
        buffers = {name: b.clone() for name, b in D.named_buffers()}
        theta = self.unrolled_weights(run, step, batch, buffers)
        unrolled = ganbench.Scores(real=None, fake=self.score(D, theta, buffers, batch.fake, batch.fake_labels))
        self._inside = True
        try:
            return run.hook.ganbench_generator_loss(run=run, step=step, batch=batch, scores=unrolled)
        finally:
            self._inside = False


@ganbench.hookimpl
def ganbench_register_tricks():
    return [Unrolled]
