"""SIGINT and SIGTERM stop a command the way Ctrl-C does: a KeyboardInterrupt that the
commands turn into a saved, resumable state and exit 130.

A signal that lands while Python runs a finalizer (a weakref callback, a ``__del__``) cannot
raise there: Python would print "Exception ignored in ..." and carry on as if nothing had
happened. Such a signal is kept pending instead, and training raises it at the end of the
batch in progress (``raise_if_pending``, called by a callback).
"""

from __future__ import annotations

import signal
import sys

_pending: list[int] = []


def in_finalizer(frame) -> bool:
    for _ in range(6):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith("weakref.py"):
            return True
        frame = frame.f_back
    return False


def stopping(signum) -> KeyboardInterrupt:
    """The interrupt to raise. The stack it unwinds may hold TensorFlow's half-entered context
    managers, whose clean-up then fails inside the garbage collector; as the command is
    stopping anyway, such "Exception ignored in ..." reports are not printed."""
    sys.unraisablehook = lambda unraisable: None
    return KeyboardInterrupt(f"signal {signum}")


def _handler(signum, frame):
    if in_finalizer(frame):
        _pending.append(signum)
        return
    raise stopping(signum)


def install() -> None:
    """Route SIGTERM (a scheduler's or `kill`'s stop) and SIGINT through the handler. A
    process started in the background by a non-interactive shell inherits SIGINT ignored, and
    Python leaves it ignored: `kill -INT` must still stop a run cleanly."""
    _pending.clear()
    sys.unraisablehook = sys.__unraisablehook__
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def raise_if_pending() -> None:
    if _pending:
        signum = _pending.pop()
        _pending.clear()
        raise stopping(signum)
