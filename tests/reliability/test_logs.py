"""The worker's log lines, from a real `subsync worker` (issue 21 item 12; docs/operations.md §4 "Logs"):
every line is JSON — Dramatiq's supervisor's own included, when a worker process dies —; `worker process
ready` says whether metrics are served; every `message.done` carries the message's `event_id`."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime

from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from tests.builders import apply, document, fee, unique
from tests.reliability.processes import Processes, drain, free_port, wait_until, worker_env
from worker.contract.events import AdvanceChargesRequest, SubscriptionEvent
from worker.queue.actors import advance_charges_message
from worker.queue.publish import publish

WAIT = 30.0


def test_every_message_done_carries_its_event_id_and_ready_says_metrics(
    engine: Engine, database_url: str, redis_url: str, broker: RedisBroker, broker_namespace: str, processes: Processes
) -> None:
    ns = unique("logs")
    apply(engine, document(ns, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    worker = processes.worker(worker_env(database_url, redis_url, broker_namespace), metrics_port=free_port())
    event = SubscriptionEvent.new(
        "subscription.created", namespace=ns, subscription_id="sub_1", as_of=datetime(2024, 2, 15, tzinfo=UTC)
    )
    publish(event, broker=broker)
    request = AdvanceChargesRequest(namespace=ns, customer_id="cust_1", event_id="evt-advance-1")
    broker.enqueue(advance_charges_message(request))
    drain(broker, [worker], WAIT)

    done = [e for e in worker.events() if e.get("event") == "message.done"]
    by_actor = {e["actor"]: e for e in done}
    assert by_actor["subscription_event"]["event_id"] == event.event_id
    assert by_actor["advance_charges"]["event_id"] == "evt-advance-1"
    [ready] = [e for e in worker.events() if e.get("event") == "worker process ready"]
    assert ready["metrics"] is True


def test_the_supervisor_logs_a_dead_worker_process_as_json(
    database_url: str, redis_url: str, broker_namespace: str, processes: Processes
) -> None:
    worker = processes.worker(worker_env(database_url, redis_url, broker_namespace))
    [ready] = [e for e in worker.events() if e.get("event") == "worker process ready"]
    assert ready["metrics"] is False  # --metrics-port 0
    os.kill(ready["pid"], signal.SIGKILL)
    wait_until(lambda: not worker.alive(), "the supervisor to exit", WAIT, on_timeout=worker.tail)

    lines = [line for line in worker.log().splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, not_json
    died = [e for e in worker.events() if "exited unexpectedly" in str(e.get("event"))]
    assert died and "code -9" in died[0]["event"] and died[0]["level"] == "critical"
    assert died[0]["timestamp"].endswith("Z")
