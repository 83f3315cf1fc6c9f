"""A customer record of `subsync customers apply` (docs/contract.md §5): `namespace`, `id`, and optionally
`name` and `deleted_at`, validated like a subscription document's fields (problems name the field).

Only what a record gives changes, as with `customers upsert`: a missing `name` keeps the stored name; a
missing `deleted_at` keeps the stored deletion, a time soft-deletes, and an explicit `null` undeletes."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from worker.contract.fields import Identifier, Text, Time
from worker.contract.problems import DocumentError, Problem, validation_problems

#: A customer record is small: anything larger is refused before it is decoded.
MAX_CUSTOMER_BYTES = 16 * 1024


class CustomerRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    namespace: Identifier
    id: Identifier
    name: Text | None = None
    deleted_at: Time | None = None

    @property
    def undelete(self) -> bool:
        """`"deleted_at": null` given explicitly clears a deletion."""
        return "deleted_at" in self.model_fields_set and self.deleted_at is None


def parse_customer(raw: bytes | str) -> CustomerRecord:
    """Parse one JSON object and validate it. Raises DocumentError listing every problem found."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_CUSTOMER_BYTES:
        raise DocumentError([Problem("", f"the record is larger than {MAX_CUSTOMER_BYTES // 1024} KiB")])
    try:
        value: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DocumentError([Problem("", f"not valid JSON ({exc})")]) from None
    if not isinstance(value, dict):
        raise DocumentError([Problem("", "a customer record must be a JSON object")])
    try:
        return CustomerRecord.model_validate(value)
    except ValidationError as exc:
        raise DocumentError(validation_problems(exc)) from None
