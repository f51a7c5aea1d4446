"""The plugin against a real slapd: enrich, caches, TLS, and a directory that is down."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred

from postroom.api import Backoff
from postroom.services.handoff import HandoffService
from postroom.testing import TestKernel, result_of
from postroom_ldap.contacts import PENDING_KEY
from postroom_ldap.directory import DirectoryUnavailable
from tests.pki import make_tls_files
from tests.plugins.ldap.conftest import LDAP, directory_of, mail, site, slapd_stopped

JUERGEN = "Jürgen Müller <juergen.mueller@customer.example>"


def test_a_known_sender_gets_the_contacts_id_and_names(ldap_server: dict[str, Any]) -> None:
    with TestKernel([LDAP], site(ldap_server)) as kernel:
        [interaction] = kernel.ingest(mail(JUERGEN))
        data = interaction.attached_data
        assert data["ContactId"] == "C-1001"
        assert data["Contact.FirstName"] == "Jürgen"
        assert data["Contact.LastName"] == "Müller"
        assert data["Contact.PhoneNumber"] == "+49 30 1234567"
        assert PENDING_KEY not in data
        # as stored, and in plugin order with no other keys of this plugin
        stored = kernel.interaction(interaction.id)
        assert stored is not None and stored.attached_data["ContactId"] == "C-1001"


def test_the_address_is_matched_whatever_its_case(ldap_server: dict[str, Any]) -> None:
    with TestKernel([LDAP], site(ldap_server)) as kernel:
        [interaction] = kernel.ingest(mail("ALICE.SMITH@shop.EXAMPLE"))
        assert interaction.attached_data["ContactId"] == "C-1002"
        [second] = kernel.ingest(mail("alice@shop.example", "Second"))  # her other address
        assert second.attached_data["Contact.FirstName"] == "Alice"


def test_an_entry_without_the_id_attribute_is_attached_without_an_id(
    ldap_server: dict[str, Any],
) -> None:
    with TestKernel([LDAP], site(ldap_server)) as kernel:
        [interaction] = kernel.ingest(mail("bob.jones@shop.example"))
        assert "ContactId" not in interaction.attached_data
        assert interaction.attached_data["Contact.LastName"] == "Jones"
    with TestKernel([LDAP], site(ldap_server, **{"id-attribute": None})) as kernel:
        [interaction] = kernel.ingest(mail("bob.jones@shop.example"))
        assert interaction.attached_data["ContactId"] == "uid=bjones,ou=people,dc=example,dc=test"


def test_an_unknown_sender_gets_nothing_and_is_cached_as_unknown(
    ldap_server: dict[str, Any],
) -> None:
    config = site(ldap_server, **{"negative-cache-ttl": 300, "cache-ttl": 3600})
    with TestKernel([LDAP], config) as kernel:
        directory = directory_of(kernel)
        [first] = kernel.ingest(mail("stranger@elsewhere.example", "One"))
        assert not {k for k in first.attached_data if k.startswith(("Contact", "ldap."))}
        assert directory.attempts == 1
        kernel.ingest(mail("Stranger@Elsewhere.example", "Two"))
        assert directory.attempts == 1  # the negative cache answered
        kernel.clock.advance(301)
        kernel.ingest(mail("stranger@elsewhere.example", "Three"))
        assert directory.attempts == 2  # expired: asked again
        # a contact found is kept longer
        kernel.ingest(mail(JUERGEN, "Four"))
        kernel.clock.advance(3599)
        kernel.ingest(mail(JUERGEN, "Five"))
        assert directory.attempts == 3
        kernel.clock.advance(2)
        [again] = kernel.ingest(mail(JUERGEN, "Six"))
        assert directory.attempts == 4 and again.attached_data["ContactId"] == "C-1001"


@pytest.mark.parametrize("hostile", ["*@*", "*", "x@y)(|(mail=*", "*)(uid=*)@customer.example",
                                     "juergen.mueller@customer.example)(uid=*"])  # fmt: skip
def test_a_hostile_address_cannot_widen_the_filter(
    ldap_server: dict[str, Any], hostile: str
) -> None:
    """Unescaped, each of these would match one or every entry (an address
    with ``*`` is a substring filter); escaped, it matches none."""
    with TestKernel([LDAP], site(ldap_server)) as kernel:
        directory = directory_of(kernel)
        assert result_of(directory.lookup(hostile)) is None
        assert directory.circuit.state == "closed"  # an answer, not a failure


def test_start_tls_with_the_test_ca(ldap_server: dict[str, Any]) -> None:
    config = site(ldap_server, url=ldap_server["url"], **{"start-tls": True})
    with TestKernel([LDAP], config) as kernel:
        [interaction] = kernel.ingest(mail(JUERGEN))
        assert interaction.attached_data["ContactId"] == "C-1001"


def wrong_ca(tmp_path: Path) -> str:
    return str(make_tls_files(tmp_path / "other", ca_common_name="not the LDAP CA").ca_file)


@pytest.mark.parametrize("tls", ["ldaps", "start-tls"])
def test_a_certificate_of_another_ca_is_refused(
    ldap_server: dict[str, Any], tmp_path: Path, tls: str
) -> None:
    overrides: dict[str, Any] = {"ca-file": wrong_ca(tmp_path)}
    if tls == "start-tls":
        overrides.update(url=ldap_server["url"], **{"start-tls": True})
    with TestKernel([LDAP], site(ldap_server, **overrides)) as kernel:
        directory = directory_of(kernel)
        with pytest.raises(DirectoryUnavailable) as refused:
            result_of(directory.lookup("juergen.mueller@customer.example"))
        assert "certificate verify failed" in str(refused.value).lower()
        [interaction] = kernel.ingest(mail(JUERGEN))
        assert "ContactId" not in interaction.attached_data
        assert "is down" in str(interaction.attached_data[PENDING_KEY])


def test_a_wrong_password_fails_without_showing_it(
    ldap_server: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = site(ldap_server, **{"bind-password": "Tr0ub4dor-wrong"})
    with TestKernel([LDAP], config) as kernel:
        directory = directory_of(kernel)
        with pytest.raises(DirectoryUnavailable) as refused:
            result_of(directory.lookup("juergen.mueller@customer.example"))
    assert "invalidCredentials" in str(refused.value)
    assert "Tr0ub4dor" not in str(refused.value) and "Tr0ub4dor" not in caplog.text
    assert "did not answer" in caplog.text


def pending(kernel: TestKernel, interaction_id: str) -> dict[str, Any]:
    stored = kernel.interaction(interaction_id)
    assert stored is not None
    return dict(stored.attached_data)


def test_a_stopped_directory_delays_nothing_and_the_lookup_is_made_later(
    ldap_server: dict[str, Any],
) -> None:
    """THE test of issue 13: with slapd stopped, mail is committed and handed off
    at once (no time passes on the gateway's clock; the second e-mail does not
    even try the directory); once slapd is back, the kernel's retry of the side
    effects gives the stored interactions their contact."""
    config = site(ldap_server, **{"retry-initial": 30, "retry-max": 30})
    with TestKernel([LDAP], config) as kernel:
        directory = directory_of(kernel)
        with slapd_stopped(ldap_server):
            [first] = kernel.ingest(mail(JUERGEN, "During the outage"))
            assert kernel.clock.seconds() == 0
            assert directory.attempts == 1 and directory.circuit.state == "open"
            [second] = kernel.ingest(mail("alice@shop.example", "Also during the outage"))
            assert directory.attempts == 1  # skipped: the circuit is open
            for interaction in (first, second):
                data = pending(kernel, interaction.id)
                assert "ContactId" not in data and PENDING_KEY in data
                assert kernel.handoff_state(interaction.id) == "done"  # went with what was known
                status = result_of(kernel.store.after_commit_status(interaction.id))
                state, error = status[0], status[2]
                assert state == "failed" and "is down" in error
            # the gateway's hand-off service retries the owed side effects
            service = HandoffService(kernel.kernel, backoff=Backoff(60.0, 60.0, jitter=0.0))
            service.startService()
            try:
                assert directory.attempts == 1  # still within the circuit's pause
                kernel.clock.advance(60)  # the circuit's pause (<= 36 s) is over
                assert directory.attempts == 2  # one trial, refused: still down
                assert PENDING_KEY in pending(kernel, first.id)
            finally:
                stopped = service.stopService()
        result_of(stopped)
        service = HandoffService(kernel.kernel, backoff=Backoff(60.0, 60.0, jitter=0.0))
        service.startService()  # slapd is back; a restarted gateway picks them up
        try:
            kernel.clock.advance(60)
            result_of(service.wait_idle())
        finally:
            result_of(service.stopService())
        first_data, second_data = pending(kernel, first.id), pending(kernel, second.id)
        assert first_data["ContactId"] == "C-1001" and second_data["ContactId"] == "C-1002"
        assert PENDING_KEY not in first_data and PENDING_KEY not in second_data
        assert result_of(kernel.store.after_commit_status(first.id))[0] == "done"
        assert directory.circuit.state == "closed"


class _ThreadedRunner:
    """A runner that runs each call in a real thread and hands its result back only
    when the test says so (:meth:`deliver`): the reactor's part, without a reactor."""

    def __init__(self) -> None:
        self.calls: list[tuple[threading.Thread, Deferred[Any], list[Any]]] = []

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        outcome: list[Any] = []

        def body() -> None:
            try:
                outcome.append(("ok", fn(*args)))
            except Exception as exc:
                outcome.append(("error", exc))

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        d: Deferred[Any] = Deferred()
        self.calls.append((thread, d, outcome))
        return d

    def deliver(self, timeout: float) -> list[Any]:
        results = []
        for thread, d, outcome in self.calls:
            thread.join(timeout)
            assert not thread.is_alive(), "the look-up's thread did not end on its own"
            kind, value = outcome[0]
            results.append(value)
            d.callback(value) if kind == "ok" else d.errback(value)
        return results


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung directory)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_an_unresponsive_directory_holds_an_email_at_most_the_timeout(
    ldap_server: dict[str, Any], silent_server: int
) -> None:
    config = site(ldap_server, url=f"ldap://127.0.0.1:{silent_server}", timeout=1)
    with TestKernel([LDAP], config) as kernel:
        directory = directory_of(kernel)
        runner = _ThreadedRunner()
        directory.runner = runner
        ingesting = kernel.ingest_deferred(mail(JUERGEN))
        assert not ingesting.called  # waiting for the directory...
        kernel.clock.advance(0.999)
        assert not ingesting.called
        kernel.clock.advance(0.001)  # ...exactly the timeout, then it goes on
        [interaction] = result_of(ingesting)
        assert "no answer within 1s" in str(interaction.attached_data[PENDING_KEY])
        assert directory.circuit.state == "open" and directory.in_flight == 1
        # the given-up thread ends by ldap3's own socket timeout; its answer is dropped
        [late] = runner.deliver(timeout=30)
        assert "LDAP" in type(late).__name__ or "Lookup" in type(late).__name__
        assert directory.in_flight == 0
        assert PENDING_KEY in pending(kernel, interaction.id)


