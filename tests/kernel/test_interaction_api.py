"""The interaction API agents work from (issue 13, item 2), over HTTP and the CLI.

Real mails from the shared corpus (an HTML-only mail, a multipart/alternative
one, a windows-1252 one, an ISO-8859-1 one) and a hostile HTML mail are read
back as an agent reads them: display names, Reply-To, Date, the text (from the
HTML when there is no text part), the HTML sanitised, files that download byte
for byte (checked against the email package's own decoding of the same part),
the raw message as received; ids by unique prefix, ambiguous ones refused.
"""

from __future__ import annotations

import email
import json
import os
import pty
import shutil
import subprocess
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest

from postroom.model import Interaction
from postroom.store.sqlite import SQLiteStore
from tests.conftest import CORPUS, run
from tests.kernel.test_cli import POSTROOM, SCHEMA, postroom
from tests.kernel.test_replies import ingest
from tests.kernel.test_web import TOKEN, Server, serving

EML = CORPUS / "stalwart" / "resources" / "eml"
HTML_ONLY = EML / "thirdparty" / "016.eml"  # multipart/related: HTML and an image
ALTERNATIVE = EML / "thirdparty" / "014.eml"  # text and HTML; names, Reply-To
CP1252 = EML / "thirdparty" / "019.eml"  # windows-1252 text and HTML, two files
LATIN1 = EML / "rfc" / "000.eml"  # RFC 2046's example: ISO-8859-1 part, names, 4 files

HOSTILE = (
    b"From: =?utf-8?q?M=C3=A9chant_Sender?= <evil@attacker.example>\r\n"
    b"To: Support Team <support@centre.example>, plain@centre.example\r\n"
    b'Cc: "Doe, Jane" <jane@centre.example>\r\n'
    b"Reply-To: Replies <replies@attacker.example>\r\n"
    b"Subject: click me\r\n"
    b"Date: Tue, 01 Dec 2026 09:30:00 +0100\r\n"
    b"Message-ID: <hostile-1@attacker.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<html><head><style>body{background:url(https://track.example/s.gif)}</style>"
    b"<script>alert('head')</script></head><body>"
    b'<p onclick="steal()">Hello <b>agent</b></p>'
    b'<img src="https://track.example/pixel.gif" alt="pixel" onerror="steal()">'
    b'<img src="cid:logo@attacker.example" alt="logo">'
    b'<a href="javascript:steal()">free money</a> '
    b'<a href="https://ok.example/help">help</a>'
    b'<script>document.cookie</script><iframe src="https://evil.example/"></iframe>'
    b'<form action="https://evil.example/"><input name="pw"></form>'
    b'<div style="position:fixed">styled</div>'
    b"</body></html>\r\n"
)


def part_at(raw: bytes, path: str) -> bytes:
    """The email package's decoding of the part at *path* ("2", "1.2": the
    parser's numbering, children from 1): an independent reading of the file."""
    part: Any = email.message_from_bytes(raw, policy=policy.default)
    for number in path.split(".") if path else []:
        part = part.get_payload()[int(number) - 1]
    data: bytes = part.get_payload(decode=True)
    return data


def check_clean(html: str) -> None:
    lowered = html.lower()
    for bad in ("<script", "onerror", "onclick", "javascript:", "<iframe", "<form", "<style",
                "style=", "track.example", "evil.example", "document.cookie"):  # fmt: skip
        assert bad not in lowered, (bad, html)


@pytest.fixture
def api(quickstart: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    with serving(caplog, quickstart) as server:
        yield server


def stored(server: Server, tmp_path: Path, raw: bytes, name: str) -> Interaction:
    return ingest(server.kernel, tmp_path, raw, name)


def download(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    return server.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})


