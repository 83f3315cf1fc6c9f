"""What one sync reads (docs/sync.md §8.1 "Anatomy of a sync", step *load*): everything the pure decision needs,
read under the customer lock into one immutable value. `worker.store.snapshot.load_snapshot` builds it;
`worker.domain.decide.decide` reads it and nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from worker.domain.charges.items import ChargeIndex
from worker.domain.charges.routing import SettlementMode
from worker.domain.credit_allocation import AllocationRow, Grant, Ledger
from worker.domain.persisted import PersistedState
from worker.domain.sync_state import SyncState
from worker.domain.view import PhaseRecord, SubscriptionRecord


@dataclass(frozen=True, slots=True)
class LedgerData:
    """One customer's credit ledger in one currency as stored (docs/credits.md §3.8): every grant with its remaining
    credit, and the allocation rows of the runs a sync may touch. `ledger()` gives a fresh, mutable `Ledger`
    each call, so deciding twice on one snapshot gives the same rows."""

    currency: str
    grants: tuple[Grant, ...]
    remaining: Mapping[str, Decimal]
    rows: tuple[AllocationRow, ...]

    def ledger(self, new_id: Callable[[], str]) -> Ledger:
        return Ledger(self.currency, self.grants, self.rows, new_id=new_id, remaining=self.remaining)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The stored state one sync of one subscription decides on (docs/sync.md §2.1, §4; docs/credits.md §3.3).

    `phases` is None when the subscription was deleted at load time (its phases are not read).
    `persisted.existing_issues` holds the live sync issues of every immutable invoice the subscription's lines
    or charge runs are on (docs/sync.md §6.4 de-duplication, docs/credits.md §3.13).
    `gathering_invoice_id`: the customer's live gathering invoice of the subscription's currency, if any.
    `ledgers`: by currency, for the currencies of the charges with a live run on a mutable invoice.
    `sync_state`: the stored sync state (docs/sync.md §7), None before the first sync."""

    namespace: str
    subscription: SubscriptionRecord
    deleted_at: datetime | None
    customer_exists: bool
    customer_deleted_at: datetime | None
    settlement_mode: SettlementMode
    phases: tuple[PhaseRecord, ...] | None
    persisted: PersistedState
    gathering_invoice_id: str | None
    charges: ChargeIndex
    """Live charges by identity, each built from its row when first read (docs/credits.md §3.3)."""
    ledgers: Mapping[str, LedgerData]
    sync_state: SyncState | None = None
    input_digest: str | None = None
    """The digest of everything this snapshot was read from (docs/sync.md §8.6), when the load computed one."""
    input_head: str | None = None
    """The digest of the inputs read before the one read (the subscription and customer row versions, the code, the
    line limit: docs/sync.md §8.6 "When the read is digested"), when the load computed one."""

    @property
    def subscription_id(self) -> str:
        return self.subscription.id

    @property
    def customer_id(self) -> str:
        return self.subscription.customer_id

    def is_deleted(self, now: datetime) -> bool:
        return self.deleted_at is not None and self.deleted_at <= now
