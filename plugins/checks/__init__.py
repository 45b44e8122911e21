"""Built-in `ganbench doctor` checks, one per module."""
