"""ganbench: a plugin-based benchmarking and diagnostics harness for GAN training tricks.

A plugin needs nothing but this module: `ganbench.hookimpl` marks hook implementations, the
parameter aliases (`ganbench.Probability`, ...) type its params dataclass, and `ganbench.UsageError`
is the error a user can fix.
"""
from ganbench.checkpoint import PlainState, load_plain_state, plain_state
from ganbench.data import Data, DataInfo, TensorData
from ganbench.doctor import CheckResult, CheckSubject
from ganbench.errors import UsageError
from ganbench.hookspecs import hookimpl
from ganbench.params import ADDED_LATER, REPORT_ONLY, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from ganbench.state import (
    Batch,
    Convergence,
    Incident,
    MetricValues,
    Models,
    Optimizers,
    Run,
    Scores,
    Step,
    Targets,
    Updates,
    discriminate,
    generate,
)

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CheckResult",
    "CheckSubject",
    "Convergence",
    "Data",
    "Incident",
    "MetricValues",
    "DataInfo",
    "Models",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Optimizers",
    "PlainState",
    "PositiveFloat",
    "PositiveInt",
    "ADDED_LATER",
    "REPORT_ONLY",
    "Probability",
    "Run",
    "Scores",
    "Step",
    "Targets",
    "TensorData",
    "Updates",
    "UsageError",
    "discriminate",
    "generate",
    "hookimpl",
    "load_plain_state",
    "plain_state",
]
