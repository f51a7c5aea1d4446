"""EWSSource against the contract fake: listing by sync state, MimeContent,
after-processing, resync, throttling, vanished items, login and tokens."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import defer
from zope.interface.verify import verifyClass

from postroom.drivers import SourceItem, load_driver
from postroom.errors import AuthenticationFailed, ConnectionDown, SourceError
from postroom.interfaces import SOURCES_GROUP, ISource
from postroom.model import Cursor
from postroom.runner import InlineRunner
from postroom_ews import client as ews_client
from postroom_ews.source import EWSSource
from tests.fakes.ews.server import EWSFake
from tests.plugins.ews.conftest import Harness, message
from tests.plugins.fake_auth import FakeAuthenticator


def seed(fake: EWSFake, count: int, folder: str = "inbox") -> list[str]:
    return [fake.store.add(message(n), folder) for n in range(count)]


def process(h: Harness, items: list[SourceItem]) -> list[bytes]:
    """What the kernel does with each item: fetch, store (here: note), acknowledge."""
    got = []
    for item in items:
        fetched = h.settle(h.source.fetch(item))
        got.append(Path(fetched.raw.path).read_bytes())
        h.stored.add(item.source_key)
        h.settle(h.source.acknowledge(fetched))
    return got


def test_entry_point_loads_and_implements_isource() -> None:
    cls = load_driver(SOURCES_GROUP, "ews")
    assert cls is EWSSource
    assert verifyClass(ISource, cls)


def test_imports_byte_for_byte_then_deletes_after_the_commit(
    fake: EWSFake, harness: Harness
) -> None:
    ids = seed(fake, 5)
    harness.settle(harness.source.connect())
    items = harness.settle(harness.source.list_new(None))
    assert [i.source_key for i in items] == ids
    assert all(i.size == len(message(n)) for n, i in enumerate(items))
    assert process(harness, items) == [message(n) for n in range(5)]
    assert fake.counts.get("DeleteItem", 0) == 0  # batched: sent before the next listing
    again = harness.settle(harness.source.list_new(Cursor(harness.source.name, items[-1].cursor)))
    assert again == []
    assert fake.store.folders["inbox"].items == []
    assert fake.counts["DeleteItem"] == 1
    assert harness.auth.asked == 1


def test_move_to_a_folder_path(fake: EWSFake, tmp_path: Path) -> None:
    root = fake.store.folders["msgfolderroot"]
    done = fake.store.add_folder(None, fake.store.add_folder(None, root.id, "Support").id, "Done")
    seed(fake, 3)
    h = Harness(fake, tmp_path / "spool", after_processing="move", move_to_folder="Support/Done")
    h.settle(h.source.connect())
    process(h, h.settle(h.source.list_new(None)))
    h.settle(h.source.disconnect())
    assert fake.store.folders["inbox"].items == []
    assert sorted(fake.store.mime[i] for i in done.items) == sorted(message(n) for n in range(3))


def test_a_crash_mid_page_loses_nothing_and_fetches_nothing_twice(
    fake: EWSFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ews_client, "SYNC_PAGE", 2)
    ids = seed(fake, 5)
    h = Harness(fake, tmp_path / "spool", after_processing="move", move_to_folder="Processed")
    fake.store.add_folder(None, fake.store.folders["msgfolderroot"].id, "Processed")
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    assert len(items) == 5
    # the kernel committed three (the cursor of the third) and was killed
    # before acknowledging anything
    for item in items[:3]:
        h.stored.add(item.source_key)
    cursor = Cursor(h.source.name, items[2].cursor)
    restarted = Harness(fake, tmp_path / "spool2")
    restarted.stored = h.stored
    restarted.settle(restarted.source.connect())
    listed = restarted.settle(restarted.source.list_new(cursor))
    assert [i.source_key for i in listed] == ids[3:]
    assert listed[-1].cursor == items[-1].cursor
    # the three stored before the crash are deleted now (restarted: after-processing delete)
    assert fake.store.folders["inbox"].items == ids[3:]
    assert "GetItem" not in fake.counts


def test_an_invalid_sync_state_resyncs_without_a_duplicate(
    fake: EWSFake,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ews_client, "SYNC_PAGE", 2)
    seed(fake, 4)
    h = harness
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    for item in items[:2]:
        h.stored.add(item.source_key)  # committed, not yet deleted
    assert items[1].cursor  # the end of the first page
    fake.invalid_sync_state = True
    with caplog.at_level(logging.WARNING):
        again = h.settle(h.source.list_new(Cursor(h.source.name, items[1].cursor)))
    assert [i.source_key for i in again] == [i.source_key for i in items[2:]]
    assert "no longer knows the sync state" in caplog.text


def test_server_busy_waits_the_back_off_hint_on_the_clock(fake: EWSFake, harness: Harness) -> None:
    seed(fake, 2)
    h = harness
    h.settle(h.source.connect())
    fake.busy = 2
    fake.busy_back_off_ms = 5000
    listing = h.source.list_new(None)
    assert not listing.called
    h.clock.advance(4.9)
    assert not listing.called and fake.counts["SyncFolderItems"] == 1
    h.clock.advance(0.1)
    assert not listing.called and fake.counts["SyncFolderItems"] == 2
    h.clock.advance(5)
    assert len(h.settle(listing)) == 2
    assert fake.counts["SyncFolderItems"] == 3


def test_server_busy_for_too_long_is_a_source_error(fake: EWSFake, harness: Harness) -> None:
    h = harness
    h.settle(h.source.connect())
    fake.busy = 100
    fake.busy_back_off_ms = 1000
    with pytest.raises(SourceError, match="busy"):
        h.settle(h.source.list_new(None), advance=1)


def test_an_item_deleted_between_listing_and_fetching_is_skipped(
    fake: EWSFake, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ids = seed(fake, 2)
    h = harness
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    fake.vanish.add(ids[0])
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError, match="no longer in"):
        h.settle(h.source.fetch(items[0]))
    assert "deleted from inbox after it was listed" in caplog.text
    assert process(h, items[1:]) == [message(1)]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("ErrorAccessDenied", SourceError),  # about this item: it counts a failure
        ("ErrorCorruptData", SourceError),
        ("ErrorMailboxStoreUnavailable", ConnectionDown),  # the server, now: back off
        ("ErrorTimeoutExpired", ConnectionDown),
    ],
)
def test_a_response_code_fails_the_call_or_the_connection_by_its_meaning(
    fake: EWSFake, harness: Harness, code: str, error: type[Exception]
) -> None:
    """exchangelib makes every ResponseCode a TransportError; only the codes of
    a server that cannot serve now may take the connection down (a refusal
    about one item must count against that item, or it would be retried as a
    connection failure forever)."""
    ids = seed(fake, 2)
    h = harness
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    fake.item_errors[ids[0]] = code
    with pytest.raises(error, match=code) as raised:
        h.settle(h.source.fetch(items[0]))
    if error is SourceError:
        assert not isinstance(raised.value, ConnectionDown)
    assert process(h, items[1:]) == [message(1)]


def test_a_wrong_password_is_an_authentication_failure(fake: EWSFake, harness: Harness) -> None:
    harness.auth.creds = harness.auth.creds.__class__(fake.user, "wrong", "PLAIN")
    with pytest.raises(AuthenticationFailed, match="login refused"):
        harness.settle(harness.source.connect())
    assert harness.auth.invalidated == 1
    assert fake.counts["401"] == 1


def test_an_expired_token_is_refreshed_by_the_auth_driver_and_tried_again(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.tokens = {"fresh-token"}
    h = Harness(fake, tmp_path / "spool")
    h.auth = FakeAuthenticator(fake.user, "expired-token", "BEARER", refreshed=("fresh-token",))
    h.context = attrs.evolve(h.context, authenticator=h.auth)
    h.source = EWSSource(h.source.mailbox, h.context)
    seed(fake, 1)
    h.settle(h.source.connect())
    assert h.auth.invalidated == 1
    assert fake.counts["401"] == 1
    assert process(h, h.settle(h.source.list_new(None))) == [message(0)]


def test_impersonation_acts_as_the_smtp_address(fake: EWSFake, tmp_path: Path) -> None:
    fake.mailboxes.add("support@example.com")
    fake.impersonation_rights.add("support@example.com")
    h = Harness(fake, tmp_path / "spool", impersonation=True, smtp_address="support@example.com")
    h.settle(h.source.connect())
    assert fake.impersonated and set(fake.impersonated) == {"support@example.com"}
    assert h.auth.creds.username == fake.user  # the service account logs in


def test_an_unknown_ca_is_refused(fake: EWSFake, tmp_path: Path) -> None:
    from tests.pki import make_tls_files

    other = make_tls_files(tmp_path / "other", ca_common_name="another CA")
    h = Harness(fake, tmp_path / "spool", ca_file=str(other.ca_file))
    with pytest.raises(SourceError):
        h.settle(h.source.connect())
    assert fake.counts == {}


def test_the_site_proxy_becomes_a_requests_proxy_url() -> None:
    from postroom.net.proxy import ProxySettings
    from postroom_ews.source import _proxy_url

    socks = ProxySettings(kind="socks5", host="proxy.test", port=1080, resolve_at_proxy=True)
    assert _proxy_url(socks) == "socks5h://proxy.test:1080"
    local = ProxySettings(kind="socks5", host="proxy.test", port=1080, resolve_at_proxy=False)
    assert _proxy_url(local) == "socks5://proxy.test:1080"
    http = ProxySettings(kind="http", host="proxy.test", port=3128, user="u@x", password="p:w")
    assert _proxy_url(http) == "http://u%40x:p%3Aw@proxy.test:3128"
    assert _proxy_url(None) is None


def test_a_token_expiring_mid_run_is_refreshed_and_the_call_tried_again(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.tokens = {"token-1"}
    h = Harness(fake, tmp_path / "spool", after_processing="move", move_to_folder="Processed")
    fake.store.add_folder(None, fake.store.folders["msgfolderroot"].id, "Processed")
    h.auth = FakeAuthenticator(fake.user, "token-1", "BEARER", refreshed=("token-2",))
    h.context = attrs.evolve(h.context, authenticator=h.auth)
    h.source = EWSSource(h.source.mailbox, h.context)
    seed(fake, 2)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    fake.tokens = {"token-2"}  # token-1 expired
    assert process(h, items) == [message(0), message(1)]
    h.settle(h.source.disconnect())
    assert h.auth.invalidated == 1
    assert fake.counts["401"] == 1
    assert fake.store.folders["inbox"].items == []


def test_a_password_changed_mid_run_is_an_authentication_failure(
    fake: EWSFake, harness: Harness
) -> None:
    seed(fake, 1)
    h = harness
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    fake.password = "changed"
    with pytest.raises(AuthenticationFailed):
        h.settle(h.source.fetch(items[0]))
    assert h.auth.invalidated >= 1


def test_a_connection_cut_mid_download_is_connection_down_then_fetched_again(
    fake: EWSFake, harness: Harness
) -> None:
    from postroom.errors import ConnectionDown

    big = message(7, size=3 * 1024 * 1024)
    fake.store.add(big)
    h = harness
    h.settle(h.source.connect())
    [item] = h.settle(h.source.list_new(None))
    fake.cut["GetItem"] = 1
    with pytest.raises(ConnectionDown):
        h.settle(h.source.fetch(item))
    assert list(Path(h.context.spool_dir).iterdir()) == []  # nothing half-written left
    fetched = h.settle(h.source.fetch(item))
    assert Path(fetched.raw.path).read_bytes() == big
    assert fetched.raw.size == len(big) == item.size


def test_a_50_mb_message_is_stored_byte_for_byte(fake: EWSFake, harness: Harness) -> None:
    big = message(8, size=50 * 1024 * 1024)
    fake.store.add(big)
    h = harness
    h.settle(h.source.connect())
    [item] = h.settle(h.source.list_new(None))
    assert item.size == len(big)
    fetched = h.settle(h.source.fetch(item))
    assert fetched.raw.size == len(big)
    assert Path(fetched.raw.path).read_bytes() == big


class SlowSyncPages:
    """The inline runner, with each SyncFolderItems page answered *delay*
    seconds later on the test's clock (a large folder over a slow link)."""

    def __init__(self, clock: Any, delay: float) -> None:
        self.runner = InlineRunner()
        self.clock = clock
        self.delay = delay

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        answer = self.runner.run(fn, *args)
        if getattr(fn, "__name__", "") != "sync_page":
            return answer
        later: defer.Deferred[Any] = defer.Deferred()
        answer.addBoth(lambda result: self.clock.callLater(self.delay, later.callback, result))
        return later


