"""The Dramatiq entry points of `subsync worker` (docs/operations.md §2):

- `python -m worker.process worker.process:main …` is what `subsync worker` execs: Dramatiq's
  supervisor (`dramatiq.cli.main`), with the project's logging configured first, so that its own
  lines (`Worker with PID … exited unexpectedly (code -9)`, `Sending signal …`) are JSON (or console)
  like every other line rather than bare text (docs/operations.md §4 "Logs");
- `main()` is the broker module Dramatiq calls in every worker process it starts, before running the
  broker that `main` installs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from worker.bootstrap import worker_process
from worker.config import load_settings


def main() -> None:
    """Wire this process from the environment's settings (`worker.bootstrap.worker_process`)."""
    worker_process(load_settings())


def supervise() -> int:
    """Dramatiq's supervisor with the project's log format and level (`SUBSYNC_LOG_FORMAT`,
    `SUBSYNC_LOG_LEVEL`, which `subsync worker` sets)."""
    import dramatiq  # lazy: only the supervisor runs this
    from dramatiq.cli import main as dramatiq_main

    from worker.infra.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    # Dramatiq's reload (SIGHUP) re-executes `python -m dramatiq` when argv[0] is its own entry.
    sys.argv[0] = str(Path(dramatiq.__file__).parent / "__main__.py")
    run: Any = dramatiq_main  # untyped in Dramatiq
    return int(run() or 0)


if __name__ == "__main__":
    sys.exit(supervise())