def test_an_html_only_mail_reads_with_text_sanitised_html_and_its_image(
    api: Server, tmp_path: Path
) -> None:
    raw = HTML_ONLY.read_bytes()
    made = stored(api, tmp_path, raw, "html-only.eml")
    code, shown = api.get(f"/interactions/{made.id[:8]}")
    assert code == 200, shown
    jsonschema.validate(shown, SCHEMA)
    assert shown["id"] == made.id
    assert shown["text_from_html"] is True
    assert shown["text"] == "Search for höhö"
    assert "<tt>Search for höhö</tt>" in shown["html"]
    assert '<img src="cid:part1.8C5E6A81.D0C1B91A@example.com" alt="">' in shown["html"]
    assert "<meta" not in shown["html"] and "<head" not in shown["html"]
    assert shown["addresses"]["from"] == {"address": "test@example.com", "name": None}
    assert shown["date"] == "2017-12-30T19:26:23+01:00"
    [image] = shown["attachments"]
    assert image["index"] == 0 and image["content_type"] == "image/png"
    assert image["content_id"] == "<part1.8C5E6A81.D0C1B91A@example.com>"  # the HTML's cid:

    code, headers, body = download(api, f"/interactions/{made.id[:10]}/attachments/0")
    assert code == 200
    assert body == part_at(raw, made.attachments[0].part_path) and body.startswith(b"\x89PNG")
    assert headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == (
        "attachment; filename=\"kigaaldcbanejcbi.png\"; filename*=UTF-8''kigaaldcbanejcbi.png"
    )
    code, headers, body = download(api, f"/interactions/{made.id}/raw")
    assert code == 200 and body == raw
    assert headers["content-type"] == "message/rfc822"
    assert headers["content-length"] == str(len(raw))
    assert download(api, f"/interactions/{made.id}/attachments/1")[0] == 404
    assert download(api, f"/interactions/{made.id}/attachments/x")[0] == 404


def test_a_multipart_alternative_mail_shows_names_reply_to_and_its_text(
    api: Server, tmp_path: Path
) -> None:
    made = stored(api, tmp_path, ALTERNATIVE.read_bytes(), "alternative.eml")
    code, shown = api.get(f"/interactions/{made.id}")
    assert code == 200
    jsonschema.validate(shown, SCHEMA)
    assert shown["from"] == "calpas2007@yahoo.fr"  # the string fields stay as they were
    assert shown["addresses"]["from"] == {"address": "calpas2007@yahoo.fr", "name": "calpas calpas"}
    assert shown["reply_to"] == ["shapelib@lists.maptools.org"]
    assert shown["addresses"]["reply_to"] == [
        {"address": "shapelib@lists.maptools.org", "name": "Shapelib Development"}
    ]
    assert shown["date"] == "2011-03-09T11:19:45+00:00"
    assert shown["text_from_html"] is False
    assert "need some help" in shown["subject"]
    assert shown["text"] and shown["html"]
    check_clean(shown["html"])


@pytest.mark.parametrize("path", [CP1252, LATIN1], ids=["windows-1252", "iso-8859-1"])
def test_a_legacy_charset_mail_reads_decoded_with_its_files_byte_for_byte(
    api: Server, tmp_path: Path, path: Path
) -> None:
    raw = path.read_bytes()
    made = stored(api, tmp_path, raw, path.name)
    code, shown = api.get(f"/interactions/{made.id[:6]}")
    assert code == 200
    jsonschema.validate(shown, SCHEMA)
    if path == CP1252:
        assert shown["text"].startswith("Search for hähä")
        assert "Search for höhö" in shown["html"]
    else:
        assert shown["addresses"]["from"] == {
            "address": "nsb@nsb.fv.com",
            "name": "Nathaniel Borenstein",
        }
        assert shown["addresses"]["to"] == [{"address": "ned@innosoft.com", "name": "Ned Freed"}]
        assert shown["date"] == "1994-10-07T16:15:05-07:00"
    files = [a for a in shown["attachments"] if a["content_type"] != "message/rfc822"]
    assert files
    for listed in files:
        code, headers, body = download(
            api, f"/interactions/{made.id}/attachments/{listed['index']}"
        )
        assert code == 200
        assert body == part_at(raw, made.attachments[listed["index"]].part_path)
        assert len(body) == listed["size"] > 0
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-type"] == listed["content_type"]
    code, _, body = download(api, f"/interactions/{made.id}/raw")
    assert code == 200 and body == raw


def test_a_hostile_html_mail_is_cleaned_and_its_names_kept(api: Server, tmp_path: Path) -> None:
    made = stored(api, tmp_path, HOSTILE, "hostile.eml")
    code, shown = api.get(f"/interactions/{made.id}")
    assert code == 200
    jsonschema.validate(shown, SCHEMA)
    html = shown["html"]
    check_clean(html)
    assert '<a href="https://ok.example/help" rel="noopener noreferrer">help</a>' in html
    assert '<img alt="pixel">' in html  # the remote image is gone, its alt text stays
    assert '<img src="cid:logo@attacker.example" alt="logo">' in html
    assert "<p>Hello <b>agent</b></p>" in html
    assert "free money" in shown["text"] and "steal" not in shown["text"]
    assert "alert" not in shown["text"] and "background" not in shown["text"]
    assert shown["addresses"] == {
        "from": {"address": "evil@attacker.example", "name": "Méchant Sender"},
        "to": [
            {"address": "support@centre.example", "name": "Support Team"},
            {"address": "plain@centre.example", "name": None},
        ],
        "cc": [{"address": "jane@centre.example", "name": "Doe, Jane"}],
        "reply_to": [{"address": "replies@attacker.example", "name": "Replies"}],
    }
    # the original stays byte for byte in the raw message
    assert download(api, f"/interactions/{made.id}/raw")[2] == HOSTILE


