"""Placeholder: being written."""
import ganbench


@ganbench.hookimpl
def ganbench_register_metrics():
    return []
