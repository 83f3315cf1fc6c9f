"""Errors raised by the pure domain; each aborts the sync (SPEC §5.5) and names what is wrong."""


class DomainError(Exception):
    """Invalid data or a state the sync refuses to act on; nothing is written."""


class InvalidViewError(DomainError):
    """The subscription view is inconsistent (SPEC §2.5 checks)."""


class DuplicateIdentityError(DomainError):
    """Two persisted items, or two targets, share one unique reference id (SPEC §4.6, §5.1)."""


class PlanningError(DomainError):
    """A patch cannot be planned (flat target against a group, usage update on a flat line, ...)."""


class PeriodGenerationError(DomainError):
    """A generated period would be empty or not after the previous one (README "Period generation"): a bug or a
    cadence the validation should have refused; never billed as a duplicate line."""


class TargetTooLargeError(DomainError):
    """One sync would generate more target lines than the configured maximum (CONTRACT §3 limits,
    `SUBSYNC_MAX_TARGET_LINES`); retrying cannot help, so the worker dead-letters it at once."""

    def __init__(self, subscription_id: str, limit: int) -> None:
        super().__init__(
            f"subscription {subscription_id} needs more than {limit} target lines in one sync "
            f"(the limit SUBSYNC_MAX_TARGET_LINES={limit})"
        )
        self.subscription_id = subscription_id
        self.limit = limit