def test_a_hanging_directory_never_takes_more_than_four_threads(
    ldap_server: dict[str, Any], silent_server: int
) -> None:
    config = site(ldap_server, url=f"ldap://127.0.0.1:{silent_server}", timeout=1)
    with TestKernel([LDAP], config) as kernel:
        directory = directory_of(kernel)
        runner = _ThreadedRunner()
        directory.runner = runner
        waiting = [ensureDeferred(directory.lookup(f"n{n}@customer.example")) for n in range(4)]
        assert directory.in_flight == 4
        with pytest.raises(DirectoryUnavailable) as refused:
            result_of(directory.lookup("n5@customer.example"))
        assert "4 look-ups are still waiting" in str(refused.value)
        assert directory.attempts == 4 and len(runner.calls) == 4
        kernel.clock.advance(1)
        for one in waiting:
            with pytest.raises(DirectoryUnavailable):
                result_of(one)
        runner.deliver(timeout=30)
        assert directory.in_flight == 0


def test_an_unexpected_error_counts_as_a_failure_and_never_sticks_the_circuit(
    ldap_server: dict[str, Any],
) -> None:
    def broken(settings: Any, address: str) -> None:
        raise ValueError("a bug in the look-up")

    config = site(ldap_server, **{"retry-initial": 10, "retry-max": 10})
    with TestKernel([LDAP], config) as kernel:
        directory = directory_of(kernel)
        directory.search = broken
        with pytest.raises(DirectoryUnavailable, match="ValueError: a bug in the look-up"):
            result_of(directory.lookup("juergen.mueller@customer.example"))
        assert directory.circuit.state == "open"
        kernel.clock.advance(12)
        with pytest.raises(DirectoryUnavailable):  # the trial ran (and failed): not stuck
            result_of(directory.lookup("juergen.mueller@customer.example"))
        assert directory.in_flight == 0
