"""Credit allocation of docs/credits.md §3.8-§3.9: grants, append-only allocation rows, and the ledger that
allocates, corrects, reconciles and backfills them, and the balance computed from them.

Every amount here is already rounded to the currency's precision (grants are refused otherwise, charge
amounts are rounded by docs/credits.md §3.5), so nothing here rounds: every method that adds or subtracts
runs in `money.exact_context` (docs/contract.md §3 "arithmetic"), never in the 28-digit default context. Rows are never updated or deleted: a
correction or a backfill is a new signed row that points at the row it reduces (docs/credits.md §2.2).

A `Ledger` holds one customer's grants in one currency, each with its `remaining` credit, and the rows of
some of the customer's runs: whole runs (every row whose `run_id` is one of them), so that a run's
`credits_total` and the open part of each of its slices can be read from it. The new rows it writes are
kept in order in `new_rows`; the store inserts them in that order, so the database's `seq` keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from worker.domain.errors import DomainError
from worker.domain.money import exact
from worker.domain.timeutil import MAX_INSTANT

AllocationKind = Literal["allocation", "correction", "backfill"]
GrantStatus = Literal["voided", "pending", "expired", "active"]

ZERO = Decimal(0)


class CreditError(DomainError):
    """An allocation step was asked for something the rules of docs/credits.md §3.8 do not allow."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A row of `credit_grants` (docs/credits.md §2.2). `feature_keys` None: usable by every charge."""

    id: str
    currency: str
    amount: Decimal
    effective_at: datetime
    created_at: datetime
    priority: int = 1
    feature_keys: frozenset[str] | None = None
    expires_at: datetime | None = None
    voided_at: datetime | None = None

    def covers(self, feature_key: str | None) -> bool:
        """The feature-key rule of eligibility: a charge without a feature key only uses unrestricted grants."""
        return self.feature_keys is None or (feature_key is not None and feature_key in self.feature_keys)

    def is_expired_at(self, t: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= t

    def status(self, at: datetime) -> GrantStatus:
        """docs/credits.md §2.4: voided, else pending before `effective_at`, expired from `expires_at` on, else active."""
        if self.voided_at is not None:
            return "voided"
        if at < self.effective_at:
            return "pending"
        if self.is_expired_at(at):
            return "expired"
        return "active"

    def consumption_key(self) -> tuple[int, int, datetime, datetime, str]:
        """docs/credits.md §3.8 consumption order: priority; restricted before unrestricted; expiring first (no expiry
        last); then creation; then id."""
        return (
            self.priority,
            0 if self.feature_keys is not None else 1,
            self.expires_at if self.expires_at is not None else MAX_INSTANT,
            self.created_at,
            self.id,
        )


def consumption_order(grants: Iterable[Grant]) -> list[Grant]:
    return sorted(grants, key=Grant.consumption_key)


@dataclass(frozen=True, slots=True)
class AllocationRow:
    """A row of `credit_allocations`. `grant_id` None means advance (docs/credits.md §2.2)."""

    id: str
    seq: int
    charge_id: str
    run_id: str
    grant_id: str | None
    kind: AllocationKind
    amount: Decimal
    booked_at: datetime
    reverses_id: str | None = None
    backfills_id: str | None = None

    @property
    def is_advance(self) -> bool:
        return self.grant_id is None


@dataclass(frozen=True, slots=True)
class CreditCharge:
    """What allocation needs to know of a charge (docs/credits.md §3.6 `booked_at`, §3.8 eligibility)."""

    id: str
    currency: str
    feature_key: str | None
    invoice_at: datetime
    booked_at: datetime


def is_eligible(grant: Grant, charge: CreditCharge, remaining: Decimal) -> bool:
    """docs/credits.md §3.8 eligibility of `grant` for `charge` (namespace and customer are the ledger's)."""
    return (
        grant.currency == charge.currency
        and grant.voided_at is None
        and grant.effective_at <= charge.invoice_at
        and (grant.expires_at is None or grant.expires_at > charge.booked_at)
        and grant.covers(charge.feature_key)
        and remaining > 0
    )


class Ledger:
    """One customer's grants and allocation rows in one currency, and the rows it adds (docs/credits.md §3.8)."""

    @exact
    def __init__(
        self,
        currency: str,
        grants: Iterable[Grant],
        rows: Iterable[AllocationRow],
        *,
        new_id: Callable[[], str],
        remaining: Mapping[str, Decimal] | None = None,
    ) -> None:
        """`remaining`: each grant's remaining credit as stored (all its rows counted); computed from `rows`
        when omitted, which then must hold every row of those grants."""
        self.currency = currency
        self._new_id = new_id
        self._grants: dict[str, Grant] = {}
        self._remaining: dict[str, Decimal] = {}
        self._rows: dict[str, AllocationRow] = {}
        self._by_run: dict[str, list[AllocationRow]] = {}
        self._reduced: dict[str, Decimal] = {}  # row id → Σ amount of the rows with reverses_id = it
        self._backfills: dict[str, list[AllocationRow]] = {}  # advance row id → its positive backfill halves
        self._next_seq = 1
        self.new_rows: list[AllocationRow] = []
        row_list = sorted(rows, key=lambda r: r.seq)
        for grant in grants:
            self._add_grant(grant, remaining)
        for row in row_list:
            self._index(row)
        if remaining is None:
            for row in row_list:
                if row.grant_id is not None:
                    self._remaining[row.grant_id] -= row.amount

    def _add_grant(self, grant: Grant, remaining: Mapping[str, Decimal] | None) -> None:
        if grant.currency != self.currency:
            raise CreditError(f"grant {grant.id}: currency {grant.currency} is not the ledger's {self.currency}")
        self._grants[grant.id] = grant
        self._remaining[grant.id] = grant.amount if remaining is None else remaining[grant.id]

    def add_grant(self, grant: Grant) -> None:
        """A grant created now: nothing allocated from it yet."""
        self._add_grant(grant, None)

    def _index(self, row: AllocationRow) -> None:
        self._rows[row.id] = row
        self._by_run.setdefault(row.run_id, []).append(row)
        if row.reverses_id is not None:
            self._reduced[row.reverses_id] = self._reduced.get(row.reverses_id, ZERO) + row.amount
        if row.backfills_id is not None and row.amount > 0:
            self._backfills.setdefault(row.backfills_id, []).append(row)
        self._next_seq = max(self._next_seq, row.seq + 1)

    def _append(
        self,
        charge_id: str,
        run_id: str,
        grant_id: str | None,
        kind: AllocationKind,
        amount: Decimal,
        booked_at: datetime,
        reverses_id: str | None = None,
        backfills_id: str | None = None,
    ) -> AllocationRow:
        row = AllocationRow(
            self._new_id(),
            self._next_seq,
            charge_id,
            run_id,
            grant_id,
            kind,
            amount,
            booked_at,
            reverses_id,
            backfills_id,
        )
        self._index(row)
        if grant_id is not None:
            self._remaining[grant_id] -= amount
        self.new_rows.append(row)
        return row

    # -- sums (docs/credits.md §3.8 "Sums") -------------------------------------------------------------
    @property
    def grants(self) -> tuple[Grant, ...]:
        return tuple(self._grants.values())

    def grant(self, grant_id: str) -> Grant:
        return self._grants[grant_id]

    def remaining(self, grant_id: str) -> Decimal:
        return self._remaining[grant_id]

    def rows_of_run(self, run_id: str) -> tuple[AllocationRow, ...]:
        return tuple(self._by_run.get(run_id, ()))

    @exact
    def credits_total(self, run_id: str) -> Decimal:
        return sum((r.amount for r in self._by_run.get(run_id, ())), ZERO)

    @exact
    def open_advance(self) -> Decimal:
        """Σ amount of the advance rows this ledger holds (all of the customer's, when loaded so)."""
        return sum((r.amount for r in self._rows.values() if r.grant_id is None), ZERO)

    @exact
    def open_part(self, row: AllocationRow) -> Decimal:
        """What is still open of a positive row: its amount plus the rows that reduce it."""
        return row.amount + self._reduced.get(row.id, ZERO)

    # -- allocate / correct / reconcile ---------------------------------------------------------
    @exact
    def allocate(self, charge: CreditCharge, run_id: str, need: Decimal, *, exact: bool) -> Decimal:
        """docs/credits.md §3.8 allocate(c, run, need, exact): take from eligible grants in consumption order; with
        `exact`, the shortfall becomes advance. Returns what the run got (`need` when exact)."""
        if need < 0:
            raise CreditError(f"charge {charge.id}: cannot allocate a negative amount ({need})")
        if charge.currency != self.currency:
            raise CreditError(f"charge {charge.id}: currency {charge.currency} is not the ledger's {self.currency}")
        left = need
        for grant in consumption_order(self._grants.values()):
            if left <= 0:
                break
            available = self._remaining[grant.id]
            if not is_eligible(grant, charge, available):
                continue
            take = min(available, left)
            self._append(charge.id, run_id, grant.id, "allocation", take, charge.booked_at)
            left -= take
        if exact and left > 0:
            self._append(charge.id, run_id, None, "allocation", left, charge.booked_at)
            left = ZERO
        return need - left

    @exact
    def correct(self, charge: CreditCharge, run_id: str, amount: Decimal) -> None:
        """docs/credits.md §3.8 correct(run, x): reverse the newest slices first, returning credit where it came from
        (an advance slice: first its open debt, then, newest first, what later grants paid for it)."""
        total = self.credits_total(run_id)
        if amount <= 0 or amount > total:
            raise CreditError(f"run {run_id}: cannot correct {amount} of credits_total {total}")
        left = amount
        allocations = [r for r in self._by_run.get(run_id, ()) if r.kind == "allocation"]
        for a in sorted(allocations, key=lambda r: r.seq, reverse=True):
            take = min(self.open_part(a), left)
            if take > 0:
                self._append(charge.id, run_id, a.grant_id, "correction", -take, charge.booked_at, reverses_id=a.id)
                left -= take
            for b in sorted(self._backfills.get(a.id, ()), key=lambda r: r.seq, reverse=True):
                take = min(self.open_part(b), left)
                if take > 0:
                    self._append(charge.id, run_id, b.grant_id, "correction", -take, charge.booked_at, reverses_id=b.id)
                    left -= take
            if left == 0:
                return
        raise CreditError(f"run {run_id}: {left} of the correction found no slice to reverse")

    @exact
    def reconcile(self, charge: CreditCharge, run_id: str, target: Decimal, *, exact: bool) -> Decimal:
        """docs/credits.md §3.8 reconcile(run, target, exact); returns the run's new `credits_total`."""
        current = self.credits_total(run_id)
        if target > current:
            self.allocate(charge, run_id, target - current, exact=exact)
        elif target < current:
            self.correct(charge, run_id, current - target)
        return self.credits_total(run_id)

    @exact
    def correct_all(self, charge: CreditCharge, run_id: str) -> None:
        """Return every credit of a run (a run undone, docs/credits.md §3.7)."""
        total = self.credits_total(run_id)
        if total > 0:
            self.correct(charge, run_id, total)

    # -- backfill --------------------------------------------------------------------------------
    @exact
    def backfill(self, grant: Grant, now: datetime, feature_key_of_charge: Mapping[str, str | None]) -> Decimal:
        """docs/credits.md §3.8 backfill: a grant created `now`, effective and not expired, pays the customer's open
        advance in its currency, oldest first, where its feature keys cover the charge. Returns the amount paid.
        The ledger must hold every run with open advance; `feature_key_of_charge` maps their charge ids."""
        if grant.id not in self._grants:
            self.add_grant(grant)
        if grant.voided_at is not None or grant.effective_at > now or grant.is_expired_at(now):
            return ZERO
        paid = ZERO
        advance = [r for r in self._rows.values() if r.grant_id is None and r.kind == "allocation"]
        for a in sorted(advance, key=lambda r: r.seq):
            if self._remaining[grant.id] == 0:
                break
            if not grant.covers(feature_key_of_charge[a.charge_id]):
                continue
            take = min(self.open_part(a), self._remaining[grant.id])
            if take > 0:
                self._append(a.charge_id, a.run_id, None, "backfill", -take, grant.created_at, reverses_id=a.id)
                self._append(a.charge_id, a.run_id, grant.id, "backfill", take, grant.created_at, backfills_id=a.id)
                paid += take
        return paid


# -- balance (docs/credits.md §3.9) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    available: Decimal
    pending: Decimal
    expired: Decimal
    open_advance: Decimal

    @property
    @exact
    def balance(self) -> Decimal:
        """`available − open_advance`; negative when advance exceeds credit."""
        return self.available - self.open_advance


@exact
def balance(
    currency: str, grants: Iterable[Grant], remaining: Mapping[str, Decimal], open_advance: Decimal, at: datetime
) -> Balance:
    """docs/credits.md §3.9 over the non-voided grants of one customer and currency, at instant `at`."""
    available = pending = expired = ZERO
    for grant in grants:
        if grant.currency != currency:
            continue
        status = grant.status(at)
        if status == "active":
            available += remaining[grant.id]
        elif status == "pending":
            pending += remaining[grant.id]
        elif status == "expired":
            expired += remaining[grant.id]
    return Balance(currency, available, pending, expired, open_advance)
