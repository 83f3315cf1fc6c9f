"""The public contract in code: the subscription document (docs/contract.md §3) and the events (docs/contract.md §4)
as pydantic models with their shared field types, the `path: message` problems, and the text forms
of times and decimals. May import `worker.domain` and the bottom layer."""
