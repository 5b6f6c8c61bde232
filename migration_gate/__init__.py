"""migration-gate: a pytest-based gate for FluxoLab's PostgreSQL migrations 001→008."""

__version__ = "0.1.0"
