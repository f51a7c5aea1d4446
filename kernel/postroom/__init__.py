"""postroom: a plugin-based e-mail gateway for contact centres.

The public API is :mod:`postroom.api` (and :mod:`postroom.testing` for
tests); plugins and embedding applications import nothing else::

    from postroom.api import hookimpl

    @hookimpl
    def postroom_classify(message, ctx):
        ...

Every other module of this package, this one included, is private and may
change in any release (docs/api.md).
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
