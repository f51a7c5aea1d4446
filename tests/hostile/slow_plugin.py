"""A hook plugin whose analysis never ends on one kind of message: the budget's test subject.

Importable by module name, so the kernel ships it to its worker processes like
an installed plugin. A message whose subject contains ``spin forever`` makes
``postroom_analyze`` write its process id to the file named by the environment
variable ``POSTROOM_TEST_SPIN_PID`` (when set: a FIFO the test waits on) and then
loop; every other message gets ``slow.seen = True``.
"""

from __future__ import annotations

import os
from typing import Any

from postroom import hookimpl

TRIGGER = "spin forever"
PID_PATH = "POSTROOM_TEST_SPIN_PID"


@hookimpl
def postroom_analyze(message: Any) -> dict[str, Any]:
    if TRIGGER in (message.subject or ""):
        target = os.environ.get(PID_PATH)
        if target:
            with open(target, "w") as fh:
                fh.write(str(os.getpid()))
        while True:
            pass
    return {"slow.seen": True}
