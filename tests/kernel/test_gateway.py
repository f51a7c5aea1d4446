"""The gateway end to end on the embedded defaults, with task.Clock and an inline runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock

from postroom import hookimpl
from postroom.kernel import Kernel
from postroom.model import Interaction, OutboundRequest
from postroom.runner import InlineRunner
from postroom.services.gateway import Gateway
from tests.conftest import run


def make_kernel(config: Path, plugins: list[tuple[str, object]] = (), **kw: Any) -> Kernel:
    """A kernel on a fake reactor (the HTTP API "listens" in memory), a fake clock
    and an inline runner."""
    return Kernel(
        config,
        reactor=kw.pop("reactor", None) or MemoryReactorClock(),
        clock=kw.pop("clock", task.Clock()),
        runner=InlineRunner(),
        plugins=plugins,
        enabled_plugins=kw.pop("enabled", []),
        **kw,
    )


def once(kernel: Kernel) -> tuple[bool, Gateway]:
    gateway = Gateway(kernel, once=True)
    gateway.startService()
    try:
        ok = run(gateway.run_once())
    finally:
        run(gateway.stopService())
    return ok, gateway


def all_interactions(config: Path) -> list[Interaction]:
    kernel = make_kernel(config)
    run(kernel.open())
    found = run(kernel.store.list_interactions(1000))
    run(kernel.close())
    return list(reversed(found))


def test_quickstart_once_creates_the_expected_interactions(quickstart: Path) -> None:
    ok, gateway = once(make_kernel(quickstart))
    assert ok
    found = all_interactions(quickstart)
    assert len(found) == 4
    by_subject = {i.subject: i for i in found}
    original = by_subject["Prüfbericht für Auftrag 4711"]
    reply = by_subject["Re: Prüfbericht für Auftrag 4711"]
    assert original.attached_data["_AttachmentFileNames"] == "Prüfbericht März.pdf"
    assert original.from_addr == "juergen.mueller@customer.example"
    assert original.message_id == "<4711-report@customer.example>"
    assert reply.parent_id == original.id
    wrapped = [i for i in found if "_WrappingMessageReason" in i.attached_data]
    assert len(wrapped) == 2
    oversized = by_subject["Scanned contract (large)"]
    assert "maximum-msg-size" in oversized.attached_data["_WrappingMessageReason"]
    assert oversized.text.startswith("Error encountered during preprocessing of this message")
    garbage = next(i for i in wrapped if i is not oversized)
    assert garbage.from_addr == "unknown@example.com"
    # every message was moved to cur/ after the commit, none left in new/
    maildir = quickstart.parent / "maildir"
    assert os.listdir(maildir / "new") == []
    assert len([n for n in os.listdir(maildir / "cur") if not n.startswith(".")]) == 4
    # the hand-off (no routing plugin: nothing to call) is done for each
    assert gateway.mailboxes[0].health.ingested == 4


def test_raw_bytes_are_kept_exactly(quickstart: Path, tmp_path: Path) -> None:
    originals = {p.name: p.read_bytes() for p in (quickstart.parent / "maildir" / "new").iterdir()}
    once(make_kernel(quickstart))
    kernel = make_kernel(quickstart)
    run(kernel.open())
    stored = []
    for interaction in run(kernel.store.list_interactions(100)):
        out = tmp_path / f"{interaction.id}.eml"
        with open(out, "wb") as fh:
            run(kernel.store.read_raw(interaction.id, fh))
        stored.append(out.read_bytes())
    run(kernel.close())
    assert sorted(stored) == sorted(originals.values())


def test_second_run_after_crash_before_acknowledge_makes_no_duplicates(quickstart: Path) -> None:
    """A crash between commit and acknowledge: the message is fetched again and recognised."""
    from postroom.drivers.maildir import MaildirSource

    original_ack = MaildirSource.acknowledge
    MaildirSource.acknowledge = lambda self, message: fail(RuntimeError("crash"))  # type: ignore
    try:
        once(make_kernel(quickstart))
    finally:
        MaildirSource.acknowledge = original_ack  # type: ignore[method-assign]
    maildir = quickstart.parent / "maildir"
    assert len(os.listdir(maildir / "new")) == 4  # nothing acknowledged
    # the failed acknowledgement ended that pass after the first commit
    assert len(all_interactions(quickstart)) == 1
    ok, gateway = once(make_kernel(quickstart))
    assert ok
    assert gateway.mailboxes[0].health.duplicates == 1
    assert gateway.mailboxes[0].health.ingested == 3
    assert len(all_interactions(quickstart)) == 4
    assert os.listdir(maildir / "new") == []


class FlakyRouting:
    """Fails the first *failures* hand-offs, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    @hookimpl
    def postroom_submit(self, interaction: Interaction) -> None:
        self.calls.append(interaction.id)
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("routing is down")


