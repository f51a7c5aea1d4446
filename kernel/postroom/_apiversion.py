"""The public API's version and the compatibility rule plugins are checked by.

Kept apart from :mod:`postroom.api` so the plugin loader can check versions
without importing the whole public surface (which imports the kernel).
"""

from __future__ import annotations

import re
import sys
from types import ModuleType

from postroom.errors import PluginLoadError

#: the version of :mod:`postroom.api` (semantic versioning, ``MAJOR.MINOR.PATCH``)
VERSION = "1.2.0"

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


def declared_api(plugin: object) -> str | None:
    """The ``POSTROOM_API`` a plugin declares, None if none.

    Looked up on the object itself (a driver class, a plugin object or
    module), then on the module that defines it and that module's parent
    packages: a distribution declares it once, in its package's ``__init__``.
    """
    declared = getattr(plugin, "POSTROOM_API", None)
    module_name = (
        plugin.__name__ if isinstance(plugin, ModuleType) else getattr(plugin, "__module__", None)
    )
    parts = (module_name or "").split(".")
    while declared is None and parts and parts[0]:
        declared = getattr(sys.modules.get(".".join(parts)), "POSTROOM_API", None)
        parts.pop()
    if declared is not None and not isinstance(declared, str):
        return repr(declared)
    return declared


def check_api(plugin: object, group: str, name: str, distribution: str | None) -> None:
    """Refuse a plugin written for an API this kernel does not provide.

    Raises :class:`~postroom.errors.PluginLoadError` naming the plugin, its
    distribution, the version it declares and the one the kernel provides.
    """
    declared = declared_api(plugin)
    if declared is None:
        return
    try:
        compatible = api_compatible(declared)
    except ValueError as exc:
        raise PluginLoadError(
            group, name, distribution, ValueError(f"POSTROOM_API: {exc}")
        ) from exc
    if not compatible:
        raise PluginLoadError(
            group,
            name,
            distribution,
            RuntimeError(
                f"written for postroom API {declared}, but this kernel provides API {VERSION}; "
                f"install a release of {distribution or 'the plugin'} made for API "
                f"{VERSION.split('.')[0]}.x, or a kernel that provides API {declared}"
            ),
        )
