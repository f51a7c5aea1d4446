"""Run the identity provider as a process of its own (for Dovecot's oauth2
passdb, or a gateway under test):

    python -m tests.idp --state-dir DIR [--port N] [--cert F --key F] [--access-ttl S]

Without ``--cert``/``--key`` it makes a CA and a certificate for 127.0.0.1 in
DIR/tls (trust DIR/tls/ca.pem). When it listens it writes DIR/idp.json (port,
URLs, the CA, the standard population's ids, secrets and key files) and prints
the same JSON on one line on stdout; logs go to stderr. The test controls are
POST /_control/<name> with a JSON body (README.md). It runs until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from tests.idp import pki
from tests.idp.authority import Authority
from tests.idp.server import IdentityProvider
from tests.idp.world import populate


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.idp", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", type=Path, help="PEM certificate (with --key and --ca)")
    parser.add_argument("--key", type=Path, help="PEM private key of --cert")
    parser.add_argument("--ca", type=Path, help="the CA that signed --cert, for idp.json")
    parser.add_argument("--access-ttl", type=int, default=3600, help="access-token lifetime (s)")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    if args.cert is not None:
        tls = pki.TestCA(args.ca or args.cert, args.cert, args.key)
    else:
        tls = pki.make_tls_files(state / "tls", hosts=(args.interface, "localhost"))
    idp = IdentityProvider(Authority(access_ttl=args.access_ttl))
    world = populate(idp)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    port = idp.listen(reactor, tls, args.port, args.interface)  # type: ignore[arg-type]
    base_url = f"https://{args.interface}:{port.getHost().port}"  # type: ignore[attr-defined]
    info = {"base_url": base_url, "port": port.getHost().port,  # type: ignore[attr-defined]
            "ca_file": str(tls.ca_file), "introspection_url": base_url + "/introspect",
            "tokeninfo_url": base_url + "/tokeninfo?access_token=",
            **world.write_credentials(state / "credentials", base_url)}
    (state / "idp.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info), flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