def test_submit_is_retried_with_backoff_until_it_succeeds(quickstart: Path) -> None:
    clock = task.Clock()
    routing = FlakyRouting(failures=6)
    kernel = make_kernel(quickstart, plugins=[("routing", routing)], clock=clock)
    gateway = Gateway(kernel, once=False)
    gateway.startService()
    # the first pass ran at start; every hand-off failed once or more
    assert len(set(routing.calls)) == 4
    statuses = [run(kernel.store.handoff_status(i)) for i in set(routing.calls)]
    assert any(s[0] == "failed" for s in statuses)
    clock.advance(3600)  # the back-off timers fire; routing works again
    for _ in range(10):
        clock.advance(600)
    statuses = [run(kernel.store.handoff_status(i)) for i in set(routing.calls)]
    assert [s[0] for s in statuses] == ["done"] * 4
    assert sum(s[1] for s in statuses) == 4 + 6  # attempts counted
    run(gateway.stopService())


def test_poisonous_message_is_quarantined_and_mailbox_moves_on(quickstart: Path) -> None:
    class Poison:
        @hookimpl
        def postroom_expand(self, interaction: Interaction) -> None:
            if "large" in interaction.subject:
                raise ValueError("boom")

    for _attempt in range(1, 6):
        ok, _gateway = once(make_kernel(quickstart, plugins=[("poison", Poison())]))
        assert not ok
    kernel = make_kernel(quickstart)
    run(kernel.open())
    entries = run(kernel.store.list_quarantine())
    assert len(entries) == 1 and entries[0].attempts == 5
    assert "boom" in entries[0].reason
    run(kernel.close())
    maildir = quickstart.parent / "maildir"
    assert os.listdir(maildir / "new") == []  # acknowledged once quarantined
    assert len(all_interactions(quickstart)) == 3
    # replay without the poison: it becomes an interaction
    from postroom.ingest import replay_quarantined

    kernel = make_kernel(quickstart)
    run(kernel.open())
    replayed = run(replay_quarantined(kernel, entries[0].id))
    assert [i.subject for i in replayed] == ["Scanned contract (large)"]
    assert run(kernel.store.list_quarantine()) == []
    run(kernel.close())


def test_broken_mailbox_does_not_stop_the_others(quickstart: Path) -> None:
    text = quickstart.read_text().replace(
        "pop-client:\n",
        "pop-client:\n  - name: broken\n    type: maildir\n    folder-path: /dev/null/nowhere\n",
    )
    quickstart.write_text(text)
    ok, gateway = once(make_kernel(quickstart))
    assert not ok
    health = gateway.health()
    assert health["broken"]["connected"] is False and health["broken"]["last_error"]
    assert health["support"]["ingested"] == 4


def test_mailbox_reconnects_with_backoff(quickstart: Path) -> None:
    clock = task.Clock()
    folder = quickstart.parent / "later"
    text = quickstart.read_text().replace("folder-path: maildir", f"folder-path: {folder}/x")
    quickstart.write_text(text)
    folder.write_text("a file where a folder should be")
    kernel = make_kernel(quickstart, clock=clock)
    gateway = Gateway(kernel)
    gateway.startService()
    mailbox = gateway.mailboxes[0]
    assert mailbox.health.connected is False
    assert mailbox.health.consecutive_failures == 1
    folder.unlink()
    clock.advance(2)  # first back-off is about a second (jitter)
    assert mailbox.health.connected is True
    run(gateway.stopService())


