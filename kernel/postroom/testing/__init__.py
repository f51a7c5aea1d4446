"""What a plugin author tests with: a real kernel, a memory store, a clock, fake drivers.

As pytest's ``pytester`` and datasette's test client are for their plugins,
this module is for postroom's: public (follows ``postroom.api.VERSION``) and,
with :mod:`postroom.api`, the only ``postroom`` module a plugin's tests need.

    from postroom.testing import TestKernel

    def test_mail_from_a_vip_domain_is_tagged():
        with TestKernel([("vip", plugin)], "vip: {domains: [bigcorp.example]}") as kernel:
            [interaction] = kernel.ingest(b"From: ceo@bigcorp.example\\r\\n\\r\\nHi\\r\\n")
            assert interaction.attached_data["vip.Customer"] is True

* :class:`TestKernel`: the kernel the gateway runs, with exactly the plugins
  named, the memory store and a ``task.Clock``; :meth:`~TestKernel.ingest`
  runs ``.eml`` bytes through the whole inbound pipeline,
  :meth:`~TestKernel.send` a request through the outbox to a
  :class:`FakeSender`, :meth:`~TestKernel.poll` a :class:`FakeSource` through
  a mailbox service; ``analyze``/``classify``/``enrich``/``expand`` run one
  stage at a time.
* :func:`site_config`: a validated configuration, for testing option declarations.
* :func:`result_of`: the result of a Deferred that has fired (for ``kernel.store``).
* :func:`assert_linear`: fail unless a function's time grows linearly with its input.
* :class:`BlockingTokenHTTP`: token requests over verified HTTPS with the
  standard library, for testing OAuth auth drivers against a real identity
  provider without running the reactor.
* pytest fixtures (``make_postroom_kernel``, ``fake_sender``) come with the
  ``pytest11`` entry point: :mod:`postroom.testing.pytest_plugin`.
"""

from __future__ import annotations

from postroom.testing.fakes import FakeSender, FakeSource, SentMessage
from postroom.testing.kernel import PollResult, TestKernel, result_of, site_config
from postroom.testing.linear import assert_linear
from postroom.testing.tokenhttp import BlockingTokenHTTP, PostedForm

__all__ = [
    "BlockingTokenHTTP",
    "FakeSender",
    "FakeSource",
    "PollResult",
    "PostedForm",
    "SentMessage",
    "TestKernel",
    "assert_linear",
    "result_of",
    "site_config",
]
