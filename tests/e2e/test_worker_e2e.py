"""End to end: events go through Redis to a real `subsync worker` process and change the database."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from tests.builders import apply, comparable, document, fee, lines_json, unique, usage
from tests.e2e.conftest import WorkerProcess
from worker.contract.events import QUEUE_NAME, SubscriptionEvent
from worker.queue.dead_letters import list_dead_letters
from worker.queue.exposition import STATUS_CACHE_SECONDS
from worker.queue.publish import publish
from worker.queue.status import status
from worker.store.subscriptions import delete_subscription
from worker.store.tables import invoice_lines, subscription_sync_states

AS_OF = datetime(2024, 2, 15, tzinfo=UTC)


def v1(ns: str) -> dict[str, Any]:
    return document(ns, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]})


def v2(ns: str) -> dict[str, Any]:
    """v1 plus a support fee and a usage item added mid-period (Feb 10)."""
    items = v1(ns)["phases"][0]["items"]
    items["support"] = [fee("it_support", "30", "2024-02-10T00:00:00Z")]
    items["api-calls"] = [usage("it_api", "0.01", "2024-02-10T00:00:00Z")]
    return document(ns, items)


def v3(ns: str) -> dict[str, Any]:
    """v2 cancelled on Feb 20."""
    doc = v2(ns)
    doc["active_to"] = "2024-02-20T00:00:00Z"
    return doc


def send(worker: WorkerProcess, ns: str, type_: str, as_of: datetime | None = AS_OF) -> SubscriptionEvent:
    event = SubscriptionEvent.new(type_, namespace=ns, subscription_id="sub_1", as_of=as_of)
    publish(event, broker=worker.broker)
    return event


def periods(lines: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [
        (
            line["unique_reference_id"].split("/", 1)[1],
            line["service_period"]["from"][:10],
            line["service_period"]["to"][:10],
            line["invoice_status"],
        )
        for line in lines
    ]


def created(engine: Engine, worker: WorkerProcess, ns: str) -> None:
    apply(engine, v1(ns))
    send(worker, ns, "subscription.created")
    worker.drain()


def updated(engine: Engine, worker: WorkerProcess, ns: str) -> None:
    apply(engine, v2(ns))
    send(worker, ns, "subscription.updated")
    worker.drain()


def cancelled(engine: Engine, worker: WorkerProcess, ns: str) -> None:
    apply(engine, v3(ns))
    send(worker, ns, "subscription.cancelled", as_of=None)  # syncs up to the stored end (Feb 20)
    worker.drain()


def test_created_lines_appear(engine: Engine, worker: WorkerProcess) -> None:
    ns = unique("created")
    created(engine, worker, ns)
    assert periods(lines_json(engine, ns)) == [
        ("default/platform-fee/v[0]/period[0]", "2024-01-01", "2024-02-01", "draft"),
        ("default/platform-fee/v[0]/period[1]", "2024-02-01", "2024-03-01", "draft"),
        ("default/platform-fee/v[0]/period[2]", "2024-03-01", "2024-04-01", "gathering"),
    ]


def test_updated_with_an_item_added_mid_period_changes_the_lines(engine: Engine, worker: WorkerProcess) -> None:
    ns = unique("updated")
    created(engine, worker, ns)
    updated(engine, worker, ns)
    lines = lines_json(engine, ns)
    assert periods(lines) == [
        ("default/platform-fee/v[0]/period[0]", "2024-01-01", "2024-02-01", "draft"),
        ("default/platform-fee/v[0]/period[1]", "2024-02-01", "2024-03-01", "draft"),
        ("default/api-calls/v[0]/period[0]", "2024-02-10", "2024-03-01", "gathering"),
        ("default/support/v[0]/period[0]", "2024-02-10", "2024-03-01", "draft"),
        ("default/platform-fee/v[0]/period[2]", "2024-03-01", "2024-04-01", "gathering"),
        ("default/support/v[0]/period[1]", "2024-03-01", "2024-04-01", "gathering"),
    ]
    support = next(line for line in lines if line["unique_reference_id"].endswith("support/v[0]/period[0]"))
    assert support["price"]["amount"] != "30"  # prorated: the item started mid-period


def test_cancelled_lines_shrink(engine: Engine, worker: WorkerProcess) -> None:
    ns = unique("cancelled")
    created(engine, worker, ns)
    updated(engine, worker, ns)
    cancelled(engine, worker, ns)
    assert periods(lines_json(engine, ns)) == [
        ("default/platform-fee/v[0]/period[0]", "2024-01-01", "2024-02-01", "draft"),
        ("default/platform-fee/v[0]/period[1]", "2024-02-01", "2024-02-20", "draft"),
        ("default/api-calls/v[0]/period[0]", "2024-02-10", "2024-02-20", "draft"),
        ("default/support/v[0]/period[0]", "2024-02-10", "2024-02-20", "draft"),
    ]


def test_deleted_lines_are_removed(engine: Engine, worker: WorkerProcess) -> None:
    ns = unique("deleted")
    created(engine, worker, ns)
    updated(engine, worker, ns)
    with engine.begin() as conn:
        delete_subscription(conn, ns, "sub_1", datetime(2024, 3, 1, tzinfo=UTC))
    send(worker, ns, "subscription.deleted", as_of=None)
    worker.drain()
    assert lines_json(engine, ns) == []
    with engine.connect() as conn:
        deleted = conn.execute(
            select(func.count()).where(invoice_lines.c.namespace == ns, invoice_lines.c.deleted_at.is_not(None))
        ).scalar_one()
    assert deleted == 6


def test_the_same_event_five_times_gives_the_lines_of_once(engine: Engine, worker: WorkerProcess) -> None:
    once, five = unique("once"), unique("five")
    for ns in (once, five):
        apply(engine, v2(ns))
    send(worker, once, "subscription.updated")
    event = SubscriptionEvent.new("subscription.updated", namespace=five, subscription_id="sub_1", as_of=AS_OF)
    for _ in range(5):
        publish(event, broker=worker.broker)  # at-least-once delivery: same event, five messages
    worker.drain()
    expected, got = lines_json(engine, once), lines_json(engine, five)
    assert len(expected) == 6
    assert comparable(got) == comparable(expected)
    assert len({line["invoice_id"] for line in got}) == len({line["invoice_id"] for line in expected}) == 2


def test_events_in_reverse_order_converge(engine: Engine, worker: WorkerProcess) -> None:
    """The subscription changed three times; its events arrive in order in one tenant, newest first in
    the other (docs/contract.md §4: each handler syncs the stored state)."""
    in_order, reversed_ = unique("in-order"), unique("reversed")
    for ns in (in_order, reversed_):
        for doc in (v1, v2, v3):
            apply(engine, doc(ns))
    types = ["subscription.created", "subscription.updated", "subscription.cancelled"]
    for type_ in types:
        send(worker, in_order, type_)
    for type_ in reversed(types):
        send(worker, reversed_, type_)
    worker.drain()
    expected = lines_json(engine, in_order)
    assert len(expected) == 4
    assert comparable(lines_json(engine, reversed_)) == comparable(expected)


def test_events_interleaved_with_changes_converge_to_the_lines_of_a_late_burst(
    engine: Engine, worker: WorkerProcess
) -> None:
    """Each change followed by its event, versus every change first and then the events in reverse.

    Same lines, except `billing_period`: a line shrunk by a later sync keeps the billing period it was
    created with (docs/sync.md §5.3, "After a shrink the line keeps its old billing period")."""
    interleaved, late = unique("interleaved"), unique("late")
    for doc, type_ in ((v1, "subscription.created"), (v2, "subscription.updated"), (v3, "subscription.cancelled")):
        apply(engine, doc(interleaved))
        send(worker, interleaved, type_)
        worker.drain()
    for doc in (v1, v2, v3):
        apply(engine, doc(late))
    for type_ in ("subscription.cancelled", "subscription.updated", "subscription.created"):
        send(worker, late, type_)
    worker.drain()

    def without_billing_period(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = comparable(lines)
        for line in out:
            line["subscription"] = {k: v for k, v in line["subscription"].items() if k != "billing_period"}
        return out

    expected = lines_json(engine, interleaved)
    assert len(expected) == 4
    assert without_billing_period(lines_json(engine, late)) == without_billing_period(expected)
    assert expected[1]["subscription"]["billing_period"]["to"] == "2024-03-01T00:00:00Z"  # kept after the shrink


def test_a_malformed_event_is_dead_lettered_with_its_reason_and_nothing_is_written(
    engine: Engine, worker: WorkerProcess
) -> None:
    ns = unique("malformed")
    apply(engine, v1(ns))
    bad = {"type": "subscription.created", "namespace": ns, "subscription_id": "sub_1", "occurred_at": "yesterday"}
    message = worker.broker.enqueue(
        dramatiq.Message(queue_name=QUEUE_NAME, actor_name="subscription_event", args=(bad,), kwargs={}, options={})
    )
    worker.drain()
    [letter] = [
        d.to_json() for d in list_dead_letters(worker.broker) if d.to_json()["message_id"] == message.message_id
    ]
    assert letter["reason"] == "invalid_payload" and letter["attempts"] == 1
    assert "event_id: is required" in letter["error"] and "occurred_at: must be an RFC 3339 time" in letter["error"]
    assert letter["event"] == bad
    assert lines_json(engine, ns) == []
    with engine.connect() as conn:
        states = conn.execute(select(func.count()).where(subscription_sync_states.c.namespace == ns)).scalar_one()
    assert states == 0
    assert '"reason": "invalid_payload"' in worker.log()  # logged with its reason


def test_a_missing_subscription_is_retried_then_dead_lettered(engine: Engine, worker: WorkerProcess) -> None:
    ns = unique("missing")
    event = send(worker, ns, "subscription.updated")
    worker.drain()
    letters = [d.to_json() for d in list_dead_letters(worker.broker)]
    [letter] = [d for d in letters if d["event"] == event.payload()]
    assert letter["reason"] == "not_found" and letter["attempts"] == 2  # SUBSYNC_DOMAIN_MAX_RETRIES=1


def test_a_foreign_producer_enqueues_with_raw_redis_commands(engine: Engine, worker: WorkerProcess) -> None:
    """The recipe of docs/operations.md §8, command for command: HSET the message JSON, RPUSH its id (in MULTI/EXEC)."""
    ns = unique("foreign")
    apply(engine, v1(ns))
    message_id = str(uuid.uuid4())
    message = {
        "queue_name": "subscription-sync",
        "actor_name": "subscription_event",
        "args": [
            {
                "type": "subscription.created",
                "namespace": ns,
                "subscription_id": "sub_1",
                "event_id": "billing-svc-42",
                "occurred_at": "2024-02-15T09:30:00Z",
                "as_of": "2024-02-15T00:00:00Z",
                "emitted_by": "billing-svc",  # unknown fields are ignored
            }
        ],
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    prefix = worker.broker.namespace  # "dramatiq" unless SUBSYNC_BROKER_NAMESPACE says otherwise
    client = worker.broker.client
    pipe = client.pipeline(transaction=True)  # MULTI ... EXEC
    pipe.hset(f"{prefix}:subscription-sync.msgs", message_id, json.dumps(message))
    pipe.rpush(f"{prefix}:subscription-sync", message_id)
    pipe.execute()
    worker.drain()  # the message was acknowledged: nothing is left under its id
    assert len(lines_json(engine, ns)) == 3
    assert [d for d in list_dead_letters(worker.broker) if d.id == message_id] == []


def test_a_foreign_message_without_redis_message_id_is_acknowledged_by_its_message_id(
    engine: Engine, worker: WorkerProcess
) -> None:
    ns = unique("foreign-bare")
    apply(engine, v1(ns))
    message_id = str(uuid.uuid4())
    event = SubscriptionEvent.new("subscription.created", namespace=ns, subscription_id="sub_1", as_of=AS_OF)
    message = {
        "queue_name": "subscription-sync",
        "actor_name": "subscription_event",
        "args": [event.payload()],
        "kwargs": {},
        "options": {},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    prefix = worker.broker.namespace
    pipe = worker.broker.client.pipeline(transaction=True)
    pipe.hset(f"{prefix}:subscription-sync.msgs", message_id, json.dumps(message))
    pipe.rpush(f"{prefix}:subscription-sync", message_id)
    pipe.execute()
    worker.drain()
    assert len(lines_json(engine, ns)) == 3


def scrape(worker: WorkerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The worker's /metrics as {sample name: {sorted labels: value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as response:
        body = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_follow_prometheus_conventions_and_gauge_the_queue(engine: Engine, worker: WorkerProcess) -> None:
    created(engine, worker, unique("metrics"))
    send(worker, unique("metrics-missing"), "subscription.updated")  # fails: not_found, then dead-lettered
    worker.drain()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def scraped() -> bool:  # the queue gauges are refreshed at most every STATUS_CACHE_SECONDS
        nonlocal samples
        try:
            samples = scrape(worker)
        except OSError:
            return False
        return sum(samples.get("subsync_dead_letter_messages", {}).values()) >= 1

    worker.wait_for(scraped, "the dead letter in the gauges")
    expected = status(engine, worker.broker)

    event = (("actor_name", "subscription_event"),)
    done = (*event, ("outcome", "done"))
    assert samples["subsync_message_duration_seconds_count"][done] >= 1
    assert samples["subsync_message_duration_seconds_bucket"][(*event, ("le", "+Inf"), ("outcome", "done"))] >= 1
    assert samples["subsync_message_duration_seconds_count"][(*event, ("outcome", "failed"))] >= 2  # two attempts
    failure = (*event, ("kind", "domain"), ("reason", "not_found"))
    assert samples["subsync_message_failures_total"][failure] >= 2
    assert samples["subsync_syncs_total"][event] >= 1
    assert samples["subsync_patches_total"][(("op", "line_create"),)] >= 3
    assert samples["subsync_status_up"][()] == 1
    queue = ("queue_name", "subscription-sync")
    for state in ("ready", "in_progress", "delayed"):
        assert ((queue, ("state", state))) in samples["subsync_queue_messages"]
    assert samples["subsync_dead_letter_messages"][(queue,)] == expected["dead_letters"] >= 1
    assert samples["subsync_due_subscriptions"][()] >= 1  # the synced subscription is due again (2024)
    overdue = samples["subsync_reconcile_overdue_seconds"][()]
    assert expected["overdue_seconds"] - STATUS_CACHE_SECONDS - 1 <= overdue <= expected["overdue_seconds"]
    assert "dramatiq_messages_total" in samples and "dramatiq_message_rejects_total" in samples
    # No duration of the project's own is in milliseconds (Dramatiq's histogram is, and stays as it is).
    own = {name for name in samples if name.startswith("subsync_")}
    assert not {name for name in own if "milliseconds" in name or name.endswith("_ms")}


def test_log_lines_have_one_timestamp_format_no_nulls_and_dramatiq_lines_carry_the_message_id(
    engine: Engine, worker: WorkerProcess
) -> None:
    send(worker, unique("logs-missing"), "subscription.updated")  # fails twice: Dramatiq logs its retry decisions
    worker.drain()
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert lines
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"]), line
        assert None not in line.values(), line
    failed = [line for line in lines if line["event"] == "message.failed"]
    assert failed
    # Dramatiq's Retries middleware logs after MessageLog has unbound its context: the id still comes along.
    retry_lines = [line for line in lines if line["logger"].startswith("dramatiq.middleware.retries")]
    assert {line["event"].split(" ")[0] for line in retry_lines} >= {"Retrying", "Retries"}
    assert {line["message_id"] for line in retry_lines} == {line["message_id"] for line in failed}
