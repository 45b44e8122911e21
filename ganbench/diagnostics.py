"""Training diagnostics: the core's own plugin, on unless a suite sets `diagnostics = false`.

Every step, on the device and without a host read: the global gradient norm of each network
(taken after backward, before the optimizer step and before any clipping trick: this plugin's
hooks are tryfirst), its running mean and maximum, and the first step whose gradients were
non-finite. At each log record, one device read adds: per-layer gradient and weight norms, the
spectral norm of each of D's weight matrices (a power iteration whose vectors persist between
records, so one iteration per record suffices), the G/D gradient ratio, and the diversity of the
last generated batch against the last real batch. Detectors read these keys from the record.

Keys added to a train record (all floats unless said):
  grad_norm_g, grad_norm_d          mean global L2 gradient norm over the interval's updates
  grad_norm_g_max, grad_norm_d_max  the largest of them
  grad_ratio                        grad_norm_g / grad_norm_d
  weight_norm_g, weight_norm_d      global L2 norm of the parameters
  sn_max_d                          the largest spectral norm among D's weight matrices
  batch_diversity                   mean pairwise distance within the fake batch / within the real batch
  duplicate_rate                    share of fakes whose nearest other fake is closer than all but
                                    5% of real-to-real nearest-neighbour distances
  layers                            {"g"|"d": {layer: {"grad": .., "weight": .., "sn": .. (D only)}}}
  nonfinite.gradients / .weights    {"step", "keys"}: present only when something was non-finite
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganbench.hookspecs import hookimpl
from ganbench.state import Batch, Run, Step

NETWORKS = {"generator": "g", "discriminator": "d"}
POWER_ITERATIONS_FIRST = 20  # the first estimate starts from a random vector
DUPLICATE_QUANTILE = 0.05
MAX_DIVERSITY_POINTS = 256  # pairwise distances on at most this many samples per side
EXACT_DISTANCES = "donot_use_mm_for_euclid_dist"  # identical samples at distance exactly 0


def layer_name(param_name: str) -> str:
    """"main.3.weight" -> "main.3"; spectral norm's "main.3.parametrizations.weight.original" -> "main.3"."""
    name = param_name.replace(".parametrizations.weight.original", ".weight")
    return name.rsplit(".", 1)[0] if "." in name else name


class NetworkStats:
    """One network's gradient norms between two log records, kept on the device.

    Each update costs three kernels (the per-parameter norms, their stack, the global norm); the
    norms are only collected here, and reduced (mean, max, first non-finite step) at the log record.
    """

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        named = [(n, p) for n, p in module.named_parameters()]
        self.params = [p for _, p in named]
        self.layers = list(dict.fromkeys(layer_name(n) for n, _ in named))
        # layer index of each parameter, to sum squared norms per layer with one index_add
        self.index = torch.tensor([self.layers.index(layer_name(n)) for n, _ in named], device=device)
        self.device = device
        self.norms: list[Tensor] = []  # global norm of each update since the last record
        self.steps: list[int] = []  # the step of each
        self.last_param_norms = torch.zeros(len(self.params), device=device)

    def add(self, step_index: int) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        # _foreach_norm is what torch.nn.utils.clip_grad_norm_ uses: one fused kernel over all grads
        per_param = torch.stack(torch._foreach_norm(grads))
        self.norms.append(torch.linalg.vector_norm(per_param))
        self.steps.append(step_index)
        if len(grads) == len(self.params):
            self.last_param_norms = per_param

    def summary(self) -> Tensor:
        """[mean, max, index of the first non-finite norm or -1] of the collected norms; then reset."""
        if not self.norms:
            return torch.tensor([float("nan"), float("nan"), -1.0], device=self.device)
        norms = torch.stack(self.norms)
        bad = ~torch.isfinite(norms)
        first_bad = torch.where(bad.any(), bad.float().argmax().float(), torch.tensor(-1.0, device=self.device))
        self.norms = []
        return torch.stack([norms.mean(), norms.max(), first_bad])

    def per_layer(self, param_norms: Tensor) -> Tensor:
        squares = torch.zeros(len(self.layers), device=self.device).index_add_(0, self.index, param_norms.square())
        return squares.sqrt()


