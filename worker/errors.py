"""The project's errors. Each type carries its meaning as class attributes: the failure `reason` the
worker classifies it as (docs/operations.md §6; `worker.queue.failures`) and the `exit_code` the command
line exits with (docs/contract.md §5: 1 the operation failed, 2 bad input)."""

from __future__ import annotations


class SubsyncError(Exception):
    """An operation failed for a reason the message explains."""

    reason = "unexpected"
    exit_code = 1

    def report(self) -> list[str]:
        """The `error: ...` lines the command line prints for it (one by default)."""
        return [str(self)]


class NotFoundError(SubsyncError):
    """A row the operation needs does not exist (in that namespace)."""

    reason = "not_found"


class MissingInvoiceError(SubsyncError):
    """An invoice the operation needs (or a loaded line references) does not exist."""

    reason = "missing_invoice"


class ConflictError(SubsyncError):
    """The request contradicts what is stored (e.g. an id owned by another subscription)."""


class ConcurrentWriteError(SubsyncError):
    """Another writer changed what this transaction relies on without holding the customer lock;
    trying again will see it."""

    reason = "concurrent_write"


class InvalidInputError(SubsyncError):
    """The input is malformed or breaks a rule."""

    reason = "invalid_payload"
    exit_code = 2


class InvalidSubscriptionError(SubsyncError):
    """A stored subscription breaks a structural rule of docs/contract.md §3 (written before the rule existed):
    no sync can build its target, so it fails at once with the rule named and is never retried (the
    same data gives the same answer); `subscriptions get` still prints it, re-applying it fixed heals it."""

    reason = "invalid_subscription"
