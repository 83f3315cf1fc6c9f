"""`value`: the dataclass of the values the domain makes one of per line, per charge or per period.

They are frozen values: the type checker refuses any assignment to them (`mypy --strict`, run by `make test`, sees
`frozen=True` through `dataclass_transform`). At run time they are plain slotted dataclasses that hash and compare
by value, like frozen ones: a frozen dataclass's `__init__` sets each field through `object.__setattr__`, which
made building one ~5x dearer (1.19 µs against 0.22 for 11 fields), and a sync builds several per line
(docs/performance.md "Values built without the frozen __init__"). Only the per-row values use it (periods,
candidates, targets, charges, and the patches and printed patches a sync makes one of per line or charge);
everything else stays `@dataclass(frozen=True, slots=True)`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    @dataclass_transform(frozen_default=True, eq_default=True)
    def value(cls: type[_T]) -> type[_T]: ...

else:

    def value(cls: Any) -> Any:
        return dataclasses.dataclass(slots=True, unsafe_hash=True)(cls)
