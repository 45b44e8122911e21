"""D as a feature trunk and a head: the protocol that tricks which change D's last layers rely on.

An architecture whose D exposes `features` and `head` (modules with D(x) == head(features(x))) sets
`splits_discriminator = True` on its plugin class. Minibatch discrimination and minibatch standard
deviation then append features between the two, and the conditional trick projects labels onto
the features (Miyato & Koyama 2018). This module registers no plugin; it holds the shared parts.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

import ganbench


class SplitSequential(nn.Sequential):
    """A Sequential whose last `head_size` modules are D's head and the others its feature trunk.

    Indexing, parameter names and state dicts are those of a plain Sequential of the same modules.
    """

    def __init__(self, *modules: nn.Module, head_size: int) -> None:
        super().__init__(*modules)
        self.head_size = head_size

    @property
    def features(self) -> nn.Sequential:
        return nn.Sequential(*list(self)[: len(self) - self.head_size])

    @property
    def head(self) -> nn.Sequential:
        return nn.Sequential(*list(self)[len(self) - self.head_size:])


def check_split(trick: str, setup) -> str | None:
    """Why `trick` cannot change this architecture's D, or None when it can."""
    if not getattr(setup.architecture.cls, "splits_discriminator", False):
        return (f'{trick} needs a discriminator split into features and a head (splits_discriminator = True), '
                f'which architecture "{setup.architecture.name}" does not declare; use dcgan, mlp or progressive-dcgan')
    return None


def parts(discriminator: nn.Module, trick: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """D's trunk and head as lists of modules, or a UsageError naming the trick."""
    features, head = getattr(discriminator, "features", None), getattr(discriminator, "head", None)
    if not isinstance(features, nn.Module) or not isinstance(head, nn.Module):
        raise ganbench.UsageError(f"{trick}: the discriminator ({type(discriminator).__name__}) exposes no "
                                  "`features` and `head` modules to insert a layer between")

    def as_list(module: nn.Module) -> list[nn.Module]:
        return list(module) if isinstance(module, nn.Sequential) else [module]

    return as_list(features), as_list(head)


def widen(layer: nn.Module, extra: int, trick: str) -> nn.Module:
    """A copy of the head's first layer (Linear or Conv2d) taking `extra` more input features.

    The old weights are kept; the new input weights are drawn with the old weights' std, so the
    added features start at the same scale as the others. Called once, at configuration.
    """
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features + extra, layer.out_features, bias=layer.bias is not None)
        old_in = layer.in_features
    elif isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(layer.in_channels + extra, layer.out_channels, layer.kernel_size, layer.stride,
                        layer.padding, layer.dilation, layer.groups, bias=layer.bias is not None)
        old_in = layer.in_channels
    else:
        raise ganbench.UsageError(f"{trick}: D's head starts with {type(layer).__name__}; "
                                  "it must start with a Linear or Conv2d layer to take extra features")
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight[:, :old_in] = layer.weight
        new.weight[:, old_in:].normal_(0.0, float(layer.weight.std()))
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def append_features(discriminator: nn.Module, layer: nn.Module, extra: int, trick: str) -> SplitSequential:
    """A new D: the old trunk, then `layer` (which adds `extra` channels on dim 1), then the old head
    with its first layer widened to take them."""
    features, head = parts(discriminator, trick)
    head = [widen(head[0], extra, trick), *head[1:]]
    return SplitSequential(*features, layer, *head, head_size=len(head))


def concat_channels(h: Tensor, extra: Tensor) -> Tensor:
    """`h` (n, C, ...) with `extra` (n, E) appended as E channels, constant over any spatial dims."""
    extra = extra.reshape(*extra.shape, *([1] * (h.dim() - 2))).expand(-1, -1, *h.shape[2:])
    return torch.cat([h, extra.to(h.dtype)], dim=1)
