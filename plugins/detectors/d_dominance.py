"""Discriminator dominance (D-loss collapse, vanishing G gradients), judged per loss family.

D dominates when it separates real from fake almost perfectly, for a window of records. What
"almost perfectly" means depends on the loss's `scores`:
  logit (bce, minimax)   D loss under `loss_floor` (chance is 2 ln 2 = 1.39) and accuracy >= `accuracy`.
                         A healthy DCGAN on MNIST spends its first few hundred steps near a D loss
                         of 0.03 with perfect accuracy; a dominating D (lr x10, G's x0.1) is under 0.003
  least-squares (lsgan)  D loss under `loss_floor` and D(x) - D(G(z)) >= `gap`
  margin (hinge)         accuracy >= `accuracy` and G's gradient collapsed: a hinge D loss of 0
                         only says every sample is past its margin, which healthy runs reach
  relativistic (RaGAN)   D loss under `loss_floor` and mean D(x) above mean D(G(z)): the loss reads only
                         differences of scores, so raw accuracy (real > 0, fake < 0) means nothing
  critic (wgan, wgan-gp) not judged: a critic has no saturation point; see vanishing-gradients
  other                  not judged: the loss says its scores fit none of these
G's gradient norm against its early baseline is evidence in every case; when it has also fallen
under `g_collapse` of the baseline, the incident is critical: G is no longer learning. With the
non-saturating loss (bce) G's gradient does not vanish when D dominates (that is the point of the
loss; Goodfellow et al. 2014): it grows while D's own gradient vanishes, and both are in the evidence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench
from ganbench.detection import Baseline, Sustained, finite, rounded


@dataclass(frozen=True)
class Params:
    window: ganbench.PositiveInt = 5  # consecutive train records D must dominate
    loss_floor: ganbench.PositiveFloat = 0.01  # logit losses: D loss below this is near zero
    accuracy: ganbench.Probability = 0.99  # D's accuracy (real > 0, fake < 0) at or above this is saturated
    gap: ganbench.PositiveFloat = 0.9  # least-squares: mean D(x) - D(G(z)) at or above this is saturated
    g_collapse: ganbench.Probability = 0.1  # G's gradient norm under this fraction of its baseline has collapsed
    baseline_skip: ganbench.NonNegativeInt = 1  # train records skipped before G's gradient baseline
    baseline_records: ganbench.PositiveInt = 5  # train records whose median is the baseline


class DDominance(ganbench.PlainState):
    """D separating real from fake perfectly while G's gradients collapse, aware of the loss."""

    name = "d-dominance"
    paper = ''
    params = Params
    kinds = {"d-dominance": "collapsed"}

    def __init__(self, params: Params) -> None:
        self.p = params
        self.sustained = Sustained(params.window)
        self.g_baseline = Baseline(params.baseline_skip, params.baseline_records)

    def saturated(self, scores: str, record: dict[str, Any], g_collapsed: bool) -> bool | None:
        d_loss, acc, gap = record.get("d_loss"), record.get("d_acc"), record.get("d_gap")
        if scores == "logit":
            return finite(d_loss) and finite(acc) and d_loss < self.p.loss_floor and acc >= self.p.accuracy
        if scores == "least-squares":
            return finite(d_loss) and finite(gap) and d_loss < self.p.loss_floor and gap >= self.p.gap
        if scores == "relativistic":
            return finite(d_loss) and finite(gap) and d_loss < self.p.loss_floor and gap > 0
        if scores == "margin":
            return finite(acc) and acc >= self.p.accuracy and g_collapsed
        return None  # critic or other

    @ganbench.hookimpl
    def ganbench_detect(self, run: ganbench.Run, record: dict[str, Any]) -> list[ganbench.Incident] | None:
        if record["kind"] != "train":
            return None
        g_norm = record.get("grad_norm_g")
        base = self.g_baseline.update(g_norm)
        g_collapsed = base is not None and finite(g_norm) and g_norm < self.p.g_collapse * base
        scores = getattr(run.settings.loss.cls, "scores", None)
        saturated = self.saturated(scores, record, g_collapsed)
        if saturated is None or not self.sustained.update(bool(saturated), record["step"]):
            return None
        evidence = {key: rounded(record.get(key)) for key in ("d_loss", "d_acc", "d_real", "d_fake", "d_gap",
                                                               "g_loss", "grad_norm_d")}
        evidence.update({"loss_scores": scores, "grad_norm_g": rounded(g_norm), "grad_norm_g_baseline": rounded(base),
                         "g_collapsed": g_collapsed, "window": self.p.window})
        g_text = (f"G's gradient norm fell to {g_norm / base:.2g}x its early value" if g_collapsed and base
                  else "G still gets gradient")
        return [ganbench.Incident(
            "d-dominance", "critical" if g_collapsed else "warning",
            f"D has separated real from fake for {self.p.window} records (D loss {record.get('d_loss'):.3g}, "
            f"accuracy {record.get('d_acc'):.3f}); {g_text}",
            evidence, step=self.sustained.start_step)]


@ganbench.hookimpl
def ganbench_register_detectors():
    return [DDominance]
