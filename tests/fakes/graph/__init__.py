"""A strict contract fake of the Microsoft Graph v1.0 mail endpoints postroom uses.

See :mod:`tests.fakes.graph.server`.
"""

from tests.fakes.graph.server import GraphFake, StoredMessage, introspecting

__all__ = ["GraphFake", "StoredMessage", "introspecting"]
