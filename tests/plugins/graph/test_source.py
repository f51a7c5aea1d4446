"""The Graph source against the strict contract fake (tests/fakes/graph)."""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import Any

import pytest
from twisted.internet import defer, task

from postroom.api import (
    AuthenticationFailed,
    ConnectionDown,
    SourceError,
    SourceItem,
)
from postroom.testing import result_of
from postroom_graph.source import GraphSource
from tests.fakes.graph import GraphFake
from tests.plugins.fake_auth import FakeAuthenticator
from tests.plugins.graph.conftest import BOX, TOKEN, FakeGraphSource, Make, graph_schema


def eml(n: int, size: int = 0) -> bytes:
    body = b"x" * size
    return (
        f"Message-ID: <m{n}@contoso.test>\r\nFrom: a{n}@example.test\r\n"
        f"To: {BOX}\r\nSubject: message {n}\r\n\r\nbody {n}\r\n"
    ).encode() + body


def connected(make_source: Make, **options: Any) -> FakeGraphSource:
    source = make_source(**options)
    result_of(source.connect())
    return source


def test_entry_point_and_options_are_graph_only() -> None:
    found = entry_points(group="postroom.sources", name="graph")
    assert [e.load() for e in found] == [GraphSource]
    options = [o for o in graph_schema() if o.declared_by == "postroom-graph"]
    assert {o.name for o in options} >= {
        "server",
        "mailbox",
        "folder-path",
        "after-processing",
        "move-to-folder",
        "ca-file",
        "enable-debug",
    }
    assert all(o.types == ("graph",) for o in options)


def test_move_without_a_folder_is_a_config_error(make_source: Make) -> None:
    with pytest.raises(Exception, match="move-to-folder"):
        make_source(after_processing="move")


def test_connect_resolves_nested_folders_and_reports_the_login(
    make_source: Make, graph: GraphFake
) -> None:
    support = graph.folder(BOX, "Inbox/Support")
    done = graph.folder(BOX, "Processed/2026")
    source = connected(
        make_source,
        folder_path="Inbox/Support",
        after_processing="move",
        move_to_folder="Processed/2026",
    )
    assert (source.folder_id, source.move_to_id) == (support.id, done.id)
    assert [e[1] for e in source.events] == ["login-ok"]  # type: ignore[attr-defined]
    assert "delta" in source.capabilities


def test_a_missing_folder_is_named(make_source: Make, graph: GraphFake) -> None:
    graph.mailbox(BOX)
    source = make_source(folder_path="Inbox/Nowhere")
    with pytest.raises(SourceError, match="no folder 'Nowhere' in 'Inbox/Nowhere'"):
        result_of(source.connect())


def test_list_fetch_and_delete_in_batches(make_source: Make, graph: GraphFake) -> None:
    ids = [graph.add_message(BOX, "inbox", eml(n)) for n in range(45)]
    source = connected(make_source)
    items = result_of(source.list_new(None))
    assert [i.source_key for i in items] == ids
    assert items[0].size == len(eml(0))
    # only the last item carries the delta link: it is stored once all before it are
    assert [i.cursor for i in items[:-1]] == [None] * 44
    assert "$deltatoken=" in (items[-1].cursor or "")
    fetched = [result_of(source.fetch(item)) for item in items]
    with open(fetched[7].raw.path, "rb") as f:
        assert f.read() == eml(7)
    for message in fetched:
        result_of(source.acknowledge(message))
    assert graph.counts["batch"] == 2  # 20 + 20 sent as they filled
    result_of(source.disconnect())
    assert graph.counts["batch"] == 3  # the last 5 before disconnecting
    assert graph.messages_in(BOX, "inbox") == []
    assert os.listdir(source.context.spool_dir) == []


def test_moves_keep_the_immutable_id(make_source: Make, graph: GraphFake) -> None:
    ids = [graph.add_message(BOX, "inbox", eml(n)) for n in range(3)]
    graph.folder(BOX, "Inbox/Done")
    source = connected(make_source, after_processing="move", move_to_folder="Inbox/Done")
    for item in result_of(source.list_new(None)):
        result_of(source.acknowledge(result_of(source.fetch(item))))
    assert result_of(source.list_new(None)) == []  # flushes the moves first
    assert [m.id for m in graph.messages_in(BOX, "Inbox/Done")] == ids


