"""The public contract in code: the subscription document (CONTRACT §3) and the events (CONTRACT §4)
as pydantic models with their shared field types, the `path: message` problems, and the text forms
of times and decimals. May import `worker.domain` and the bottom layer."""
