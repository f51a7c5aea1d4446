"""Twisted's dropin for postroom: ``twist postroom -c site.yaml`` and
``twistd -n postroom -c site.yaml`` run the gateway (:mod:`postroom.servicemaker`).

No ``__init__.py`` here or in ``twisted/``: this folder joins Twisted's own
``twisted.plugins`` package when the kernel is installed.
"""

from postroom.servicemaker import service_maker

__all__ = ["service_maker"]
