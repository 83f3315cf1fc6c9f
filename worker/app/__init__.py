"""Use cases: a sync, invoicing, what each event does, and writing subscriptions. May import
`worker.store` and everything below it; never the queue or the command line."""
