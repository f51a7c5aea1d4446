"""``postroom_field_values``: what plugins offer a renderer's field codes, merged in
plugin order (the first to give a name wins), checked, and passed as ``fields`` to
``postroom_validate_request`` and ``postroom_render``."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from postroom import hookimpl
from postroom.model import OutboundRequest
from postroom.plugins.facade import PluginFailure
from tests.conftest import run
from tests.hooks.support import hooks_with


class Offers:
    def __init__(self, offered: Any, deferred: bool = False) -> None:
        self.offered = offered
        self.deferred = deferred

    @hookimpl
    def postroom_field_values(self, request: OutboundRequest) -> Any:
        return defer.succeed(self.offered) if self.deferred else self.offered


class Sees:
    def __init__(self) -> None:
        self.rendered: list[Any] = []
        self.validated: list[Any] = []

    @hookimpl
    def postroom_render(self, fields: Any) -> None:
        self.rendered.append(fields)

    @hookimpl
    def postroom_validate_request(self, fields: Any) -> None:
        self.validated.append(fields)


SECOND = {"Contact": {"FirstName": "Bob", "LastName": "Lee"}, "Agent": {"Nick": "ann"}}


def test_offers_are_merged_first_plugin_winning_and_reach_both_hooks() -> None:
    sees = Sees()
    hooks = hooks_with(
        ("first", Offers({"Contact": {"FirstName": "Anna"}})),
        ("second", Offers(SECOND, deferred=True)),
        ("nothing", Offers(None)),
        ("sees", sees),
    )
    request = OutboundRequest(to=["a@x.example"])
    run(hooks.validate_request(request, None))  # type: ignore[arg-type]
    run(hooks.render(request, None))  # type: ignore[arg-type]
    expected = {"Contact": {"FirstName": "Anna", "LastName": "Lee"}, "Agent": {"Nick": "ann"}}
    assert sees.validated == [expected] and sees.rendered == [expected]


@pytest.mark.parametrize(
    "junk",
    [["Contact"], {"Contact": "Anna"}, {"Contact": {"FirstName": ["Anna"]}},
     {"Contact": {"FirstName": None}}, {1: {}}, {f"g{n}": {} for n in range(21)}],
)  # fmt: skip
def test_anything_but_named_values_is_a_plugin_failure(junk: Any) -> None:
    hooks = hooks_with(("junk", Offers(junk)), ("sees", Sees()))
    with pytest.raises(PluginFailure, match="junk"):
        run(hooks.render(OutboundRequest(to=["a@x.example"]), None))  # type: ignore[arg-type]


def test_no_renderer_means_no_offer_is_asked() -> None:
    asked: list[int] = []

    class Counts:
        @hookimpl
        def postroom_field_values(self) -> None:
            asked.append(1)

    hooks = hooks_with(("counts", Counts()))
    run(hooks.render(OutboundRequest(to=["a@x.example"]), None))  # type: ignore[arg-type]
    assert asked == []
