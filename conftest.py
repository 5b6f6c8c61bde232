"""Nothing to wire: the gate's plugin (``migration_gate.plugin.hooks``) is a pytest11 entry point of the
installed package, and its settings are the ini options in pyproject.toml."""