def test_outbound_send_is_queued_then_written_by_the_file_sender(quickstart: Path) -> None:
    clock = task.Clock()
    kernel = make_kernel(quickstart, clock=clock)
    gateway = Gateway(kernel)
    gateway.startService()
    interaction = run(
        gateway.send(
            OutboundRequest(
                to=["juergen.mueller@customer.example"], subject="Ihr Prüfbericht", text="Danke!"
            )
        )
    )
    assert interaction.message_id.startswith("<") and interaction.message_id.endswith(">")
    stored = run(kernel.store.get_interaction(interaction.id))
    assert stored.status == "Sent"
    outbox = quickstart.parent / "outbox"
    files = sorted(p.name for p in outbox.iterdir())
    assert len(files) == 2  # .eml + .envelope.json
    eml = next(p for p in outbox.iterdir() if p.suffix == ".eml").read_bytes()
    assert interaction.message_id.encode() in eml
    assert b"\r\n" in eml
    run(gateway.stopService())


def test_header_injection_is_refused(quickstart: Path) -> None:
    from postroom.sendrequest import RequestError

    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel)
    gateway.startService()
    with pytest.raises(RequestError, match="control character") as refused:
        run(gateway.send(OutboundRequest(to=["a@example.com"], headers={"X-A": "b\r\nBcc: x"})))
    assert refused.value.field == "headers"
    assert sum(run(kernel.store.outbox_counts()).values()) == 0
    run(gateway.stopService())


def test_stop_while_waiting_for_new_mail_is_clean(quickstart: Path) -> None:
    clock = task.Clock()
    kernel = make_kernel(quickstart, clock=clock)
    gateway = Gateway(kernel)
    gateway.startService()
    d: Deferred[None] = gateway.stopService()
    run(d)
    assert not clock.getDelayedCalls()


def test_forbidden_headers_never_leave_and_own_headers_cannot_be_set(quickstart: Path) -> None:
    from postroom.sendrequest import RequestError

    class AddsHeaders:
        @hookimpl
        def postroom_envelope(self, envelope: Any) -> None:
            envelope.extra_headers["Received"] = "from somewhere"
            envelope.extra_headers["X-Campaign"] = "spring"

    kernel = make_kernel(quickstart, plugins=[("adds", AddsHeaders())])
    gateway = Gateway(kernel)
    gateway.startService()
    request = OutboundRequest(to=["a@example.com"], bcc=["boss@example.com"], text="x")
    interaction = run(gateway.send(request))
    eml = next((quickstart.parent / "outbox").glob("*.eml")).read_bytes()
    assert b"X-Campaign: spring" in eml
    assert b"Received:" not in eml and b"Bcc:" not in eml
    envelope = next((quickstart.parent / "outbox").glob("*.envelope.json")).read_text()
    assert "boss@example.com" in envelope  # still a recipient, just not a header
    assert run(kernel.store.get_interaction(interaction.id)).status == "Sent"
    # a request can set neither a forbidden header nor one postroom writes
    for name, why in (("Bcc", "use the bcc field"), ("Message-ID", "written by postroom")):
        with pytest.raises(RequestError, match=why):
            run(gateway.send(OutboundRequest(to=["a@example.com"], headers={name: "<x@y>"})))
    assert {k: v for k, v in run(kernel.store.outbox_counts()).items() if v} == {"sent": 1}
    run(gateway.stopService())


def test_site_list_replaces_the_builtin_forbidden_headers(quickstart: Path) -> None:
    """The site's list decides what is dropped from the plugins' headers; a request
    can set neither the site's forbidden headers nor the built-in ones."""
    from postroom.sendrequest import RequestError

    class AddsHeaders:
        @hookimpl
        def postroom_envelope(self, envelope: Any) -> None:
            envelope.extra_headers["X-Internal"] = "1"
            envelope.extra_headers["Received"] = "kept now"

    (quickstart.parent / "forbidden.txt").write_text("# ours\nX-Internal\n")
    quickstart.write_text(
        quickstart.read_text().replace(
            "  folder-path: outbox",
            "  folder-path: outbox\n  forbidden-headers-file: forbidden.txt",
        )
    )
    kernel = make_kernel(quickstart, plugins=[("adds", AddsHeaders())])
    gateway = Gateway(kernel)
    gateway.startService()
    run(gateway.send(OutboundRequest(to=["a@example.com"], text="x")))
    eml = next((quickstart.parent / "outbox").glob("*.eml")).read_bytes()
    assert b"X-Internal" not in eml and b"Received: kept now" in eml
    for name in ("X-Internal", "x-internal ", "Received"):
        with pytest.raises(RequestError, match="never sent"):
            run(gateway.send(OutboundRequest(to=["a@example.com"], headers={name: "1"})))
    run(gateway.stopService())


