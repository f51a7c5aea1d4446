"""Fixtures of the webhook tests: the private reactor, a receiver with a
certificate of a test CA, and kernels with the webhook plugin on that reactor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet import task

from postroom.testing import TestKernel
from postroom_webhook.signing import new_secret
from tests.pki import TestCA, make_tls_files
from tests.plugins.webhook.receiver import Listening, Net

MakeKernel = Callable[..., TestKernel]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_tls_files(tmp_path_factory.mktemp("webhook-tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """Another CA: the receiver's certificate is not signed by it."""
    return make_tls_files(tmp_path_factory.mktemp("other-tls"), ca_common_name="another CA")


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def net() -> Iterator[Net]:
    running = Net()
    yield running
    running.close()


@pytest.fixture
def receiver(net: Net, tls: TestCA, secret: str) -> Iterator[Listening]:
    listening = Listening(net, tls, secret)
    yield listening
    listening.close()


def now_clock() -> task.Clock:
    """A clock at the real time: the receiver's library refuses signatures
    more than five minutes from its own clock (replay protection)."""
    clock = task.Clock()
    clock.advance(time.time())
    return clock


@pytest.fixture
def make_kernel(net: Net, tls: TestCA, secret: str) -> Iterator[MakeKernel]:
    """TestKernels with the webhook plugin on *net*, trusting the test CA."""
    made: list[TestKernel] = []

    def make(url: str, *, sections: dict[str, Any] | None = None, **webhook: Any) -> TestKernel:
        options: dict[str, Any] = {"url": url, "secret": secret, "ca-file": str(tls.ca_file)}
        options.update({k.replace("_", "-"): v for k, v in webhook.items()})
        options = {k: v for k, v in options.items() if v is not None}
        site = {**(sections or {}), "webhook": options}
        kernel = TestKernel(["webhook"], site, clock=now_clock(), reactor=net.reactor)
        made.append(kernel)
        return kernel

    yield make
    for kernel in made:
        kernel.close()
    net.settle()


def message(n: int = 1) -> bytes:
    return (
        f"Message-ID: <hook-{n}@customer.example>\r\nFrom: Customer <c{n}@customer.example>\r\n"
        f"To: support@centre.example\r\nSubject: =?utf-8?q?webhook_{n}_=C3=A9t=C3=A9?=\r\n"
        "\r\nHello\r\n"
    ).encode()


