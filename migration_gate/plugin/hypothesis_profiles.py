"""Hypothesis profiles for the property tests: ``ci`` (the default) and ``nightly``.

Chosen with ``--hypothesis-profile NAME`` or the ``HYPOTHESIS_PROFILE`` environment
variable. ``--hypothesis-profile`` is applied by Hypothesis' own pytest plugin while
pytest configures, so the profiles must be registered by then: importing this module
from a conftest (or the gate's plugin) does that. Importing it again later registers
the same profiles and leaves a profile already chosen alone.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

from migration_gate.core import settings as gate_settings

PROFILE_ENV = gate_settings.env("hypothesis_profile")
DEFAULT_PROFILE = gate_settings.default("hypothesis_profile")

# Each example migrates 005→008 in a transaction: tens of milliseconds, never a
# deadline's business. Derandomized in CI so that the gate gives the same answer for
# the same migrations; the nightly run explores new examples every night. No ``explain``
# phase: the lines it names are the harness's, the same for every failure, and a failure
# has to fit a reviewer's screen (the dataset as SQL is what reproduces it).
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
settings.register_profile(
    "ci",
    max_examples=120,
    deadline=None,
    derandomize=True,
    print_blob=True,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=5_000,
    deadline=None,
    print_blob=True,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_default() -> None:
    """Load the profile named by HYPOTHESIS_PROFILE (``ci`` when unset), unless one was chosen already."""
    if settings.get_current_profile_name() == "default":
        settings.load_profile(os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)


load_default()