def listing_slowly(h: Harness, count: int, delay: float) -> tuple[list[str], Any]:
    """*count* messages listed in pages of 10 (SYNC_PAGE patched), each page
    *delay* seconds long: (their ids, the listing's Deferred)."""
    ids = seed(h.fake, count)
    h.settle(h.source.connect())
    h.source.context = attrs.evolve(h.context, runner=SlowSyncPages(h.clock, delay))
    return ids, h.source.list_new(None)


def test_a_long_paged_listing_shows_progress(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ews_client, "SYNC_PAGE", 10)
    caplog.set_level(logging.INFO, "postroom.progress")
    h = harness
    ids, listing = listing_slowly(h, 25, 4)
    for _ in range(3):  # pages of 10, 10 and 5
        assert not listing.called
        h.clock.advance(4)
    assert [i.source_key for i in h.settle(listing)] == ids
    assert [r.getMessage() for r in caplog.records] == [
        "mailbox support: listing… 10 message(s) so far (1.2 msg/s)",
        "mailbox support: listing… 20 message(s) so far (1.7 msg/s)",
        "mailbox support: listed 25 message(s) in 12 s",
    ]
    assert not h.clock.getDelayedCalls()


def test_a_quick_listing_shows_no_progress(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ews_client, "SYNC_PAGE", 10)
    caplog.set_level(logging.INFO, "postroom.progress")
    h = harness
    _, listing = listing_slowly(h, 15, 2)
    h.clock.advance(2)
    h.clock.advance(2)
    assert len(h.settle(listing)) == 15
    assert caplog.records == []


def test_a_message_released_from_quarantine_is_listed_again(
    fake: EWSFake, harness: Harness
) -> None:
    [stuck] = seed(fake, 1)  # its download kept failing
    h = harness
    h.settle(h.source.connect())
    cursor = Cursor(h.source.name, h.settle(h.source.list_new(None))[-1].cursor)
    assert h.settle(h.source.list_new(cursor)) == []  # the sync state has passed it
    h.source.quarantine_released({stuck})  # the kernel: released by `quarantine replay`
    assert [i.source_key for i in h.settle(h.source.list_new(cursor))] == [stuck]
