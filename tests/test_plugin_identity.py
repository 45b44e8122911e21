"""Plugin identity: env.json records the code of every plugin a run uses, and a completed run whose
plugin code changed since is trained again, saying why, unless --reuse-completed keeps it."""
from __future__ import annotations

import json

from ganbench.cli import main

TRICK = '''"""A trick that does nothing (version {version})."""
import ganbench

class Idle:
    """Does nothing."""
    name = "idle"
    params = None

    @ganbench.hookimpl
    def ganbench_step_end(self, run, step):
        pass

@ganbench.hookimpl
def ganbench_register_tricks():
    return [Idle]
'''


def suite_with_trick(tiny_suite, tmp_path):
    plugin = tmp_path / "idle.py"
    plugin.write_text(TRICK.format(version=1))
    path = tiny_suite('tricks = ["idle"]')
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nplugins = ["./idle.py"]'))
    return path, plugin


def test_env_json_records_each_plugins_source_version_and_file_hash(tiny_suite, tmp_path):
    path, plugin = suite_with_trick(tiny_suite, tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--jobs", "0", "--scale", "default"]) == 0
    (run_dir,) = (out / "runs").iterdir()
    plugins = json.loads((run_dir / "env.json").read_text())["plugins"]
    import hashlib

    assert plugins["trick:idle"] == {"source": f"file {plugin.resolve()}", "version": None,
                                     "file": str(plugin.resolve()),
                                     "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest()[:16]}
    assert plugins["loss:bce"]["source"].startswith("ganbench ") and plugins["loss:bce"]["version"]
    assert {"architecture:dcgan", "dataset:mnist5k", "latent:gaussian"} <= set(plugins)


def test_changed_plugin_code_retrains_a_completed_run_and_says_why(tiny_suite, tmp_path, capsys):
    path, plugin = suite_with_trick(tiny_suite, tmp_path)
    out = tmp_path / "out"
    run = ["run", str(path), "--out", str(out), "--jobs", "0", "--scale", "default"]
    assert main(run) == 0
    (run_dir,) = (out / "runs").iterdir()
    first_written = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()

    assert main(run) == 0  # unchanged code: skipped
    err = capsys.readouterr().err
    assert "1 run(s) already completed" in err and "trained again" not in err

    plugin.write_text(TRICK.format(version=2))
    assert main([*run, "--reuse-completed"]) == 0  # kept, with a warning that names the plugin
    err = " ".join(capsys.readouterr().err.split())
    assert "kept (--reuse-completed), though its plugin code changed" in err and "trick:idle (idle.py" in err
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == first_written

    assert main(run) == 0  # changed code: trained again from step 0, saying which plugin changed
    err = " ".join(capsys.readouterr().err.split())
    assert "1 completed run(s) trained again from step 0" in err and "a seed 0: trick:idle (idle.py" in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and (run_dir / "metrics.jsonl").stat().st_mtime_ns != first_written
    assert main(run) == 0  # and the new record makes it current again
    assert "trained again" not in capsys.readouterr().err


def test_a_run_process_sees_the_same_plugin_code_as_the_suite(tiny_suite, tmp_path):
    # A run's process rebuilds its spec from config.json: its env.json must match what the suite
    # compares it with later, or every completed run would look stale (a bug the slow e2e test caught).
    from ganbench.checkpoint import plugin_code
    from ganbench.suite import load_suite, spec_from_resolved

    path, _ = suite_with_trick(tiny_suite, tmp_path)
    suite = load_suite(path)
    (spec,) = suite.runs("default")
    rebuilt = spec_from_resolved(spec.resolved(), suite.registry)
    assert plugin_code(rebuilt.settings) == plugin_code(spec.settings)
    assert plugin_code(spec.settings)["loss:bce"]["version"]
