"""SIGINT and SIGTERM stop a command the way Ctrl-C does: a KeyboardInterrupt that the
commands turn into a saved, resumable state and exit 130.

A KeyboardInterrupt raised while Python runs a finalizer (a weakref callback, a ``__del__``,
a generator closed by the garbage collector) is lost: Python prints "Exception ignored in ..."
and carries on. So every signal is also remembered until the command has acted on it, and
training raises a remembered one at the end of the batch in progress (``raise_if_pending``,
called by a callback). Where the handler can tell it is in a finalizer, it does not raise at
all and leaves the signal to that check.

A search also has stretches a signal must not cut short: KerasTuner rewriting its oracle's
state (a file cut in half would leave a search that cannot resume). Inside ``held()`` a
signal is only remembered; ``stop_if_pending`` raises it at the search's next safe point.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []
_held = [0]  # held() blocks running now, on any thread (the chief's oracle answers on gRPC threads)
_held_lock = threading.Lock()


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
    _pending.append(signum)
    if not _held[0] and not in_finalizer(frame):
        raise stopping(signum)


def remember(signum: int) -> None:
    _pending.append(signum)


def acted_on() -> None:
    """The command caught the interrupt and is stopping: nothing is pending any more."""
    _pending.clear()


def install() -> None:
    """Route SIGTERM (a scheduler's or `kill`'s stop) and SIGINT through the handler. A
    process started in the background by a non-interactive shell inherits SIGINT ignored, and
    Python leaves it ignored: `kill -INT` must still stop a run cleanly."""
    _pending.clear()
    sys.unraisablehook = sys.__unraisablehook__
    for signum in SIGNALS:
        signal.signal(signum, _handler)


@contextmanager
def installed():
    """The handler for the block and the previous handlers back after it (a search called from
    Python rather than the cli); off the main thread, where signals cannot be routed, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@contextmanager
def held():
    """A block a signal does not cut short: a signal during it is only remembered."""
    with _held_lock:
        _held[0] += 1
    try:
        yield
    finally:
        with _held_lock:
            _held[0] -= 1


def raise_if_pending() -> None:
    if _pending:
        signum = _pending.pop()
        _pending.clear()
        raise stopping(signum)


def stop_if_pending() -> None:
    """A search's safe point (a trial's start and end, the chief's poll): raise a remembered
    signal, but only on the main thread and outside every held block; a gRPC thread answering a
    worker finishes its call."""
    if _pending and not _held[0] and threading.current_thread() is threading.main_thread():
        raise_if_pending()
