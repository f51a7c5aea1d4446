"""``postroom_erase``: the kernel asks every plugin to erase its own data, in the same run.

A plugin that fails makes the erasure incomplete (reported, never silent), and
neither the report nor the log names the address."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from postroom import hookimpl
from postroom.addresses import AddressError
from postroom.erasure import erase, normalize
from postroom.model import Interaction, RawRef
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel


class Probe:
    """A plugin with per-person data of its own."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, list[str], bool]] = []

    @hookimpl
    def postroom_erase(self, address: str, interaction_ids: list[str], dry_run: bool) -> Any:
        self.calls.append((address, interaction_ids, dry_run))
        if self.fail:
            raise RuntimeError(f"cannot reach the CRM to forget {address.upper()}")
        return {"probe_contacts": 0 if dry_run else 3}


def committed(kernel: Any, tmp_path: Path) -> str:
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: bob@example.org\r\nSubject: x\r\n\r\nhi\r\n")
    result = kernel.store_driver.commit_fetched(
        "support", "1", RawRef.from_path(path), [Interaction(from_addr="bob@example.org")]
    )
    return str(result.new[0].id)


def test_every_plugin_erases_in_the_same_run_and_says_what(
    quickstart: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe()
    kernel = make_kernel(quickstart, plugins=[("probe", probe)])
    run(kernel.open())
    try:
        iid = committed(kernel, tmp_path)
        dry = run(erase(kernel, "Bob <BOB@example.org>", dry_run=True))
        assert probe.calls == [("bob@example.org", [iid], True)]
        assert dry.complete and dry.counts["interactions"] == 1
        assert kernel.store_driver.get_interaction(iid) is not None
        with caplog.at_level(logging.INFO, logger="postroom.erasure"):
            report = run(erase(kernel, "bob@EXAMPLE.org"))
        assert probe.calls[-1] == ("bob@example.org", [iid], False)
        assert report.complete and report.plugins == {"probe": {"probe_contacts": 3}}
        assert report.remaining == {}
        assert kernel.store_driver.get_interaction(iid) is None
        assert "erasure complete" in caplog.text and report.address_hash in caplog.text
        assert "bob@" not in caplog.text.lower()
    finally:
        run(kernel.close())


def test_a_failing_plugin_makes_the_erasure_incomplete_without_naming_the_address(
    quickstart: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = make_kernel(quickstart, plugins=[("probe", Probe(fail=True))])
    run(kernel.open())
    try:
        committed(kernel, tmp_path)
        report = run(erase(kernel, "bob@example.org"))
        assert not report.complete
        assert report.plugins["probe"]["error"] == (
            "RuntimeError: cannot reach the CRM to forget <address>"
        )
        assert "INCOMPLETE" in caplog.text and "bob@" not in caplog.text.lower()
        audit = kernel.store_driver.erasure_audits("bob@example.org")
        assert [row["complete"] for row in audit] == [False]
    finally:
        run(kernel.close())


def test_addresses_are_normalised_as_the_kernel_reads_them() -> None:
    assert normalize("  Bob <Bob@EXAMPLE.org> ") == "bob@example.org"
    assert normalize("bob@bücher.example") == "bob@xn--bcher-kva.example"
    for bad in ("", "bob", "a@b.example, c@d.example"):
        with pytest.raises(AddressError):
            normalize(bad)


def test_the_report_reads_the_same_as_json() -> None:
    from postroom.erasure import ErasureReport

    report = ErasureReport("h", False, {"interactions": 1}, {"p": {"error": "x"}}, {})
    assert report.as_dict()["complete"] is False
    assert SimpleNamespace(**report.as_dict()).counts == {"interactions": 1}
