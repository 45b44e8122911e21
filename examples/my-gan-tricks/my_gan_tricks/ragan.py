"""Relativistic average GAN loss (Jolicoeur-Martineau 2018, RaSGAN): D judges whether real data
is more realistic than the average fake, and G the reverse."""
import torch
import torch.nn.functional as F
from torch import Tensor

import ganbench


class RaGAN:
    """Relativistic average loss: BCE on each score minus the other side's mean score."""

    name = "ragan"
    params = None
    uses_targets = True  # the BCE targets of D's two terms, so label smoothing applies
    scores = "relativistic"  # only differences of D's scores enter the loss

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        real = scores.real - scores.fake.mean()  # is x_r more realistic than the average fake?
        fake = scores.fake - scores.real.mean()
        return (F.binary_cross_entropy_with_logits(real, targets.real)
                + F.binary_cross_entropy_with_logits(fake, targets.fake))

    @ganbench.hookimpl
    def ganbench_generator_loss(self, run: ganbench.Run, batch: ganbench.Batch,
                                scores: ganbench.Scores) -> Tensor:
        # In G's phase scores.real is None: the loop scores only the fakes. Score the real batch
        # here, with labels only when the run is conditional (fake_labels set), as the loop does.
        labels = batch.real_labels if batch.fake_labels is not None else None
        real_scores = ganbench.discriminate(run.models.discriminator, batch.real, labels)
        real = real_scores - scores.fake.mean()
        fake = scores.fake - real_scores.mean()
        return (F.binary_cross_entropy_with_logits(real, torch.zeros_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)))


@ganbench.hookimpl
def ganbench_register_losses():
    return [RaGAN]
