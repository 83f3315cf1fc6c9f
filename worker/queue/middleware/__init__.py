"""The worker's own Dramatiq middleware, one idea per module, behaviour only in hooks."""
