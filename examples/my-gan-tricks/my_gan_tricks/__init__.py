"""An example ganbench plugin package: a trick, a loss and a metric (docs/writing-plugins.md)."""
