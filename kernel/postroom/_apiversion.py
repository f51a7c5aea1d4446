"""The public API's version and the compatibility rule plugins are checked by.

Kept apart from :mod:`postroom.api` so the plugin loader can check versions
without importing the whole public surface (which imports the kernel).
"""

from __future__ import annotations

import re

#: the version of :mod:`postroom.api` (semantic versioning, ``MAJOR.MINOR.PATCH``)
VERSION = "1.0.0"

_DECLARED = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.\d+)?\s*$")


def api_compatible(declared: str, provided: str = VERSION) -> bool:
    """True when a plugin written against API *declared* runs on *provided*.

    Same major version, and the kernel's minor version at least the plugin's
    (a minor version only adds names). ``ValueError`` for a declaration that
    is not ``MAJOR`` or ``MAJOR.MINOR[.PATCH]``.
    """
    wanted = _DECLARED.match(declared)
    have = _DECLARED.match(provided)
    if wanted is None:
        raise ValueError(f"not an API version: {declared!r} (expected e.g. '1.0')")
    if have is None:  # pragma: no cover - VERSION is ours
        raise ValueError(f"not an API version: {provided!r}")
    major, minor = int(wanted[1]), int(wanted[2] or 0)
    return major == int(have[1]) and minor <= int(have[2] or 0)
