"""The ``amqp`` plugin against the run's private RabbitMQ node, through a real kernel.

Each test runs tests/plugins/amqp/drive_handoff.py (a kernel on the real
reactor, in its own process) and reads what reached the broker with pika's
blocking client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.plugins.amqp.conftest import Broker


def test_each_interaction_is_one_persistent_json_message(
    amqp_broker: Broker, queue: str, tmp_path: Path
) -> None:
    answer = amqp_broker.drive({"config": amqp_broker.site(queue), "count": 3}, tmp_path)

    assert answer["finished"] and answer["pending"] == [] and answer["failures"] == 0
    messages = amqp_broker.drain(queue)
    assert [p.message_id for p, _ in messages] == answer["ids"]  # one each, in order
    properties, body = messages[0]
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.type == "postroom.interaction"
    assert properties.app_id == "postroom"
    assert abs(properties.timestamp - time.time()) < 300
    assert properties.headers == {"postroom-type": "Inbound", "postroom-subtype": "InboundNew"}
    data = json.loads(body)
    assert data["id"] == properties.message_id
    assert data["subject"] == "case 0"
    assert data["raw_url"] == f"https://postroom.example.test/api/interactions/{data['id']}/raw"
    assert answer["connections"] == 1  # one connection for every hand-off


def test_tls_with_the_runs_ca_delivers_and_an_unknown_ca_is_refused(
    amqp_broker: Broker, queue: str, tmp_path: Path
) -> None:
    tls_url = f"amqps://localhost:{amqp_broker.tls_port}/{amqp_broker.state['vhost']}"
    trusted = amqp_broker.site(queue, url=tls_url, **{"ca-file": amqp_broker.ca_file})
    answer = amqp_broker.drive({"config": trusted, "count": 2}, tmp_path)
    assert answer["finished"] and answer["failures"] == 0
    assert sorted(p.message_id for p, _ in amqp_broker.drain(queue)) == sorted(answer["ids"])

    untrusted = amqp_broker.site(queue, url=tls_url)  # the system's CAs do not know it
    answer = amqp_broker.drive({"config": untrusted, "count": 1, "deadline": 2}, tmp_path)
    assert not answer["finished"] and answer["pending"] == answer["ids"]
    assert "TLS: certificate verify failed" in answer["errors"][answer["ids"][0]]
    assert amqp_broker.drain(queue) == []


def test_an_unroutable_message_is_a_failed_hand_off_not_a_silent_drop(
    amqp_broker: Broker, queue: str, tmp_path: Path
) -> None:
    # amq.direct exists, but nothing is bound with this key: the broker returns it
    site = amqp_broker.site(
        queue, exchange="amq.direct", **{"routing-key": f"{queue}-nowhere", "declare": "false"}
    )
    answer = amqp_broker.drive({"config": site, "count": 2, "deadline": 2}, tmp_path)

    assert not answer["finished"]
    assert sorted(answer["pending"]) == sorted(answer["ids"])
    for error in answer["errors"].values():
        assert "unroutable" in error and "amq.direct" in error
    assert answer["confirmed"] == 0


def test_a_refused_login_is_retried_and_never_shows_the_password(
    amqp_broker: Broker, queue: str, tmp_path: Path
) -> None:
    site = amqp_broker.site(queue, password="not-the-password-4711")
    answer = amqp_broker.drive({"config": site, "count": 1, "deadline": 2}, tmp_path)

    assert not answer["finished"] and answer["pending"] == answer["ids"]
    error = answer["errors"][answer["ids"][0]]
    assert f"cannot publish to amqp://127.0.0.1:{amqp_broker.port}/postroom: " in error
    assert "wrong username or password" in error
    assert "not-the-password-4711" not in answer["stderr"] + json.dumps(answer)


def test_1000_hand_offs_survive_the_broker_stopped_halfway_and_restarted(
    amqp_broker: Broker, queue: str, tmp_path: Path
) -> None:
    """The issue's test: every interaction delivered at least once, under its own
    id, none lost; the kernel's retries (not the test) bring them through."""
    job = {
        "config": amqp_broker.site(queue),
        "count": 1000,
        "outage": {
            "at": 500,
            # publishes from then on wait unconfirmed: the stop catches them in flight
            "block": amqp_broker.command("block"),
            "pause": amqp_broker.command("pause"),
            "resume": amqp_broker.command("resume"),
        },
        "deadline": 60,
    }
    began = time.monotonic()
    answer = amqp_broker.drive(job, tmp_path)
    seconds = time.monotonic() - began

    assert answer["finished"], f"hand-offs still pending: {len(answer['pending'])}"
    assert answer["pending"] == []
    assert len(set(answer["ids"])) == 1000
    # the outage was real: hand-offs failed while the broker was down, and the
    # publisher had to connect again after it
    assert answer["failures_while_down"] > 0
    assert answer["connections"] >= 2
    lost_in_flight = answer["stderr"].count("no confirm from the broker")
    assert lost_in_flight > 0  # published, never confirmed: retried, not counted as done
    delivered = Counter()
    for properties, body in amqp_broker.drain(queue):
        assert json.loads(body)["id"] == properties.message_id
        delivered[properties.message_id] += 1
    assert set(delivered) == set(answer["ids"])  # none lost, nothing foreign
    print(
        f"1000 hand-offs with the broker stopped at 500: {seconds:.1f}s wall, "
        f"{sum(delivered.values()) - 1000} duplicates, {answer['failures']} failed attempts "
        f"({lost_in_flight} in flight at the stop), "
        f"phases {answer['seconds']}"
    )


def check(site: dict[str, object], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "site.yaml"
    config.write_text(json.dumps({**site, "store": {"driver": "memory"}}), encoding="utf-8")
    postroom = Path(sys.executable).with_name("postroom")
    return subprocess.run(
        [str(postroom), "amqp", "check", "-c", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_amqp_check_connects_and_declares_as_the_gateway_would(
    amqp_broker: Broker, queue: str, tmp_path: Path
) -> None:
    done = check(amqp_broker.site(queue), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"connected, publishing to the default exchange, routing key '{queue}'" in done.stdout
    with amqp_broker.blocking() as connection:  # declared, durable, empty
        declared = connection.channel().queue_declare(queue, passive=True)
        assert declared.method.message_count == 0

    done = check(amqp_broker.site(queue, password="wrong-pw-99"), tmp_path)
    assert done.returncode == 1
    assert "wrong username or password" in done.stdout
    assert "wrong-pw-99" not in done.stdout + done.stderr
