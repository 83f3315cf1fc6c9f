"""Infrastructure without business meaning: logging, the embedded servers, ids, the clock and the
reliability tests' fault injection. May import only `worker.config` and `worker.errors`."""
