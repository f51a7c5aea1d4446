"""An identity provider serving HTTPS on 127.0.0.1 from a thread of its own,
for tests whose clients block (urllib, imaplib) or run on another reactor.

The IdP's reactor is private (not the global one), so the test's own reactor
and the IdP's never share state; :meth:`RunningIdP.close` stops it.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from types import TracebackType

from twisted.internet import selectreactor, threads

from tests.idp import pki
from tests.idp.server import IdentityProvider
from tests.idp.world import World, populate


class RunningIdP:
    """The standard IdP (see :mod:`tests.idp.world`) listening on a free port."""

    def __init__(self, directory: Path, idp: IdentityProvider | None = None) -> None:
        self.tls = pki.make_tls_files(directory)
        self.idp = idp or IdentityProvider()
        self.world: World = populate(self.idp)
        self.reactor = selectreactor.SelectReactor()
        self.port = self.idp.listen(self.reactor, self.tls)
        self.base_url = f"https://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self.reactor.run, kwargs={"installSignalHandlers": False},
            name="identity-provider", daemon=True)
        self._thread.start()

    def azure_token_url(self, tenant: str | None = None) -> str:
        return f"{self.base_url}/{tenant or self.world.tenant}/oauth2/v2.0/token"

    @property
    def google_token_url(self) -> str:
        return f"{self.base_url}/token"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the IdP's test CA only, host names checked."""
        return ssl.create_default_context(cafile=str(self.tls.ca_file))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        threads.blockingCallFromThread(self.reactor, self.port.stopListening)
        self.reactor.callFromThread(self.reactor.disconnectAll)
        self.reactor.callFromThread(self.reactor.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningIdP:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
