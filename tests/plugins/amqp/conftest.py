"""The private RabbitMQ node of the run (contrib/scripts/amqp-test-server), and
how the tests drive the plugin and read the broker.

``make test`` starts the node once and exports ``POSTROOM_TEST_AMQP_STATE``
(and the URLs); the session fixture ``amqp_broker`` reads it. Without it the
tests that use the broker fail, naming the command to run: nothing is
skipped. They carry the ``servers`` marker (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pika
import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "contrib" / "scripts" / "amqp-test-server"
DRIVER = Path(__file__).with_name("drive_handoff.py")


@attrs.frozen
class Broker:
    """The node as state.json describes it."""

    state: dict[str, Any]

    @property
    def port(self) -> int:
        return int(self.state["ports"]["amqp"])

    @property
    def tls_port(self) -> int:
        return int(self.state["ports"]["amqps"])

    @property
    def ca_file(self) -> str:
        return str(self.state["ca_file"])

    def site(self, queue: str, **amqp: Any) -> dict[str, Any]:
        """A site handing off to *queue* on this broker (plain AMQP unless
        *amqp* says otherwise), retrying after 1 s then 2 s."""
        options = {
            "url": f"amqp://127.0.0.1:{self.port}/{self.state['vhost']}",
            "username": self.state["user"],
            "password": self.state["password"],
            "queue": queue,
            **amqp,
        }
        return {
            "plugins": ["amqp"],
            "amqp": options,
            "gateway": {"handoff-retry-initial": "00:00:01", "handoff-retry-max": "00:00:02"},
            "http": {"public-url": "https://postroom.example.test/api"},
        }

    def command(self, action: str) -> list[str]:
        return [sys.executable, str(SCRIPT), action]

    def env(self) -> dict[str, str]:
        return {**os.environ, "POSTROOM_TEST_AMQP_PORT_BASE": str(self.state["base"])}

    def blocking(self) -> pika.BlockingConnection:
        credentials = pika.PlainCredentials(self.state["user"], self.state["password"])
        return pika.BlockingConnection(
            pika.ConnectionParameters(
                "127.0.0.1", self.port, self.state["vhost"], credentials
            )
        )

    def drain(self, queue: str) -> list[tuple[Any, bytes]]:
        """Every message in *queue* (properties, body), read and removed."""
        with self.blocking() as connection:
            channel = connection.channel()
            messages = []
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return messages
                messages.append((properties, body))

    def delete(self, queue: str) -> None:
        with self.blocking() as connection:
            connection.channel().queue_delete(queue)

    def drive(self, job: dict[str, Any], tmp_path: Path, timeout: float = 170) -> dict[str, Any]:
        """Run tests/plugins/amqp/drive_handoff.py on *job*; its JSON answer."""
        job_file = tmp_path / f"job-{uuid.uuid4().hex[:8]}.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(DRIVER), str(job_file)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env(), "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert done.returncode == 0, f"the driver failed:\n{done.stderr[-4000:]}"
        answer: dict[str, Any] = json.loads(done.stdout)
        answer["stderr"] = done.stderr
        return answer


@pytest.fixture(scope="session")
def amqp_broker() -> Broker:
    """The running private node (started by ``make test``)."""
    state_file = os.environ.get("POSTROOM_TEST_AMQP_STATE")
    if not state_file:
        pytest.fail(
            "POSTROOM_TEST_AMQP_STATE is not set: start the private RabbitMQ node with "
            'eval "$(contrib/scripts/amqp-test-server start)" (make test does)',
            pytrace=False,
        )
    try:
        state = json.loads(Path(state_file).read_text())
    except (OSError, ValueError) as exc:
        pytest.fail(f"the AMQP test node's state {state_file} is unreadable: {exc}", pytrace=False)
    broker = Broker(state)
    status = subprocess.run(broker.command("status"), env=broker.env(), check=False)
    if status.returncode != 0:
        pytest.fail(f"the AMQP test node of {state_file} does not answer", pytrace=False)
    return broker


@pytest.fixture
def queue(amqp_broker: Broker) -> Iterator[str]:
    """A queue name of this test's own, deleted afterwards."""
    name = f"postroom-test-{uuid.uuid4().hex[:12]}"
    yield name
    amqp_broker.delete(name)
