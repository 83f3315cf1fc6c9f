"""Errors raised by the pure domain; each aborts the sync (docs/sync.md §5.5) and names what is wrong."""


class DomainError(Exception):
    """Invalid data or a state the sync refuses to act on; nothing is written."""


class InvalidViewError(DomainError):
    """The subscription view is inconsistent (docs/sync.md §2.5 checks)."""


class DuplicateIdentityError(DomainError):
    """Two persisted items, or two targets, share one unique reference id (docs/sync.md §4.6, §5.1)."""


class PlanningError(DomainError):
    """A patch cannot be planned (flat target against a group, usage update on a flat line, ...)."""


class PeriodGenerationError(DomainError):
    """A generated period would be empty or not after the previous one (docs/sync.md §3.11): a bug or a
    cadence the validation should have refused; never billed as a duplicate line."""


class TargetTooLargeError(DomainError):
    """One sync would generate more target lines than the configured maximum (docs/contract.md §3 limits,
    `SUBSYNC_MAX_TARGET_LINES`); retrying cannot help, so the worker dead-letters it at once."""

    def __init__(self, subscription_id: str, limit: int) -> None:
        super().__init__(
            f"subscription {subscription_id} needs more than {limit} target lines in one sync "
            f"(the limit SUBSYNC_MAX_TARGET_LINES={limit})"
        )
        self.subscription_id = subscription_id
        self.limit = limit
