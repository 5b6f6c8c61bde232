"""What the smoke tests (runbook section 5, ``smoke/``; docs/contract.md §7) stand on, one file each.

``deployment``: the API under test (the reference API on a private clone of the migrated
disposable database, or a real one at ``--api-url``) and the two actors the tests act as,
never a customer's; ``client``: requests, every response held to the contract
(``plugin/contract.py``); ``receiver``: the loopback webhook receiver; ``database``: where
rows are verified, and fingerprints that prove a refused request wrote nothing; ``rows``:
what a session created on a deployment and the SQL that removes it. A smoke test (this
repository's ``smoke/`` or a pull request's) imports what it needs from here.
"""

from migration_gate.plugin.smoke.client import NO_SUCH_ID, ApiClient, expect, wait_until
from migration_gate.plugin.smoke.database import SmokeDatabase, fingerprint
from migration_gate.plugin.smoke.deployment import (
    Deployment,
    SmokeUnavailable,
    existing_deployment,
    reference_deployment,
)
from migration_gate.plugin.smoke.receiver import Delivery, WebhookReceiver, open_receiver
from migration_gate.plugin.smoke.rows import SMOKE_ROWS, smoke_rows
from migration_gate.reference.smoke_tenant import Actors

# What a smoke test (smoke/, or a pull request's own) may import from here.
__all__ = [
    "NO_SUCH_ID",
    "SMOKE_ROWS",
    "Actors",
    "ApiClient",
    "Delivery",
    "Deployment",
    "SmokeDatabase",
    "SmokeUnavailable",
    "WebhookReceiver",
    "existing_deployment",
    "expect",
    "fingerprint",
    "open_receiver",
    "reference_deployment",
    "smoke_rows",
    "wait_until",
]
