"""Errors raised by the pure domain; each aborts the sync (SPEC §5.5) and names what is wrong."""


class DomainError(Exception):
    """Invalid data or a state the sync refuses to act on; nothing is written."""


class InvalidViewError(DomainError):
    """The subscription view is inconsistent (SPEC §2.5 checks)."""


class DuplicateIdentityError(DomainError):
    """Two persisted items, or two targets, share one unique reference id (SPEC §4.6, §5.1)."""


class PlanningError(DomainError):
    """A patch cannot be planned (flat target against a group, usage update on a flat line, ...)."""