def test_permanent_error_from_a_render_plugin_is_not_retried(quickstart: Path) -> None:
    from postroom.errors import SendError

    class BadTemplate:
        calls = 0

        @hookimpl
        def postroom_render(self) -> None:
            BadTemplate.calls += 1
            raise SendError("template 42 does not exist", permanent=True)

    clock = task.Clock()
    kernel = make_kernel(quickstart, plugins=[("bad", BadTemplate())], clock=clock)
    gateway = Gateway(kernel)
    gateway.startService()
    interaction = run(gateway.send(OutboundRequest(to=["a@example.com"], text="x")))
    clock.advance(7200)
    stored = run(kernel.store.get_interaction(interaction.id))
    assert stored.status == "Failed" and BadTemplate.calls == 1
    assert "template 42 does not exist" in stored.attached_data["_SendError"]
    run(gateway.stopService())


def test_message_that_cannot_be_fetched_is_quarantined_then_released(quickstart: Path) -> None:
    from postroom.drivers.maildir import MaildirSource
    from postroom.ingest import replay_quarantined

    original = MaildirSource.fetch

    def failing(self: MaildirSource, item: Any) -> Deferred[Any]:
        if item.source_key.startswith("1762092000"):
            return fail(OSError("line too long"))
        return original(self, item)

    MaildirSource.fetch = failing  # type: ignore[method-assign]
    try:
        for _ in range(6):  # five failures quarantine it; the sixth pass skips it
            once(make_kernel(quickstart))
    finally:
        MaildirSource.fetch = original  # type: ignore[method-assign]
    kernel = make_kernel(quickstart)
    run(kernel.open())
    [entry] = run(kernel.store.list_quarantine())
    assert entry.attempts == 5 and entry.raw_sha256 is None and "line too long" in entry.reason
    assert run(replay_quarantined(kernel, entry.id)) == []  # released, nothing to replay
    run(kernel.close())
    assert len(all_interactions(quickstart)) == 3
    ok, _ = once(make_kernel(quickstart))  # fetched again now
    assert ok and len(all_interactions(quickstart)) == 4


def test_connection_down_counts_one_failure_and_abandons_the_pass(quickstart: Path) -> None:
    from postroom.drivers.maildir import MaildirSource
    from postroom.errors import ConnectionDown

    original = MaildirSource.fetch
    calls: list[str] = []

    def broken(self: MaildirSource, item: Any) -> Deferred[Any]:
        calls.append(item.source_key)
        if item.source_key.startswith("1762080000"):  # the second message
            return fail(ConnectionDown("connection lost"))
        return original(self, item)

    MaildirSource.fetch = broken  # type: ignore[method-assign]
    try:
        ok, gateway = once(make_kernel(quickstart))
    finally:
        MaildirSource.fetch = original  # type: ignore[method-assign]
    assert not ok
    health = gateway.mailboxes[0].health
    assert health.failed == 1 and health.connected is False
    assert "pass abandoned" in health.last_error
    kernel = make_kernel(quickstart)
    run(kernel.open())
    failures = [run(kernel.store.record_failure("support", key, "probe")) for key in calls]
    run(kernel.close())
    # only the message whose fetch broke the link has a failure on record
    assert [n for n, key in zip(failures, calls, strict=True) if n > 1] == [2]
    ok, _ = once(make_kernel(quickstart))
    assert ok and len(all_interactions(quickstart)) == 4


