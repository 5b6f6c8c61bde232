"""005→008 is right for every legacy dataset, not only the hand-written seed.

Hypothesis draws legacy datasets at the 004 shape with every dirty case of docs/contract.md
§1 (``migration_gate.data.strategies``). For each one, in a transaction rolled
back afterwards: load it, run 005→008, then require every zero-count invariant of
``checks/`` to find nothing, every legacy row to be in ``public`` or ``legacy_archive``
(never both, never neither), and every row's workspace to be what the independent
model of section 2 (``migration_gate.model``) says. A failure shows the shrunk dataset
as SQL that reproduces it.

Profiles: ``ci`` (default, 120 derandomized examples) and ``nightly`` (5000, random);
``--hypothesis-profile nightly`` or ``HYPOTHESIS_PROFILE=nightly``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import event, given, note

from migration_gate.checks import invariants
from migration_gate.core import runner
from migration_gate.core.plan import load_plan
from migration_gate.core.server import DisposableServer
from migration_gate.data.model import LegacyDataset
from migration_gate.data.properties import PropertyHarness
from migration_gate.data.strategies import legacy_datasets
from migration_gate.plugin import hypothesis_profiles
from migration_gate.plugin.config import GateConfig

hypothesis_profiles.load_default()


@pytest.fixture(scope="module")
def property_harness(request: pytest.FixtureRequest, gate_config: GateConfig) -> Iterator[PropertyHarness]:
    """A database at 004 on the disposable server, built once; each example rolls back on it."""
    if not gate_config.disposable:
        pytest.skip("the property tests migrate generated datasets: they need the disposable server")
    server: DisposableServer = request.getfixturevalue("disposable_server")
    plan = load_plan(gate_config.migrations_dir)
    with server.temporary_database("props_legacy") as url:
        runner.migrate(url, plan, stop="004")
        harness = PropertyHarness(
            url, [m for m in plan if m.version >= 5], invariants.load(gate_config.checks_dir)
        )
        yield harness
        harness.close()


@given(dataset=legacy_datasets())
def test_005_to_008_agree_with_the_model_on_any_legacy_dataset(
    property_harness: PropertyHarness, dataset: LegacyDataset
) -> None:
    note(dataset.to_sql())
    for case in sorted(property_harness.check(dataset)):
        event(case)  # --hypothesis-show-statistics lists how often each dirty case came up