def test_the_delta_link_lists_only_new_mail(make_source: Make, graph: GraphFake) -> None:
    graph.add_message(BOX, "inbox", eml(1))
    source = connected(make_source)
    first = result_of(source.list_new(None))
    cursor = first[-1].cursor
    new = graph.add_message(BOX, "inbox", eml(2))
    assert [i.source_key for i in result_of(source.list_new(cursor))] == [new]


def test_an_expired_delta_link_resyncs_without_listing_stored_messages(
    make_source: Make, graph: GraphFake
) -> None:
    stored = {graph.add_message(BOX, "inbox", eml(n)) for n in range(3)}
    fresh = graph.add_message(BOX, "inbox", eml(9))

    def known(_mailbox: str, keys: list[str]) -> defer.Deferred[set[str]]:
        return defer.succeed(stored & set(keys))

    source = connected(make_source, known=known)
    old_link = result_of(source.list_new(None))[-1].cursor
    graph.expire_deltas()
    items = result_of(source.list_new(old_link))
    assert graph.counts["gone"] == 1
    assert [i.source_key for i in items] == [fresh]
    # the stored ones left in the folder (a crash before the delete) are deleted now
    assert [m.id for m in graph.messages_in(BOX, "inbox")] == [fresh]


def test_throttling_waits_retry_after_for_this_mailbox_only(
    make_source: Make, graph: GraphFake, clock: task.Clock
) -> None:
    graph.add_message(BOX, "inbox", eml(1))
    slow = connected(make_source)
    other = connected(make_source, name="other")
    graph.throttle(1, retry_after=30)
    waiting = slow.list_new(None)
    assert not waiting.called
    # another mailbox is not held up meanwhile
    assert len(result_of(other.list_new(None))) == 1
    clock.advance(29)
    assert not waiting.called
    clock.advance(1)
    assert len(result_of(waiting)) == 1
    assert graph.counts["throttled"] == 1


def test_endless_throttling_ends_in_connection_down(
    make_source: Make, graph: GraphFake, clock: task.Clock
) -> None:
    graph.mailbox(BOX)
    source = connected(make_source)
    graph.throttle(10, retry_after=1, status=503)
    waiting = source.list_new(None)
    for _ in range(10):
        clock.advance(1)
    with pytest.raises(ConnectionDown, match="throttles requests"):
        result_of(waiting)


def test_an_item_deleted_after_listing_is_skipped_and_logged(
    make_source: Make, graph: GraphFake, caplog: pytest.LogCaptureFixture
) -> None:
    gone = graph.add_message(BOX, "inbox", eml(1))
    source = connected(make_source)
    items = result_of(source.list_new(None))
    graph.delete_on_fetch(gone)
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError, match="no longer in"):
        result_of(source.fetch(items[0]))
    assert "deleted from inbox after it was listed: skipped" in caplog.text
    assert os.listdir(source.context.spool_dir) == []


def test_a_cut_download_leaves_no_spool_file(make_source: Make, graph: GraphFake) -> None:
    graph.add_message(BOX, "inbox", eml(1, size=100_000))
    source = connected(make_source)
    item = result_of(source.list_new(None))[0]
    graph.cut_next_download()
    with pytest.raises(ConnectionDown):
        result_of(source.fetch(item))
    assert os.listdir(source.context.spool_dir) == []
    again = result_of(source.fetch(item))
    assert again.raw.size == len(eml(1, size=100_000))


def test_over_maximum_size_is_noted_before_downloading_and_kept_whole(
    make_source: Make, graph: GraphFake, caplog: pytest.LogCaptureFixture
) -> None:
    big = eml(1, size=5000)
    graph.add_message(BOX, "inbox", big)
    source = connected(make_source, max_size=1000)
    item = result_of(source.list_new(None))[0]
    assert item.size == len(big)
    with caplog.at_level(logging.INFO):
        fetched = result_of(source.fetch(item))
    assert "over maximum-msg-size" in caplog.text
    assert fetched.raw.size == len(big)  # as IMAP: downloaded, stored wrapped by the kernel


