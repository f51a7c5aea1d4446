"""The ``amqp`` section: what a site may write, what it gives, what is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postroom.api import ConfigError, Interaction
from postroom.testing import TestKernel
from postroom_amqp.message import body_of, properties_of
from postroom_amqp.options import read_settings
from postroom_amqp.plugin import plugin

MAIL = b"From: a@customer.example\r\nTo: support@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def settings_of(**amqp: Any) -> Any:
    with TestKernel(["amqp"], {"amqp": amqp}) as kernel:
        return read_settings(kernel.config)


def refusal(config: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        TestKernel(["amqp"], config).close()
    return caught.value


def test_defaults_and_what_the_url_gives() -> None:
    settings = settings_of(url="amqp://broker.example", queue="interactions")
    assert (settings.host, settings.port, settings.tls, settings.vhost) == (
        "broker.example", 5672, False, "/",
    )  # fmt: skip
    assert settings.exchange == "" and settings.routing_key == "interactions"
    assert settings.declare is True
    assert (settings.confirm_timeout, settings.connect_timeout, settings.heartbeat) == (30, 10, 60)
    assert settings.username == "guest" and settings.password.reveal() == "guest"

    tls = settings_of(url="amqps://mq.example:5999/contact%2Fcentre", **{"routing-key": "mail"})
    assert (tls.port, tls.tls, tls.vhost, tls.routing_key, tls.queue) == (
        5999, True, "contact/centre", "mail", None,
    )  # fmt: skip
    assert settings_of(url="amqps://mq.example", queue="q").port == 5671
    # the vhost option wins over the URL's path
    assert settings_of(url="amqp://mq.example/a", vhost="b", queue="q").vhost == "b"


def test_the_password_is_a_secret_and_never_in_the_address() -> None:
    settings = settings_of(
        url="amqp://mq.example/v", username="postroom", password="s3cret-pw", queue="q"
    )
    assert settings.password.reveal() == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings) + str(settings) + settings.address
    assert settings.address == "amqp://mq.example:5672/v"


@pytest.mark.parametrize(
    ("amqp", "option", "words"),
    [
        ({"url": "http://mq.example", "queue": "q"}, "amqp.url", "amqp:// or amqps://"),
        ({"url": "amqp://u:pw-4711@mq.example", "queue": "q"}, "amqp.url", "amqp.password"),
        ({"url": "amqp://mq.example?heartbeat=5", "queue": "q"}, "amqp.url", "query"),
        ({"url": "amqp://mq.example"}, "amqp.routing-key", "amqp.queue or amqp.routing-key"),
        ({"url": "amqp://mq.example", "queue": "q", "ca-file": "ca.pem"}, "amqp.ca-file", "amqps"),
        ({"url": "amqp://mq.example", "queue": "q", "confirm-timeout": "0"}, None, None),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start(
    amqp: dict[str, Any], option: str | None, words: str | None
) -> None:
    error = refusal({"amqp": amqp})
    if option is not None:
        assert error.option == option
        assert words is not None and words in str(error)
    assert "pw-4711" not in str(error)


def test_a_site_that_enables_the_plugin_must_name_the_broker() -> None:
    error = refusal({"plugins": ["amqp"]})
    assert error.option == "amqp.url" and "required" in str(error)


def test_without_a_url_the_plugin_hands_nothing_off_and_holds_nothing_up() -> None:
    with TestKernel(["amqp"]) as kernel:
        assert plugin.publisher(kernel.config) is None
        [interaction] = kernel.ingest(MAIL)
        assert kernel.handoff_state(interaction.id) == "done"


def test_the_message_is_the_handoff_json_with_its_id_as_message_id() -> None:
    config = {"http": {"public-url": "https://gw.example/api"}}
    with TestKernel(["amqp"], config) as kernel:
        interaction = Interaction(subject="Straße", from_addr="a@customer.example")
        body = body_of(interaction, kernel.config)
        properties = properties_of(interaction, 1_796_000_000.7)
    assert body.decode("utf-8").count("Straße") == 1  # UTF-8, not \u escapes
    data = json.loads(body)
    assert data["id"] == interaction.id
    assert data["raw_url"] == f"https://gw.example/api/interactions/{interaction.id}/raw"
    assert properties.message_id == interaction.id
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.timestamp == 1_796_000_000


def test_amqp_check_without_a_broker_configured_says_so(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("store: {driver: memory}\n", encoding="utf-8")
    postroom = Path(sys.executable).with_name("postroom")
    done = subprocess.run(
        [str(postroom), "amqp", "check", "-c", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "sets no amqp.url" in done.stdout