def test_the_hand_off_message_carries_the_same_reading(api: Server, tmp_path: Path) -> None:
    from postroom.views import handoff_json

    made = stored(api, tmp_path, HOSTILE, "hostile.eml")
    data = handoff_json(made, api.kernel.config)
    jsonschema.validate(data, SCHEMA)
    check_clean(data["html"])
    assert data["text_from_html"] is True and "Hello agent" in data["text"]
    assert data["addresses"]["from"]["name"] == "Méchant Sender"
    assert data["attachments"] == []
    assert data["raw_url"] is None or data["raw_url"].endswith(f"/interactions/{made.id}/raw")


def twins(store: Any) -> list[str]:
    """Two interactions whose ids share their first 8 characters."""
    ids = ["abcdef12-0000-4000-8000-000000000001", "abcdef12-0000-4000-8000-000000000002"]
    items = [Interaction(id=i, subject=f"twin {n}") for n, i in enumerate(ids)]
    driver = store.driver

    def work(tx: Any) -> None:
        for item in items:
            driver._insert_interaction(tx, item, None, item.created_at)

    driver._write(work)
    return ids


def test_id_prefixes_over_http(api: Server, tmp_path: Path) -> None:
    ids = twins(api.kernel.store)
    parent = stored(api, tmp_path, HOSTILE, "parent.eml")
    code, body = api.get("/interactions/abcdef12")
    assert code == 409 and body["candidates"] == ids
    assert "ambiguous" in body["error"]
    assert api.get("/interactions/abcdef12-0000-4000-8000-000000000002")[1]["id"] == ids[1]
    assert api.get("/interactions/ABCDEF12-0000-4000-8000-0000000000")[0] == 409
    assert api.get("/interactions/abcdef12-0000-4000-8000-00000000000")[0] == 409
    assert api.get("/interactions/abcdef12-0000-4000-8000-0000000000011")[0] == 404
    assert api.get("/interactions/abcde")[0] == 404  # too short to be taken
    assert api.get("/interactions/ffffff")[0] == 404
    assert download(api, "/interactions/abcdef12/raw")[0] == 409
    assert download(api, "/interactions/abcdef12/attachments/0")[0] == 409
    # a reply names its parent by prefix too (POST /send)
    code, queued = api.send({"in_reply_to": parent.id[:8], "text": "hi"})
    assert code == 202 and queued["parent_id"] == parent.id
    assert queued["to"] == ["replies@attacker.example"]  # filled from the parent found
    code, refused = api.send({"in_reply_to": "abcdef12", "to": ["a@example.com"], "text": "x"})
    assert code == 400 and refused["field"] == "in_reply_to" and ids[1] in refused["error"]


def test_listing_over_http_filters_pages_and_refuses_bad_options(
    api: Server, tmp_path: Path
) -> None:
    for path in (HTML_ONLY, ALTERNATIVE, CP1252, LATIN1):
        stored(api, tmp_path, path.read_bytes(), path.name)
    code, body = api.get("/interactions?limit=2")
    assert code == 200 and len(body["interactions"]) == 2 and body["next"]
    for row in body["interactions"]:
        jsonschema.validate(row, SCHEMA)
        assert "text" not in row and "html" not in row  # a listing leaves the bodies out
    rest = api.get(f"/interactions?limit=100&after={body['next']}")[1]
    assert rest["next"] is None
    listed = [r["id"] for r in body["interactions"] + rest["interactions"]]
    assert len(listed) == len(set(listed)) == 4
    found = api.get(f"/interactions?text={quote('HÄHÄ')}")[1]["interactions"]
    assert [r["subject"] for r in found] == ["30 plaintext + (HTML + embedded image) + attachment"]
    found = api.get("/interactions?sender=NSB@nsb.fv.com")[1]["interactions"]
    assert [r["from"] for r in found] == ["nsb@nsb.fv.com"]
    assert api.get("/interactions?since=2030-01-01")[1]["interactions"] == []
    for query, field in [
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("limit=5000", "limit"),
        ("limit=-1", "limit"),
        ("after=garbage!", "after"),
        ("status=New&status=Sent", "status"),
        ("since=2026-02-01&until=2026-01-01", "until"),
    ]:
        code, refused = api.get(f"/interactions?{query}")
        assert code == 400 and refused["field"] == field, (query, refused)


