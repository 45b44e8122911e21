"""Test helpers for plugin authors: tiny real objects, a tiny real run, and a conformance check.

    import ganbench.testing as gt
    from my_gan_tricks import lr_decay

    def test_lr_decay_conforms():
        gt.check_plugin(lr_decay)  # loads, validates, trains, reproduces, resumes

    def test_lr_decay_reaches_zero():
        result = gt.run_plugin(lr_decay, steps=8, params={"start": 0.5})
        assert result.records[-1]["lr_g"] == 0.0

A plugin is given as its module (or any object with registration hooks), as an entry point
hands it to ganbench, or as a plugin class. It is registered into a real `Registry` beside the
installed plugins, so it meets the load-time checks a suite's plugins meet. A tiny run is real
too: a 2-D ring of 8 Gaussians with an MLP of width 16 ("points"), or 160 seeded 28x28 images of
10 classes with a DCGAN of width 4 ("images"), trained on the CPU by the core's own loop. A few
steps take a fraction of a second on one thread.

- `tiny_run`, `tiny_batch`, `tiny_scores`, `tiny_targets`, `tiny_step`: the objects hooks receive.
- `run_plugin(plugin, steps=N)`: train a tiny run with the plugin; a `PluginRun` of its records.
- `check_plugin(plugin)`: the conformance check; `PluginCheckFailed` names what failed.
"""
from ganbench.testing.conformance import Checked, PluginCheckFailed, check_plugin
from ganbench.testing.tiny import (
    PluginRun,
    registered,
    run_plugin,
    tiny_batch,
    tiny_run,
    tiny_scores,
    tiny_step,
    tiny_targets,
)

__all__ = [
    "Checked",
    "PluginCheckFailed",
    "PluginRun",
    "check_plugin",
    "registered",
    "run_plugin",
    "tiny_batch",
    "tiny_run",
    "tiny_scores",
    "tiny_step",
    "tiny_targets",
]
