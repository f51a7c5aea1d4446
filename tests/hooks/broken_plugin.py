"""A hook plugin that cannot be imported (its entry point is the load failure under test)."""

from __future__ import annotations

raise ImportError("postroom-broken needs the 'acme-sdk' distribution, which is not installed")