class SpectralNorms:
    """Largest singular value of each of D's weight matrices, by persistent power iteration."""

    def __init__(self, discriminator: nn.Module) -> None:
        self.modules = [(name, m) for name, m in discriminator.named_modules()
                        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d))]
        self.u: dict[str, Tensor] = {}

    @torch.no_grad()
    def estimate(self, discriminator: nn.Module) -> tuple[list[str], Tensor]:
        # Reading a spectrally normalised weight in train mode would advance its own power
        # iteration and change training; eval mode reads it as it stands.
        was_training = discriminator.training
        discriminator.eval()
        try:
            sigmas = []
            for name, module in self.modules:
                w = module.weight.detach()
                w = (w.transpose(0, 1) if isinstance(module, nn.ConvTranspose2d) else w).reshape(w.shape[0], -1)
                u = self.u.get(name)
                iterations = 1
                if u is None:
                    u = F.normalize(torch.randn(w.shape[0], device=w.device, generator=_seeded(w.device)), dim=0)
                    iterations = POWER_ITERATIONS_FIRST
                for _ in range(iterations):
                    v = F.normalize(w.t() @ u, dim=0)
                    u = F.normalize(w @ v, dim=0)
                self.u[name] = u
                sigmas.append(torch.dot(u, w @ v))
        finally:
            discriminator.train(was_training)
        names = [layer_name(f"{n}.weight") if n else "(root)" for n, _ in self.modules]
        return names, torch.stack(sigmas) if sigmas else torch.zeros(0)


def _seeded(device: torch.device) -> torch.Generator:
    # A fixed generator: the estimate never draws from the run's random stream.
    g = torch.Generator(device=device)
    g.manual_seed(0)
    return g


def features(x: Tensor) -> Tensor:
    """A label-free feature space for batch diversity: raw coordinates for points; for images,
    pixels average-pooled to at most 16x16 (robust to one-pixel jitter, cheap to compare)."""
    x = x.detach().float()
    if x.dim() == 4:
        if x.shape[-1] > 16:
            x = F.adaptive_avg_pool2d(x, 16)
        return x.flatten(1)
    return x.flatten(1)


def batch_diversity(real: Tensor, fake: Tensor) -> Tensor:
    """[diversity ratio, duplicate rate] of a fake batch against a real batch, on the device."""
    fr, ff = features(real[:MAX_DIVERSITY_POINTS]), features(fake[:MAX_DIVERSITY_POINTS])
    # cdist's matrix-multiply shortcut (taken for more than 25 rows) computes |x|² + |y|² - 2x·y,
    # which cancels badly for close samples: identical fakes come out at a distance that depends on
    # the BLAS kernel instead of 0. Direct differences cost up to 6x more, once per log record:
    # at most 45 ms on 2 CPU cores (256 points of 3x16x16 features), 1 ms for 64 MNIST digits.
    d_rr = torch.cdist(fr, fr, compute_mode=EXACT_DISTANCES)
    d_ff = torch.cdist(ff, ff, compute_mode=EXACT_DISTANCES)
    off_r = ~torch.eye(len(fr), dtype=torch.bool, device=fr.device)
    off_f = ~torch.eye(len(ff), dtype=torch.bool, device=ff.device)
    ratio = d_ff[off_f].mean() / d_rr[off_r].mean().clamp_min(1e-12)
    nn_real = d_rr.masked_fill(~off_r, float("inf")).min(dim=1).values
    nn_fake = d_ff.masked_fill(~off_f, float("inf")).min(dim=1).values
    threshold = torch.quantile(nn_real, DUPLICATE_QUANTILE)
    duplicates = (nn_fake <= threshold).float().mean()
    return torch.stack([ratio, duplicates])


