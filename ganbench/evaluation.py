"""The older home of the sampling helpers, kept so existing imports work: use `ganbench.features`,
the metric toolkit, which holds them now (`is_due` is `features.due`, `generate_batches` is
`features.eval_batches`, `generate` is `features.eval_samples`, and `real_samples` is
`features.real_subset`)."""
from __future__ import annotations

from ganbench.features import (
    EVAL_NOISE_OFFSET,
    REAL_SUBSET_SEED,
    due as is_due,
    eval_batches as generate_batches,
    eval_samples as generate,
    real_subset as real_samples,
    to_uint8_rgb,
)

__all__ = ["EVAL_NOISE_OFFSET", "REAL_SUBSET_SEED", "generate", "generate_batches", "is_due", "real_samples",
           "to_uint8_rgb"]
