"""The `subsync` command line (docs/contract.md §5): `app`, and `main` for the console script.

The root group is in `worker.cli.main`; each command group in its own module (`db`, `customers`,
`subscriptions`, `billing`, `queue`, `demo`), output in `output`/`presenters`, options in `options`,
error lines in `errors`, and what commands run against in `runtime`. The command line may import
every layer below it; it reaches the engine and the broker through `worker.bootstrap`.
"""

from worker.cli.main import app, main, run

__all__ = ["app", "main", "run"]