class Diagnostics:
    """Gradient, weight and spectral norms, and batch diversity, into every train record."""

    def __init__(self) -> None:
        self.stats: dict[str, NetworkStats] = {}
        self.spectral: SpectralNorms | None = None
        self.batch: tuple[Tensor, Tensor] | None = None

    def _network(self, run: Run, network: str) -> NetworkStats:
        if network not in self.stats:
            assert run.models is not None
            self.stats[network] = NetworkStats(getattr(run.models, network), run.device)
        return self.stats[network]

    @hookimpl(tryfirst=True)
    def ganbench_after_backward(self, run: Run, step: Step, network: str) -> None:
        self._network(run, network).add(step.index)

    @hookimpl
    def ganbench_state_dict(self) -> dict[str, Any]:
        # The open interval's norms and the power iteration's vectors; the last batch is not
        # kept, since every step replaces it before the next record reads it.
        return {"networks": {network: {"norms": list(stats.norms), "steps": list(stats.steps),
                                       "last_param_norms": stats.last_param_norms}
                             for network, stats in self.stats.items()},
                "spectral_u": None if self.spectral is None else dict(self.spectral.u)}

    @hookimpl
    def ganbench_load_state_dict(self, run: Run, state: dict[str, Any]) -> None:
        for network, saved in state["networks"].items():
            stats = self._network(run, network)
            stats.norms, stats.steps = list(saved["norms"]), list(saved["steps"])
            stats.last_param_norms = saved["last_param_norms"]
        if state["spectral_u"] is not None:
            assert run.models is not None
            self.spectral = SpectralNorms(run.models.discriminator)
            self.spectral.u = dict(state["spectral_u"])

    @hookimpl(tryfirst=True)
    def ganbench_discriminator_inputs(self, step: Step, batch: Batch) -> None:
        if step.phase == "d":  # the batches as sampled, before any trick perturbs them
            self.batch = (batch.real, batch.fake)

    @hookimpl(tryfirst=True)
    def ganbench_log_record(self, run: Run, step: int, record: dict[str, Any]) -> None:
        assert run.models is not None
        parts: list[Tensor] = []  # everything read from the device, in one transfer
        layout: list[tuple[str, int]] = []

        def put(key: str, value: Tensor) -> None:
            value = value.reshape(-1).float()
            parts.append(value)
            layout.append((key, value.numel()))

        steps: dict[str, list[int]] = {}
        for network, short in NETWORKS.items():
            stats = self._network(run, network)
            steps[short], stats.steps = stats.steps, []
            put(f"grad_{short}", stats.summary())
            put(f"layer_grad_{short}", stats.per_layer(stats.last_param_norms))
            weight_norms = torch.stack(torch._foreach_norm([p.detach() for p in stats.params]))
            put(f"weight_norm_{short}", torch.linalg.vector_norm(weight_norms))
            put(f"layer_weight_{short}", stats.per_layer(weight_norms))
        if self.spectral is None:
            self.spectral = SpectralNorms(run.models.discriminator)
        sn_names, sigmas = self.spectral.estimate(run.models.discriminator)
        put("sn_d", sigmas)
        if self.batch is not None:
            put("diversity", batch_diversity(*self.batch))

        flat = torch.cat(parts).tolist() if parts else []
        values: dict[str, list[float]] = {}
        at = 0
        for key, size in layout:
            values[key] = flat[at:at + size]
            at += size

        for network, short in NETWORKS.items():
            stats = self.stats[network]
            mean, largest, first_bad = values[f"grad_{short}"]
            record[f"grad_norm_{short}"] = mean
            record[f"grad_norm_{short}_max"] = largest
            record[f"weight_norm_{short}"] = values[f"weight_norm_{short}"][0]
            layers = record.setdefault("layers", {}).setdefault(short, {})
            for name, grad, weight in zip(stats.layers, values[f"layer_grad_{short}"], values[f"layer_weight_{short}"]):
                layers[name] = {"grad": grad, "weight": weight}
            if first_bad >= 0:
                bad_step = steps[short][int(first_bad)]
                record.setdefault("nonfinite", {})[f"gradients_{short}"] = {"step": bad_step, "keys": [f"{network} gradients"]}
            if not all(map(_finite, values[f"layer_weight_{short}"])):
                bad = [n for n, w in zip(stats.layers, values[f"layer_weight_{short}"]) if not _finite(w)]
                record.setdefault("nonfinite", {})[f"weights_{short}"] = {"step": step, "keys": [f"{network} weights ({', '.join(bad[:3])})"]}
        d_layers = record["layers"]["d"]
        for name, sigma in zip(sn_names, values["sn_d"]):
            d_layers.setdefault(name, {})["sn"] = sigma
        record["sn_max_d"] = max(values["sn_d"]) if values["sn_d"] else None
        grad_d = record["grad_norm_d"]
        record["grad_ratio"] = record["grad_norm_g"] / grad_d if grad_d else None
        if "diversity" in values:
            record["batch_diversity"], record["duplicate_rate"] = values["diversity"]


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
