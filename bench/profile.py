"""Profile one sync scenario of the scaling subscription with pyinstrument (a dev dependency).

    python -m bench.profile first --days 1000      # the first sync of a ~10,000-line subscription
    python -m bench.profile steady --days 100 -r 20

Seeds a scratch database like `python -m bench` does, runs the scenario `--repeats` times under the
profiler (the first sync on fresh copies, the steady-state sync on one synced copy) and prints the
call tree. `--html FILE` writes pyinstrument's HTML report instead.
"""

from __future__ import annotations

import argparse
import logging

from bench import seeding
from bench.database import scratch_database, server_url, timing_engine
from worker.app.sync import sync_subscription
from worker.infra.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("first", "steady"))
    parser.add_argument("--days", type=int, default=1000, help="days of history, ~10 lines per day (default 1000)")
    parser.add_argument("-r", "--repeats", type=int, default=3, help="profiled syncs (default 3)")
    parser.add_argument("--html", help="write an HTML report to this file")
    args = parser.parse_args()
    from pyinstrument import Profiler

    configure_logging("console", level=logging.WARNING)
    with scratch_database(server_url()) as url:
        engine = timing_engine(url)
        copies = seeding.seed_scale(engine, args.days, args.repeats if args.scenario == "first" else 1)
        if args.scenario == "steady":
            sync_subscription(engine, seeding.REAL, copies[0].subscription_id, as_of=copies[0].as_of)
            copies = copies * args.repeats
        profiler = Profiler(interval=0.0005)
        with profiler:
            for copy in copies:
                sync_subscription(engine, seeding.REAL, copy.subscription_id, as_of=copy.as_of)
        engine.dispose()
    if args.html:
        with open(args.html, "w") as f:
            f.write(profiler.output_html())
    else:
        print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main()
