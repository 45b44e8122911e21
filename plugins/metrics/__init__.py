"""Built-in ganbench plugins, installed as `ganbench_plugins`."""
