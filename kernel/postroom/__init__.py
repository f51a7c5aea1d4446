"""postroom: a plugin-based e-mail gateway for contact centres.

Plugins import :data:`hookimpl` from here to implement the hooks in
:mod:`postroom.hookspecs`::

    from postroom import hookimpl

    @hookimpl
    def postroom_classify(message):
        ...
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT_NAME = "postroom"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

try:
    __version__ = version("postroom")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
