"""Conditional GAN (Mirza & Osindero 2014, "Conditional Generative Adversarial Nets") with a projection
discriminator (Miyato & Koyama 2018, "cGANs with Projection Discriminator"): G and D both see the class.

G(z, y) = G(z + E_G[y]): a learned per-class offset of the latent, which is the same as
concatenating the one-hot label to z and mapping the pair back to z_dim with a learned linear
layer that is the identity on z (Mirza & Osindero concatenate y to z). D(x, y) = ψ(φ(x)) +
<E_D[y], φ(x)>, with φ D's feature trunk (flattened) and ψ its head (Miyato & Koyama, eq. 3).
Labels are drawn uniformly over the classes; the trainer passes them to G and D.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import ganbench
from ganbench_plugins.architectures.split import check_split, parts


@dataclass(frozen=True)
class Params:
    latent_std: ganbench.PositiveFloat = 1.0  # std of the initial per-class latent offsets E_G (z is N(0, 1))
    projection_std: ganbench.PositiveFloat = 0.02  # std of the initial class embeddings E_D in D's projection


class ConditionalGenerator(nn.Module):
    """G(z, y) = base(z + embedding[y])."""

    def __init__(self, base: nn.Module, num_classes: int, z_dim: int, std: float) -> None:
        super().__init__()
        self.base = base
        self.embedding = nn.Embedding(num_classes, z_dim)
        nn.init.normal_(self.embedding.weight, 0.0, std)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.base(z + self.embedding(labels).to(z.dtype))


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = head(features(x)) + <embedding[y], flatten(features(x))> (Miyato & Koyama 2018)."""

    def __init__(self, features: nn.Module, head: nn.Module, num_classes: int, feature_size: int, std: float) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.embedding = nn.Embedding(num_classes, feature_size)
        nn.init.normal_(self.embedding.weight, 0.0, std)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        h = self.features(x)
        projection = (self.embedding(labels) * h.flatten(1)).sum(dim=1)
        return self.head(h) + projection


class Conditional:
    """Class-conditional G and D: label offsets of z, and a projection discriminator (CGAN + Miyato & Koyama)."""

    name = "conditional"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        if not setup.data.num_classes:
            return (f"{cls.name} needs a labelled dataset (num_classes set), but this one has no classes; "
                    "use it with mnist5k, a labelled torchvision set or a mixture")
        return check_split(cls.name, setup)

    @ganbench.hookimpl
    def ganbench_configure_models(self, run: ganbench.Run, models: ganbench.Models) -> None:
        num_classes = run.data.num_classes
        if not num_classes:
            raise ganbench.UsageError(f"{self.name}: the dataset has no classes")
        features, head = parts(models.discriminator, self.name)
        features, head = nn.Sequential(*features), nn.Sequential(*head)
        # The size of the flattened features, from one probe sample (once, at configuration).
        was_training = models.discriminator.training
        models.discriminator.eval()
        with torch.no_grad():
            probe = torch.zeros(1, *run.data.shape, device=run.device)
            feature_size = features(probe).flatten(1).shape[1]
        models.discriminator.train(was_training)
        models.discriminator = ProjectionDiscriminator(
            features, head, num_classes, feature_size, self.p.projection_std).to(run.device)
        models.generator = ConditionalGenerator(
            models.generator, num_classes, run.settings.z_dim, self.p.latent_std).to(run.device)

    @ganbench.hookimpl
    def ganbench_sample_labels(self, run: ganbench.Run, n: int) -> Tensor:
        return torch.randint(run.data.num_classes, (n,), generator=run.rng, device=run.device)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [Conditional]