def test_a_refused_token_is_refreshed_once(make_source: Make, graph: GraphFake) -> None:
    graph.mailbox(BOX)
    auth = FakeAuthenticator(BOX, "expired", "BEARER", refreshed=(TOKEN,))
    source = connected(make_source, auth=auth)
    assert auth.invalidated == 1
    assert [e[1] for e in source.events] == ["login-failed", "login-ok"]  # type: ignore[attr-defined]


def test_a_token_expiring_mid_run_is_refreshed(make_source: Make, graph: GraphFake) -> None:
    graph.add_message(BOX, "inbox", eml(1))
    auth = FakeAuthenticator(BOX, TOKEN, "BEARER", refreshed=("token-2",))
    source = connected(make_source, auth=auth)
    graph.tokens = {"token-2"}
    assert len(result_of(source.list_new(None))) == 1
    assert auth.invalidated == 1


def test_a_token_refused_twice_is_authentication_failed(
    make_source: Make, graph: GraphFake
) -> None:
    graph.mailbox(BOX)
    auth = FakeAuthenticator(BOX, "tok-one-7f3a", "BEARER", refreshed=("tok-two-9c1d",))
    source = make_source(auth=auth)
    with pytest.raises(AuthenticationFailed) as info:
        result_of(source.connect())
    assert "tok-one" not in str(info.value) and "tok-two" not in str(info.value)
    assert "login refused for mailbox support" in str(info.value)
    assert auth.invalidated == 2


def test_a_password_is_not_sent_to_graph(make_source: Make, graph: GraphFake) -> None:
    source = make_source(auth=FakeAuthenticator(BOX, "pw", "PLAIN"))
    with pytest.raises(SourceError, match="needs an OAuth access token"):
        result_of(source.connect())
    assert graph.counts.total() == 0


def test_links_to_another_origin_are_refused(make_source: Make, graph: GraphFake) -> None:
    graph.mailbox(BOX)
    source = connected(make_source)
    with pytest.raises(SourceError, match="refusing to send the token there"):
        source.session.url("https://evil.test/v1.0/users/x/messages/delta?$deltatoken=1")
    assert source.session.url("/users/x").startswith(graph.url + "/v1.0/")


def test_a_cursor_of_another_server_or_folder_lists_the_folder_whole(
    make_source: Make, graph: GraphFake
) -> None:
    graph.folder(BOX, "Inbox/Other")
    mine = graph.add_message(BOX, "inbox", eml(1))
    other = connected(make_source, folder_path="Inbox/Other")
    other_link = result_of(other.list_new(None))
    assert other_link == []
    link = other._idle_link[1] if other._idle_link else None
    assert link is not None
    source = connected(make_source)
    for cursor in (link, "https://evil.test/v1.0/users/x/messages/delta?$deltatoken=1"):
        assert [i.source_key for i in result_of(source.list_new(cursor))] == [mine]


def test_endlessly_throttled_batches_end_the_pass(
    make_source: Make, graph: GraphFake, clock: task.Clock
) -> None:
    graph.add_message(BOX, "inbox", eml(1))
    source = connected(make_source)
    [item] = result_of(source.list_new(None))
    result_of(source.acknowledge(result_of(source.fetch(item))))
    source._send_batch = lambda ids: defer.succeed(list(ids))  # type: ignore[method-assign]
    with pytest.raises(ConnectionDown, match="keeps throttling"):
        result_of(defer.ensureDeferred(source._flush()))


def test_item_keys_are_ids_not_hashes(make_source: Make, graph: GraphFake) -> None:
    first = graph.add_message(BOX, "inbox", eml(1))
    second = graph.add_message(BOX, "inbox", eml(1))  # the same bytes twice
    source = connected(make_source)
    assert [i.source_key for i in result_of(source.list_new(None))] == [first, second]
    assert isinstance(SourceItem(source_key=first), SourceItem)


