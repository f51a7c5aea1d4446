"""The API version check at load time (``POSTROOM_API``, postroom.api.VERSION).

A plugin that declares the API it was written for is loaded only by a kernel
with the same major version and at least its minor version; otherwise the
kernel stops (or, without a ``plugins:`` list, warns) with an error naming the
plugin, its distribution and both versions.
"""

from __future__ import annotations

import pytest

from postroom.api import VERSION, api_compatible
from postroom.drivers import load_driver
from postroom.errors import PluginLoadError
from postroom.plugins.manager import load_plugins
from tests.hooks.support import FakeDistribution, entry_point, sample

SAMPLES = "tests.hooks.sample_plugins"


def test_version_is_semantic() -> None:
    major, minor, patch = (int(part) for part in VERSION.split("."))
    assert (major, minor, patch) >= (1, 0, 0)


@pytest.mark.parametrize(
    ("declared", "provided", "ok"),
    [
        ("1.0", "1.0.0", True),
        ("1", "1.3.0", True),
        ("1.2", "1.3.1", True),
        ("1.3.7", "1.3.0", True),  # the patch level never matters
        ("1.4", "1.3.0", False),  # needs names added after this kernel
        ("2.0", "1.9.0", False),
        ("0.9", "1.0.0", False),
    ],
)
def test_compatibility_rule(declared: str, provided: str, ok: bool) -> None:
    assert api_compatible(declared, provided) is ok


def test_a_garbled_declaration_is_refused() -> None:
    with pytest.raises(ValueError, match="not an API version: 'one'"):
        api_compatible("one")


def test_a_plugin_for_this_api_loads() -> None:
    plugins = load_plugins(["current_api"], available=[sample("current_api")])
    assert "current_api" in plugins.order


def test_a_plugin_for_a_newer_minor_version_is_refused_by_name() -> None:
    ep = entry_point(
        "future_minor", f"{SAMPLES}:future_minor", FakeDistribution("postroom-future", "3.1")
    )
    with pytest.raises(PluginLoadError) as raised:
        load_plugins(["future_minor"], available=[ep])
    message = str(raised.value)
    assert "'future_minor'" in message
    assert "postroom-future" in message
    assert f"written for postroom API 1.99, but this kernel provides API {VERSION}" in message


def test_a_plugin_for_another_major_version_is_a_warning_when_not_listed() -> None:
    plugins = load_plugins(None, available=[sample("next_major"), sample("current_api")])
    assert plugins.order[-1] == "current_api"
    assert "next_major" not in plugins.order
    (warning,) = [w for w in plugins.warnings if "next_major" in w]
    assert "written for postroom API 2.0" in warning
    (info,) = [i for i in plugins.infos if i.name == "next_major"]
    assert info.enabled is False
    assert info.error is not None and "API 2.0" in info.error


def test_a_garbled_declaration_is_a_load_error() -> None:
    with pytest.raises(PluginLoadError, match="POSTROOM_API: not an API version: 'one'"):
        load_plugins(["garbled_api"], available=[sample("garbled_api")])


def test_an_embedded_plugin_is_checked_too() -> None:
    from tests.hooks.sample_plugins import next_major

    with pytest.raises(PluginLoadError, match=r"API 2\.0"):
        load_plugins([], extra=[("host", next_major)])


def test_drivers_are_checked_on_load(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = load_driver("postroom.sources", "maildir")
    monkeypatch.setattr(driver, "POSTROOM_API", "2.1", raising=False)
    with pytest.raises(PluginLoadError, match=r"'maildir'.*written for postroom API 2\.1"):
        load_driver("postroom.sources", "maildir")


def test_every_first_party_distribution_declares_the_current_api() -> None:
    from importlib.metadata import entry_points

    from postroom._apiversion import declared_api

    groups = ["postroom.plugins", "postroom.sources", "postroom.senders", "postroom.auth",
              "postroom.stores"]
    undeclared = []
    for group in groups:
        for ep in entry_points(group=group):
            if ep.value.startswith("postroom."):
                continue  # the kernel's own drivers are the API
            if declared_api(ep.load()) is None:
                undeclared.append(f"{group}:{ep.name}")
            else:
                assert api_compatible(declared_api(ep.load()) or "")
    assert undeclared == []
