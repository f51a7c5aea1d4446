"""How a ``postroom`` command ends when something goes wrong.

One line on standard error (``error: ...``) and a documented exit status, never
a traceback: an operator reads the line, a script reads the status. The
statuses (also in ``docs/operations.md``):

==========  ==================================================================
status      meaning
==========  ==================================================================
0           all well
1           something failed: a mailbox, a message, a send; or what was asked
            for is not there (an interaction, a quarantine entry)
2           bad input: the configuration, a plugin that cannot load, an
            argument or a request
3           the store or the file system failed: the database is unreachable,
            not a database, corrupt or locked, the disk is full, a file cannot
            be read or written, raw bytes do not match their SHA-256; or
            another gateway owns the store (``GatewayLocked``), or the running
            gateway lost its hold on it (``GatewayLockLost``)
70          internal error (a bug): the line names the exception; ``-vv``
            prints the traceback
128 + N     stopped by signal N before it finished: 130 for SIGINT (Ctrl-C),
            143 for SIGTERM (``postroom run`` stops cleanly on both and exits 0)
141         standard output was closed early (``| head``): nothing is printed
==========  ==================================================================
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import TextIO

from postroom.errors import ConfigError, ConfigErrors, PluginLoadError, PostroomError
from postroom.store.errors import StoreError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
#: 2 also means bad input on the command line or in a request
EXIT_BAD_INPUT = EXIT_CONFIG
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 70
EXIT_SIGNAL = 128
EXIT_INTERRUPTED = EXIT_SIGNAL + signal.SIGINT
EXIT_BROKEN_PIPE = EXIT_SIGNAL + signal.SIGPIPE


class UsageError(PostroomError):
    """Bad input on the command line that argparse could not see (exit status 2)."""


class NotFound(PostroomError):
    """What the command was asked about is not there (exit status 1)."""


def classify(exc: BaseException) -> tuple[int, list[str]]:
    """The exit status for *exc* and the lines to print (without ``error: ``)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, ["interrupted"]
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE, []
    if isinstance(exc, ConfigErrors):
        return EXIT_CONFIG, [str(error) for error in exc.errors]
    if isinstance(exc, ConfigError | PluginLoadError | UsageError):
        return EXIT_BAD_INPUT, [str(exc)]
    if isinstance(exc, StoreError):
        return EXIT_ENVIRONMENT, [str(exc)]
    if isinstance(exc, OSError):
        return EXIT_ENVIRONMENT, [os_error(exc)]
    if isinstance(exc, PostroomError):
        return EXIT_FAILED, [str(exc)]
    detail = str(exc).strip().splitlines()
    what = type(exc).__name__ + (f": {detail[0]}" if detail else "")
    return EXIT_INTERNAL, [f"internal error: {what} (run with -vv for the traceback)"]


def os_error(exc: OSError) -> str:
    """``path: No space left on device`` rather than ``[Errno 28] ...: 'path'``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{where}: {reason}"


def report(exc: BaseException, *, debug: bool = False, stream: TextIO | None = None) -> int:
    """Print *exc* as ``error: ...`` line(s); return its exit status.

    *debug* (``-vv``) adds the traceback of an internal error.
    """
    stream = stream if stream is not None else sys.stderr
    status, lines = classify(exc)
    if status == EXIT_BROKEN_PIPE:
        _silence_stdout()
        return status
    for line in lines:
        print(f"error: {line}", file=stream)
    if status == EXIT_INTERNAL and debug:
        traceback.print_exception(exc, file=stream)
    stream.flush()
    return status


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file behind sys.stdout (tests)
        pass
