"""The Dramatiq worker process entry: `dramatiq worker.process:main` (what `subsync worker` execs).

Dramatiq calls `main()` in every worker process it starts, then runs the broker `main` installed.
"""

from __future__ import annotations

from worker.bootstrap import worker_process
from worker.config import load_settings


def main() -> None:
    """Wire this process from the environment's settings (`worker.bootstrap.worker_process`)."""
    worker_process(load_settings())
