"""Executors: where a suite's runs train (local processes, Ray tasks, SLURM jobs through submitit).

Each is a plugin class registered through `ganbench_register_executors`; `ganbench.executors`
holds the API they implement and `run_job`, the one function each runs for a run.
"""
