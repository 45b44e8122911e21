"""Counting the work PyTorch code dispatches, and turning counted work into seconds on a device.

`count(fn)` runs fn under a dispatch mode that counts aten operator calls, FLOPs (torch's own
formulas) and bytes of memory traffic. A `DeviceModel` turns such a `Cost` into a range of
seconds; `calibrate` measures one for the device at hand, and `GPU_MODEL` is the assumed one GPU
that `ganbench estimate` projects to.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


@dataclass(frozen=True)
class Cost:
    """Work dispatched by some code: aten operator calls, floating-point operations and bytes of
    memory traffic, counted; and the seconds it took, where it was timed."""

    ops: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0  # memory traffic: every operator's tensor inputs and outputs
    seconds: float = 0.0  # the time it took on this machine, where it was timed

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.ops + other.ops, self.flops + other.flops, self.bytes + other.bytes,
                    self.seconds + other.seconds)

    def __mul__(self, k: float) -> Cost:
        return Cost(self.ops * k, self.flops * k, self.bytes * k, self.seconds * k)


@dataclass(frozen=True)
class DeviceModel:
    """Seconds for a Cost on a device: host time per operator call, sustained FLOP/s, and memory
    bandwidth. Each is a (fast, slow) pair; seconds() gives (optimistic, pessimistic)."""

    name: str
    op_seconds: tuple[float, float]
    flops_per_second: tuple[float, float]
    bytes_per_second: tuple[float, float]
    host_scale: tuple[float, float] = (1.0, 1.0)  # host time measured here, scaled to this device's host
    launch_seconds: tuple[float, float] = (0.0, 0.0)  # per operator, on top of measured host time

    def device_seconds(self, cost: Cost, i: int) -> float:
        return cost.flops / self.flops_per_second[i] + cost.bytes / self.bytes_per_second[i]

    def seconds(self, cost: Cost, host: float | None = None) -> tuple[float, float]:
        """(optimistic, pessimistic): host and device work overlapped fully, or not at all. The
        host part is `host` seconds measured on this machine when given, else ops x op_seconds."""
        if host is None:
            hosts = (cost.ops * self.op_seconds[0], cost.ops * self.op_seconds[1])
        else:
            hosts = tuple(host * self.host_scale[i] + cost.ops * self.launch_seconds[i] for i in (0, 1))
        return max(hosts[0], self.device_seconds(cost, 0)), hosts[1] + self.device_seconds(cost, 1)


# One data-centre GPU of the H100 class, run eagerly by PyTorch as ganbench does.
# - Training's host time (Python, pluggy hooks, dispatch, autograd bookkeeping) is measured on this
#   machine, then scaled by 0.5-1.0: a GPU server's cores are as fast as these shared ones, or up to
#   twice as fast. The pessimistic end adds 4 us per operator for the kernel launch.
# - Other host work (evaluation's few large batches): 5-15 us per operator call.
# - Sustained float32: 20-40 TFLOP/s, under two thirds of the H100's 67 TFLOP/s float32 peak; FID's
#   convolutions run in full float32 (fid.float32_convolutions), so no TF32 speed-up is assumed.
# - Memory: 1.5-3 TB/s of the H100 SXM's 3.35 TB/s.
GPU_MODEL = DeviceModel("one H100-class GPU (projected by a model)", op_seconds=(5e-6, 15e-6),
                        flops_per_second=(40e12, 20e12), bytes_per_second=(3e12, 1.5e12),
                        host_scale=(0.5, 1.0), launch_seconds=(0.0, 4e-6))


class WorkCounter(TorchDispatchMode):
    """Counts aten operator calls (forward, backward and optimizer alike), their FLOPs by torch's
    own FLOP formulas, and the bytes of their tensor arguments and results. FlopCounterMode itself is not used: its module tracker breaks
    `autograd.grad(create_graph=True)`, which gradient penalties need."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.flops = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        if not _is_view(func):  # a view moves no memory
            self.bytes += sum(t.numel() * t.element_size()
                              for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor))
        return out


def _is_view(func: Any) -> bool:
    schema = func._schema
    return any(a.alias_info is not None and not a.alias_info.is_write for a in schema.returns)


def count(fn: Callable[[], Any]) -> Cost:
    """The operator calls, FLOPs and memory traffic of fn()."""
    with WorkCounter() as counter:
        fn()
    return Cost(counter.ops, counter.flops, counter.bytes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def calibrate(device: torch.device) -> DeviceModel:
    """This device's time per operator call (tiny additions), sustained FLOP/s (a DCGAN-sized
    convolution, forward) and memory bandwidth (an addition of two 64 MB tensors), measured now."""
    tiny = torch.ones(1, device=device)
    for _ in range(200):
        tiny = tiny + 1
    sync(device)
    calls = 5000
    start = time.perf_counter()
    for _ in range(calls):
        tiny = tiny + 1
    sync(device)
    op_s = (time.perf_counter() - start) / calls
    x = torch.randn(64, 64, 16, 16, device=device)
    w = torch.randn(128, 64, 4, 4, device=device)
    conv_flops = count(lambda: F.conv2d(x, w, stride=2, padding=1)).flops
    F.conv2d(x, w, stride=2, padding=1)
    sync(device)
    repeats, start = 0, time.perf_counter()
    while repeats < 5 or time.perf_counter() - start < 0.5:
        F.conv2d(x, w, stride=2, padding=1)
        repeats += 1
    sync(device)
    rate = conv_flops * repeats / (time.perf_counter() - start)
    a, b = torch.ones(16 * 2**20, device=device), torch.ones(16 * 2**20, device=device)  # 64 MB each
    out = torch.empty_like(a)  # written in place: a fresh 64 MB result would time page faults
    add_bytes = 3 * a.numel() * a.element_size()  # as WorkCounter counts it: arguments and result
    torch.add(a, b, out=out)
    sync(device)
    repeats, start = 0, time.perf_counter()
    while repeats < 5 or time.perf_counter() - start < 0.3:
        torch.add(a, b, out=out)
        repeats += 1
    sync(device)
    bandwidth = add_bytes * repeats / (time.perf_counter() - start)
    return DeviceModel("this machine (measured)", (op_s, op_s), (rate, rate), (bandwidth, bandwidth))