# ---------------------------------------------------------------------- the CLI


def raw_postroom(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [POSTROOM, *args], capture_output=True, timeout=600, stdin=subprocess.DEVNULL
    )


def test_the_cli_reads_what_http_reads(quickstart: Path, tmp_path: Path) -> None:
    new = quickstart.parent / "maildir" / "new"
    for p in new.iterdir():
        p.unlink()
    for n, path in enumerate((HTML_ONLY, ALTERNATIVE, CP1252, LATIN1)):
        shutil.copy(path, new / f"17000000{n}.M1P1.corpus")
    site = str(quickstart)
    assert postroom("run", "-c", site, "--once").returncode == 0

    listed = postroom("interactions", "list", "-c", site, "--json", "--limit", "3")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 3 and all(r["source"] == "maildir:support" for r in rows)
    assert "note: the newest 3 shown (--limit 3); older ones: --after " in listed.stderr
    cursor = listed.stderr.split("--after ")[1].split()[0]
    older = postroom("interactions", "list", "-c", site, "--json", "--after", cursor)
    assert older.returncode == 0 and older.stderr == ""
    [last] = [json.loads(line) for line in older.stdout.splitlines()]
    assert last["id"] not in {r["id"] for r in rows}

    by_subject = {r["subject"]: r for r in [*rows, last]}
    html_only = by_subject["25 HTML + embedded image"]
    shown = postroom("interactions", "show", "-c", site, html_only["id"][:8])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.rstrip().endswith("(text of the HTML body)\n\nSearch for höhö")
    detail = json.loads(postroom("interactions", "show", "-c", site, "--json",
                                 html_only["id"][:8]).stdout)  # fmt: skip
    jsonschema.validate(detail, SCHEMA)
    assert detail["html"] and detail["text"] == "Search for höhö"

    alternative = by_subject["[Shapelib] need some help"]
    detail = json.loads(
        postroom("interactions", "show", "-c", site, "--json", alternative["id"]).stdout
    )
    assert detail["addresses"]["reply_to"][0]["name"] == "Shapelib Development"

    out = tmp_path / "image.png"
    got = postroom(
        "interactions", "attachment", "-c", site, html_only["id"][:6], "0", "-o", str(out)
    )
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == part_at(HTML_ONLY.read_bytes(), "2")
    piped = raw_postroom("interactions", "attachment", "-c", site, html_only["id"], "0")
    assert piped.returncode == 0 and piped.stdout == out.read_bytes()
    leader, follower = pty.openpty()  # a terminal as standard output: refused, nothing written
    try:
        on_tty = subprocess.run(
            [POSTROOM, "interactions", "attachment", "-c", site, html_only["id"], "0"],
            stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=600,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert on_tty.returncode == 2 and b"give -o FILE" in on_tty.stderr
    raw = raw_postroom("interactions", "raw", "-c", site, html_only["id"][:7])
    assert raw.returncode == 0 and raw.stdout == HTML_ONLY.read_bytes()

    missing = postroom("interactions", "attachment", "-c", site, html_only["id"], "3")
    assert missing.returncode == 1 and "has 1 file; there is no index '3'" in missing.stderr
    bad = postroom("interactions", "list", "-c", site, "--since", "last week")
    assert bad.returncode == 2 and "error: since: expected a date" in bad.stderr
    assert postroom("interactions", "show", "-c", site, "ffffffff").returncode == 1

    store = SQLiteStore({"path": str(quickstart.parent / "postroom.db")})
    store.open()

    class Sync:
        driver = store

    ids = twins(Sync())
    store.close()
    ambiguous = postroom("interactions", "show", "-c", site, "abcdef12")
    assert ambiguous.returncode == 2
    assert f"ambiguous: {ids[0]}, {ids[1]}" in ambiguous.stderr
    filtered = postroom("interactions", "list", "-c", site, "--json", "--text", "twin 1")
    assert [json.loads(line)["id"] for line in filtered.stdout.splitlines()] == [ids[1]]


def test_stored_interactions_have_their_source(quickstart: Path) -> None:
    """``source`` is where a stored interaction came from (in-process, no CLI)."""
    from tests.kernel.test_gateway import make_kernel, once

    kernel = make_kernel(quickstart)
    ok, _ = once(kernel)
    assert ok
    kernel = make_kernel(quickstart)
    run(kernel.open())
    page = run(kernel.store.find_interactions(None, 10))
    from postroom.views import source_of

    assert {source_of(i, kernel.config) for i in page.interactions} == {"maildir:support"}
    run(kernel.close())