def test_delta_links_in_either_folder_syntax_are_used(make_source: Make, graph: GraphFake) -> None:
    graph.mailbox(BOX)
    source = connected(make_source)
    folder = source.folder_id
    base = f"{graph.url}/v1.0/users/{BOX}/mailFolders"
    for link in (
        f"{base}('{folder}')/messages/delta?$deltatoken=a",
        f"{base}/{folder}/messages/delta?$deltatoken=b",
    ):
        assert source._usable(link) == link


class SlowDeltaPages:
    """The HTTP client, with each delta page answered *delay* seconds later on
    the test's clock (a large folder listed over a slow link)."""

    def __init__(self, http: Any, clock: task.Clock, delay: float) -> None:
        self.http = http
        self.clock = clock
        self.delay = delay

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        answer = self.http.request(method, url, **kwargs)
        if "/messages/delta" not in url:
            return answer
        later: defer.Deferred[Any] = defer.Deferred()
        answer.addBoth(lambda result: self.clock.callLater(self.delay, later.callback, result))
        return later

    def close(self) -> defer.Deferred[None]:
        return self.http.close()


def test_a_long_paged_listing_shows_progress(
    make_source: Make, graph: GraphFake, clock: task.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [graph.add_message(BOX, "inbox", eml(n)) for n in range(250)]
    source = connected(make_source)
    source.session.http = SlowDeltaPages(source.session.http, clock, 3)
    caplog.set_level(logging.INFO, "postroom.progress")
    listing = source.list_new(None)
    for _ in range(3):  # three pages of 100, 100 and 50
        assert not listing.called
        clock.advance(3)
    assert [i.source_key for i in result_of(listing)] == ids
    assert [r.getMessage() for r in caplog.records] == [
        "mailbox support: listing… 100 message(s) so far (16.7 msg/s)",
        "mailbox support: listed 250 message(s) in 9 s",
    ]
    assert not clock.getDelayedCalls()


def test_a_quick_listing_shows_no_progress(
    make_source: Make, graph: GraphFake, clock: task.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(150):
        graph.add_message(BOX, "inbox", eml(n))
    source = connected(make_source)
    source.session.http = SlowDeltaPages(source.session.http, clock, 2)
    caplog.set_level(logging.INFO, "postroom.progress")
    listing = source.list_new(None)
    clock.advance(2)
    clock.advance(2)
    assert len(result_of(listing)) == 150
    assert caplog.records == []
    assert not clock.getDelayedCalls()


def test_the_first_listing_of_a_connection_finds_what_a_killed_run_left(
    make_source: Make, graph: GraphFake
) -> None:
    ids = [graph.add_message(BOX, "inbox", eml(n)) for n in range(3)]
    stored: set[str] = set()

    def known(_mailbox: str, keys: list[str]) -> defer.Deferred[set[str]]:
        return defer.succeed(stored & set(keys))

    first = connected(make_source, known=known)
    link = result_of(first.list_new(None))[-1].cursor
    # all three committed (the last with the delta link), killed before the deletes
    stored.update(ids)
    restarted = connected(make_source, known=known)
    assert result_of(restarted.list_new(link)) == []
    assert graph.messages_in(BOX, "inbox") == []  # deleted now, not imported again
    # the connection's later listings go on from the delta link
    new = graph.add_message(BOX, "inbox", eml(9))
    assert [i.source_key for i in result_of(restarted.list_new(link))] == [new]
    assert graph.counts["gone"] == 0


def test_a_message_released_from_quarantine_is_listed_again(
    make_source: Make, graph: GraphFake
) -> None:
    stuck = graph.add_message(BOX, "inbox", eml(1))  # its download kept failing
    source = connected(make_source)
    link = result_of(source.list_new(None))[-1].cursor
    assert result_of(source.list_new(link)) == []  # the delta link has passed it
    source.quarantine_released({stuck})  # the kernel: released by `quarantine replay`
    assert [i.source_key for i in result_of(source.list_new(link))] == [stuck]
    assert result_of(source.list_new(link)) == []
