"""Wiring only: the gate's plugin decides which database, which checkpoint, which data."""

pytest_plugins = ("migration_gate.pytest_plugin",)