def test_cursor_does_not_move_past_a_failed_message(quickstart: Path) -> None:
    from postroom.drivers import SourceItem
    from postroom.drivers.maildir import MaildirSource

    original_list = MaildirSource.list_new

    def with_cursors(self: MaildirSource, cursor: Any) -> Deferred[Any]:
        d = original_list(self, cursor)
        return d.addCallback(
            lambda items: [
                SourceItem(i.source_key, i.size, cursor=f"c{n}") for n, i in enumerate(items, 1)
            ]
        )

    class Poison:
        @hookimpl
        def postroom_expand(self, interaction: Interaction) -> None:
            if interaction.subject.startswith("Re:"):
                raise ValueError("boom")

    MaildirSource.list_new = with_cursors  # type: ignore[method-assign]
    try:
        once(make_kernel(quickstart, plugins=[("poison", Poison())]))
        kernel = make_kernel(quickstart)
        run(kernel.open())
        cursor = run(kernel.store.get_cursor("support"))
        run(kernel.close())
    finally:
        MaildirSource.list_new = original_list  # type: ignore[method-assign]
    # message 1 committed with cursor c1; message 2 failed; 3 and 4 committed
    # without moving the cursor past the failure
    assert cursor is not None and cursor.value == "c1"


def test_a_mailbox_that_hangs_never_holds_up_the_others(quickstart: Path) -> None:
    """Mailboxes are separate services: dozens run side by side, never in turn."""
    from postroom.drivers.maildir import MaildirSource

    boxes = "".join(
        f"  - name: box{n}\n    type: maildir\n    folder-path: box{n}\n" for n in range(24)
    )
    quickstart.write_text(quickstart.read_text().replace("pop-client:\n", "pop-client:\n" + boxes))
    for n in range(24):
        new = quickstart.parent / f"box{n}" / "new"
        new.mkdir(parents=True)
        (new / f"17620{n:05d}.M1P1.x").write_bytes(
            f"From: c{n}@example.org\r\nSubject: box {n}\r\n"
            f"Message-ID: <b{n}@x>\r\n\r\nhi\r\n".encode()
        )
    hung: Deferred[None] = Deferred()
    original = MaildirSource.connect

    def connect(self: MaildirSource) -> Deferred[None]:
        return hung if self.mailbox.name == "support" else original(self)

    MaildirSource.connect = connect  # type: ignore[method-assign]
    try:
        kernel = make_kernel(quickstart)
        gateway = Gateway(kernel, once=True)
        gateway.startService()
        health = gateway.health()
        assert [health[f"box{n}"]["ingested"] for n in range(24)] == [1] * 24
        assert health["support"]["ingested"] == 0  # still connecting
        hung.callback(None)  # the slow server answers at last
        assert run(gateway.run_once())
        assert gateway.health()["support"]["ingested"] == 4
        run(gateway.stopService())
    finally:
        MaildirSource.connect = original  # type: ignore[method-assign]


def test_automatic_mail_skips_suppressed_addresses_and_agents_mail_does_not(
    quickstart: Path,
) -> None:
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel)
    gateway.startService()
    run(kernel.store.suppress("Gone@Customer.example", "5.1.1 user unknown"))
    outbox = quickstart.parent / "outbox"

    # an automatic acknowledgement still reaches the customer; the bounced CC is left out
    auto = run(
        gateway.send(
            OutboundRequest(
                to=["anna@customer.example"], cc=["gone@customer.example"], text="ack",
                automatic=True,
            )
        )
    )  # fmt: skip
    stored = run(kernel.store.get_interaction(auto.id))
    assert stored.status == "Sent" and stored.attached_data["_Automatic"] is True
    [envelope] = [p.read_text() for p in outbox.glob("*.envelope.json")]
    assert "anna@customer.example" in envelope and "gone@customer.example" not in envelope
    eml = next(outbox.glob("*.eml")).read_bytes()
    assert b"Auto-Submitted: auto-replied" in eml

    # with every recipient suppressed it fails for good, saying why
    refused = run(
        gateway.send(OutboundRequest(to=["GONE@customer.example"], text="ack", automatic=True))
    )
    stored = run(kernel.store.get_interaction(refused.id))
    assert stored.status == "Failed"
    assert "suppressed address(es) GONE@customer.example" in stored.attached_data["_SendError"]
    assert "postroom suppression clear" in stored.attached_data["_SendError"]

    # an agent's own mail is not automatic: it goes
    manual = run(gateway.send(OutboundRequest(to=["gone@customer.example"], text="Dear ...")))
    stored = run(kernel.store.get_interaction(manual.id))
    assert stored.status == "Sent" and "_Automatic" not in stored.attached_data
    run(gateway.stopService())
