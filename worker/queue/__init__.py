"""The Dramatiq side of the worker: broker, consumer, middleware, actors, publishing, scheduler,
dead letters, status and metrics. May import `worker.app` and everything below it."""
