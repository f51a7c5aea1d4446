"""The gateway with the graph source: ``postroom run --once`` and
``check --connect`` as subprocesses (the real reactor, the kernel's
HTTPClient, TLS) against the Graph fake, with app-only tokens from the test
identity provider (azure-client-credentials, scope Graph's ``.default``);
the fake accepts a token only when the IdP's introspection says it is active
and for Graph."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.graph import GraphFake
from tests.integration.oauth import OAuthServers
from tests.integration.sites import Site, explain

USER = "alice@contoso.test"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: the issue's size (about 33 s on a busy machine); ``POSTROOM_GRAPH_IMPORT``
#: lowers it for a quicker run
COUNT = int(os.environ.get("POSTROOM_GRAPH_IMPORT") or 2000)


def graph_site(tmp_path: Path, servers: OAuthServers, graph: GraphFake, **extra: Any) -> Site:
    site = Site(tmp_path, servers)
    site.sections["email-processing"] = {"default-domain": "contoso.test"}
    site.sections["secret-daemon"] = {"password": servers.world["daemon_secret"]}
    world = servers.world
    entry = {
        "name": "graph", "type": "graph", "server": graph.url, "ca-file": graph.ca_file,
        "mailbox": USER, "folder-path": "Inbox/Support", "after-processing": "move",
        "move-to-folder": "Inbox/Done", "auth": "azure-client-credentials",
        "token-ca-file": servers.idp_ca_file, "directory-id": world["tenant"],
        "client-id": world["daemon_app"], "tenant-authority": servers.idp_url + "/",
        "secret": "daemon", "scope": GRAPH_SCOPE,
    }  # fmt: skip
    entry.update(extra)
    site.mailboxes.append(entry)
    return site


def message(n: int) -> bytes:
    return (
        f"Message-ID: <graph-{n}@example.test>\r\nFrom: customer{n}@example.test\r\n"
        f"To: {USER}\r\nSubject: graph {n}\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
        f"\r\nbody {n}\r\n"
    ).encode()


def test_run_once_imports_a_folder_exactly_once(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    graph = live_graph
    ids = [graph.add_message(USER, "Inbox/Support", message(n)) for n in range(COUNT)]
    graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, graph)
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    rows = site.rows()
    assert sorted(r["subject"] for r in rows) == sorted(f"graph {n}" for n in range(COUNT))
    assert graph.messages_in(USER, "Inbox/Support") == []
    assert sorted(m.id for m in graph.messages_in(USER, "Inbox/Done")) == sorted(ids)
    # stored byte for byte
    first = next(r for r in rows if r["subject"] == "graph 7")
    assert site.raw(first["id"]) == message(7)
    # a second run, after more mail and an expired delta link, imports only the new
    more = [graph.add_message(USER, "Inbox/Support", message(COUNT + n)) for n in range(5)]
    graph.expire_deltas()
    again = site.run_once()
    assert again.returncode == 0, explain(again)
    assert site.count() == COUNT + 5
    # a new connection lists the folder whole: the expired link is not even used
    assert graph.counts["gone"] == 0
    assert {m.id for m in graph.messages_in(USER, "Inbox/Done")} == set(ids + more)
    assert graph.counts["refused"] == 0


def test_a_released_quarantined_message_is_imported_once_by_the_next_run(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    """A message whose download keeps failing is quarantined without bytes and
    left on the server; the delta link passes it. Released, it is imported by
    the next run (which lists the folder whole), once."""
    graph = live_graph
    ids = [graph.add_message(USER, "Inbox/Support", message(n)) for n in range(4)]
    graph.folder(USER, "Inbox/Done")
    broken = ids[1]
    graph.cut_downloads_of(broken, 2)
    site = graph_site(tmp_path, oauth_servers, graph)
    site.sections["gateway"] = {"max-attempts": 2}
    for _ in range(2):  # each cut download ends the run's pass: two attempts
        assert site.run_once().returncode == 1
    [entry] = site.quarantine()
    assert broken in entry and "held" in entry
    done = site.run_once()  # the quarantined message is skipped, the rest imported
    assert done.returncode == 0, explain(done)
    assert sorted(r["subject"] for r in site.rows()) == ["graph 0", "graph 2", "graph 3"]
    assert [m.id for m in graph.messages_in(USER, "Inbox/Support")] == [broken]
    # a later message moves the stored delta link past the quarantined one
    ids.append(graph.add_message(USER, "Inbox/Support", message(4)))
    assert site.run_once().returncode == 0
    replay = site.cli("quarantine", "replay", entry.split()[0])
    assert replay.returncode == 0, explain(replay)
    assert "released" in replay.stdout
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert sorted(r["subject"] for r in site.rows()) == [f"graph {n}" for n in range(5)]
    assert graph.messages_in(USER, "Inbox/Support") == []
    assert sorted(m.id for m in graph.messages_in(USER, "Inbox/Done")) == sorted(ids)
    assert site.run_once().returncode == 0
    assert site.count() == 5
    assert graph.counts["cut"] == 2


def test_the_first_import_of_a_large_folder_shows_listing_and_import_progress(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    graph = live_graph
    for n in range(500):
        graph.add_message(USER, "Inbox/Support", message(n))
    graph.folder(USER, "Inbox/Done")
    graph.throttle_pages(2, retry_after=3)  # a slow listing: 6 s after the first page
    site = graph_site(tmp_path, oauth_servers, graph)
    done = site.run_once("-v")  # progress is logged at info (not a terminal here)
    assert done.returncode == 0, explain(done)
    output = done.stdout + done.stderr
    assert "mailbox graph: listing… 100 message(s) so far" in output, output
    assert "mailbox graph: listed 500 message(s) in" in output, output
    assert "mailbox graph: 500 of 500 in" in output, output  # the import's
    assert site.count() == 500
    assert graph.counts["throttled"] == 2


def test_check_connect(oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path) -> None:
    live_graph.folder(USER, "Inbox/Support")
    live_graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, live_graph)
    site.write()
    done = site.cli("check", "--connect")
    assert done.returncode == 0, explain(done)
    assert "graph" in done.stdout and "delta" in done.stdout, done.stdout


def test_check_connect_names_a_missing_folder(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    live_graph.mailbox(USER)
    site = graph_site(tmp_path, oauth_servers, live_graph, **{"folder-path": "Inbox/Nowhere"})
    site.write()
    done = site.cli("check", "--connect")
    assert done.returncode == 1, explain(done)
    assert "no folder 'Nowhere'" in done.stdout + done.stderr


def test_check_connect_of_the_graph_sender(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    live_graph.folder(USER, "Inbox/Support")
    live_graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, live_graph)
    world = oauth_servers.world
    site.sections["smtp-client"] = {
        "server-type": "graph", "server": live_graph.url, "ca-file": live_graph.ca_file,
        "enable-authentication": True, "user": USER, "auth": "azure-client-credentials",
        "token-ca-file": oauth_servers.idp_ca_file, "directory-id": world["tenant"],
        "client-id": world["daemon_app"], "tenant-authority": oauth_servers.idp_url + "/",
        "secret": "daemon", "scope": GRAPH_SCOPE,
    }  # fmt: skip
    site.write()
    done = site.cli("check", "--connect")
    assert done.returncode == 0, explain(done)
    assert f"token accepted for {USER}" in done.stdout, done.stdout


def test_an_access_token_expiring_mid_run_is_replaced(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    graph = live_graph
    for n in range(60):
        graph.add_message(USER, "Inbox/Support", message(n))
    graph.folder(USER, "Inbox/Done")
    graph.expire_tokens_after(25)  # somewhere in the middle of the downloads
    site = graph_site(tmp_path, oauth_servers, graph)
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert graph.counts["expired"] == 1
    assert graph.counts["refused"] >= 1  # the old token was refused, then a fresh one used
    assert site.count() == 60
    assert graph.messages_in(USER, "Inbox/Support") == []
    assert site.quarantine() == []


def test_a_50_mb_message_is_streamed_and_stored_byte_for_byte(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=+-_!\r\n"
    big = message(1).rstrip(b"\r\n") + b"\r\n" + line * (50 * 1024 * 1024 // len(line))
    live_graph.add_message(USER, "Inbox/Support", big)
    live_graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, live_graph)
    site.sections["email-processing"]["maximum-msg-size"] = "60MB"
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    [row] = site.rows()
    assert site.raw(row["id"]) == big


def test_throttling_is_honoured_and_a_broken_mailbox_holds_up_no_other(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path
) -> None:
    graph = live_graph
    for n in range(30):
        graph.add_message(USER, "Inbox/Support", message(n))
    graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, graph)
    broken = dict(site.mailboxes[0], name="broken", **{"folder-path": "Inbox/Nowhere"})
    site.mailboxes.append(broken)
    graph.throttle(3, retry_after=1)
    done = site.run_once()
    assert graph.counts["throttled"] == 3
    assert site.count("graph") == 30, explain(done)
    assert site.count("broken") == 0
    assert graph.messages_in(USER, "Inbox/Support") == []
    assert "no folder 'Nowhere'" in done.stdout + done.stderr, explain(done)


@pytest.mark.parametrize("replaced", [False, True], ids=["kept", "replaced"])
def test_a_reply_to_a_sent_message_threads_to_its_outbound_interaction(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path, replaced: bool
) -> None:
    graph = live_graph
    # replaced: Exchange gives the message a Message-ID of its own; the
    # interaction must record that one, which the customer's reply quotes
    graph.rewrite_message_ids = replaced
    graph.folder(USER, "Inbox/Support")
    graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, graph)
    world = oauth_servers.world
    site.sections["smtp-client"] = {
        "server-type": "graph", "server": graph.url, "ca-file": graph.ca_file,
        "enable-authentication": True, "user": USER, "auth": "azure-client-credentials",
        "token-ca-file": oauth_servers.idp_ca_file, "directory-id": world["tenant"],
        "client-id": world["daemon_app"], "tenant-authority": oauth_servers.idp_url + "/",
        "secret": "daemon", "scope": GRAPH_SCOPE,
    }  # fmt: skip
    site.write()
    queued = site.cli("send", "--from", USER, "--to", "customer@example.test",
                      "--subject", "Your order 4711", "--text", "It has shipped.")  # fmt: skip
    assert queued.returncode == 0, explain(queued)
    sent = site.run_once()
    assert sent.returncode == 0, explain(sent)
    [outbound] = site.rows("type = 'Outbound'")
    assert outbound["status"] == "Sent", outbound
    sent_mid = outbound["message_id"]
    [mime] = graph.sent(USER)
    assert f"Message-ID: {sent_mid}".encode() in mime
    assert sent_mid.endswith("@exchange.fake>") is replaced
    reply = (f"Message-ID: <reply-1@example.test>\r\nFrom: customer@example.test\r\n"
             f"To: {USER}\r\nSubject: Re: Your order 4711\r\nIn-Reply-To: {sent_mid}\r\n"
             f"References: {sent_mid}\r\nDate: Sun, 06 Dec 2026 11:00:00 +0000\r\n"
             f"\r\nThanks!\r\n").encode()  # fmt: skip
    graph.add_message(USER, "Inbox/Support", reply)
    again = site.run_once()
    assert again.returncode == 0, explain(again)
    [inbound] = site.rows("type = 'Inbound'")
    assert inbound["message_id"] == "<reply-1@example.test>"
    assert inbound["parent_id"] == outbound["id"], inbound
