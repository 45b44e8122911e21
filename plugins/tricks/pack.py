"""PacGAN packing (Lin, Khetan, Fanti & Oh 2018, "PacGAN: The power of two samples in generative
adversarial networks"): D judges m samples at once, so a G that repeats itself is easy to spot.

D is built for packs: the architecture is asked for its models twice, once as is (G is kept) and
once for data whose samples are m times as wide (D is kept), so D's first layer takes m·C channels
of an image (n, C, H, W) -> (n/m, m·C, H, W), or m·F features of points (n, F) -> (n/m, m·F).
`Packed` wraps that D: it packs m consecutive samples of whatever batch it is given and repeats
each pack's score m times (`repeat_interleave`), so losses, target tricks, penalties and detectors
still see one score per sample, shape (n,). Real and fake are scored in separate calls, and a
combined batch (`d_batch = "combined"`) splits at n, a multiple of m, so every pack holds samples
of one side only, as in the paper. Repeating scores leaves each loss's mean unchanged: the mean
over n repeated scores is the mean over the n/m packs. G is untouched.

The authors' code (github.com/fjxmlzn/PacGAN) packs the same way. Images (stacked MNIST,
`VEEGAN_experiment/model.py`, TensorFlow, NHWC): G is run on m separate noise batches and the
outputs are concatenated on the channel axis (`tf.concat(self.G_sep, 3)`); real packs are m images
stacked on that axis, and D's first conv widens because it takes its input channels from its input
(c_dim = m · 3). Points (2-D ring and grid, `pacgan/bricks.py`, Theano/Blocks): G's m outputs are
concatenated on the feature axis (`concatenate(x_tildes, axis=1)`) and D's first layer has
`input_dim = num_xdim * num_packing`.

Differences: there a batch is `batch_size` packs, so G draws m · batch_size samples per step;
here a batch of `batch_size` samples makes batch_size / m packs (multiply batch_size by m to
match). Their real packs are drawn once into a fixed training set; here every batch forms new
ones. Penalties that differentiate D's scores on their own inputs (wgan-gp, dragan, r1) see the
repeated pack score, so each sample's input gradient is m times its share of the pack's: wgan-gp
and dragan hold the pack critic to a gradient norm near 1/sqrt(m), and r1 acts with weight m·gamma
on packs (the paper uses neither). Unconditional runs only: a pack of m samples has no single label.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

import ganbench

# Tricks that rebuild D from its `features` and `head` (split.py): the Packed wrapper hides them.
SPLIT_TRICKS = ("minibatch-discrimination", "minibatch-std")
# Architectures whose plugin keeps what it built (progressive-dcgan's growth schedule): a second
# build for D would give D a schedule the architecture never advances.
STATEFUL_ARCHITECTURES = ("progressive-dcgan",)


@dataclass(frozen=True)
class Params:
    m: Literal[2, 3, 4] = 2  # samples per pack that D judges together (the paper: 2, 3 and 4)


class PackedData:
    """`run.data` as D's builder sees it: each sample m times as wide on dim 0 (channels or
    features). Everything else (kind, classes, sampling) is the dataset's own."""

    def __init__(self, data: ganbench.Data, m: int) -> None:
        self.data = data
        self.shape = (m * data.shape[0], *data.shape[1:])

    @property
    def info(self) -> ganbench.DataInfo:
        return dataclasses.replace(self.data.info, shape=self.shape)

    def __getattr__(self, name: str) -> Any:
        if name == "data":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)


class Packed(nn.Module):
    """D on packs: (n, C, ...) -> (n/m, m·C, ...) -> `packed` -> each pack's score repeated m times."""

    def __init__(self, packed: nn.Module, m: int) -> None:
        super().__init__()
        self.packed, self.m = packed, m

    def forward(self, x: Tensor, *labels: Tensor) -> Tensor:
        if labels:
            raise ganbench.UsageError("pack: D was given class labels, but a pack of samples has no single "
                                      "label; pack needs an unconditional run")
        n, m = x.shape[0], self.m  # Python ints: no device read
        if n % m:
            raise ValueError(f"pack: D was given {n} samples, not a multiple of m = {m}")
        # Row i of the packed batch is torch.cat(x[m·i : m·i + m], dim=0): m consecutive samples.
        packs = x.reshape(n // m, m * x.shape[1], *x.shape[2:])
        return self.packed(packs).repeat_interleave(m, dim=0)


class Pack:
    """D judges packs of m same-side samples concatenated on channels or features (PacGAN, Lin et al. 2018)."""

    name = "pack"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self._inside = False  # set while the architecture builds the models for this trick

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        m, n = params.m, setup.batch_size
        if setup.data.kind not in ("image", "points"):
            return f'pack packs images or points, but the data is of kind "{setup.data.kind}"'
        if n % m:
            return (f"batch_size {n} is not a multiple of m = {m}: D sees each batch as packs of m samples; "
                    f"choose a batch_size divisible by {m}")
        for trick in setup.tricks:
            if trick.name == "conditional":
                return ('a pack of several samples has no single class label, so pack needs an unconditional '
                        'run; drop "conditional"')
            if trick.name in SPLIT_TRICKS:
                return (f'pack wraps D to pack its inputs, so "{trick.name}" cannot reach the features and '
                        'head of D; use one of the two')
        if setup.architecture.name in STATEFUL_ARCHITECTURES:
            return (f'"{setup.architecture.name}" keeps state from building its models (its growth schedule), '
                    'and pack builds D in a second call; use dcgan or mlp')
        return None

    # tryfirst: answer before the architecture, then ask it twice (this hook stops at first result).
    @ganbench.hookimpl(tryfirst=True)
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models | None:
        if self._inside:
            return None  # the calls below: let the architecture answer
        architecture = run.plugins.get(f"architecture:{run.settings.architecture.name}")
        self._inside = True
        try:
            # G first, so G's weights are those of the same run without packing.
            generator = run.hook.ganbench_build_models(run=run).generator
            before = dict(vars(architecture)) if architecture is not None else {}
            packed_run = dataclasses.replace(run, data=PackedData(run.data, self.p.m))
            discriminator = run.hook.ganbench_build_models(run=packed_run).discriminator
        finally:
            self._inside = False
        changed = [key for key, value in before.items()
                   if not (value is vars(architecture).get(key) or _equal_plain(value, vars(architecture).get(key)))]
        if changed:
            raise ganbench.UsageError(
                f'pack: architecture "{run.settings.architecture.name}" keeps state from building its models '
                f'({", ".join(changed)}), which pack\'s second build for D would replace; use dcgan or mlp')
        return ganbench.Models(generator=generator, discriminator=Packed(discriminator, self.p.m))


def _equal_plain(a: Any, b: Any) -> bool:
    """Equal numbers or strings (an architecture may set these again on every build)."""
    plain = (bool, int, float, str, type(None))
    return isinstance(a, plain) and type(a) is type(b) and a == b


@ganbench.hookimpl
def ganbench_register_tricks():
    return [Pack]
