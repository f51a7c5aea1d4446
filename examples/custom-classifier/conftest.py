"""Lets the tests import ``postroom_urgent`` from this folder when the
distribution is not installed (the kernel's test run uninstalls it)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
