"""A pytest plugin (``-p tests.hide_servers``): the system's and PyPI's servers hidden, as on a machine with neither."""

from migration_gate.core import installations

installations.SEARCH_GLOBS = ()
installations.PYPI_SERVERS = ()
