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

Python runs a signal's handler only when the main thread next runs Python code. While that
thread waits inside TensorFlow (a first epoch filling a large shuffle buffer from a big photo
folder waits a minute or more in one GetNext), the handler does not run at all. So the C-level
signal also wakes a watchdog thread (``signal.set_wakeup_fd``): if no interrupt has been raised
for the signal within ``GRACE_S`` seconds and no held block runs, the watchdog runs the
registered close-outs (``on_forced_stop``: a run's manifest marked interrupted), prints the
usual lines and ends the process with exit code 130. Nothing is lost by that: every file is
written whole and renamed, an epoch's checkpoint is written inside ``held()``, and the epoch in
progress is one a stop at its next batch end would have lost as well.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []
_held = [0]  # held() blocks running now, on any thread (the chief's oracle answers on gRPC threads)
_held_lock = threading.Lock()
GRACE_S = 3.0  # how long the main thread has to act on a signal before the watchdog does
_raised = [0]  # interrupts raised for a signal so far: the watchdog's sign that one was acted on
_forced = [False]  # the watchdog is ending the process: the handler does nothing any more
_close_outs: list = []  # on_forced_stop's callables, innermost last
_watchdog: dict = {}  # the wakeup pipe's write end, once its watchdog thread runs


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
    if _forced[0]:
        return
    _pending.append(signum)
    if not _held[0] and not in_finalizer(frame):
        _raised[0] += 1
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
    _wake_watchdog()


@contextmanager
def installed():
    """The handler for the block and the previous handlers back after it (a search called from
    Python rather than the cli); off the main thread, where signals cannot be routed, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    wakeup = _wake_watchdog()
    try:
        yield
    finally:
        signal.set_wakeup_fd(wakeup)
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
        _raised[0] += 1
        raise stopping(signum)


def stop_if_pending() -> None:
    """A search's safe point (a trial's start and end, the chief's poll): raise a remembered
    signal, but only on the main thread and outside every held block; a gRPC thread answering a
    worker finishes its call."""
    if _pending and not _held[0] and threading.current_thread() is threading.main_thread():
        raise_if_pending()


@contextmanager
def on_forced_stop(close_out):
    """``close_out()`` runs if the watchdog ends the process during the block, as the block's
    own ``except KeyboardInterrupt`` would have."""
    _close_outs.append(close_out)
    try:
        yield
    finally:
        _close_outs.remove(close_out)


def _wake_watchdog() -> int:
    """Every signal with a Python handler also writes its number to a pipe the watchdog reads
    (on the main thread only); returns the wakeup fd that was set before."""
    if "fd" not in _watchdog:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        _watchdog["fd"] = write_fd
        threading.Thread(target=_watch, args=(read_fd,), name="imgclf-interrupts", daemon=True).start()
    return signal.set_wakeup_fd(_watchdog["fd"], warn_on_full_buffer=False)


def _watch(read_fd: int) -> None:
    while True:
        before = _raised[0]  # read before the wait: a signal acted on at once still counts
        data = os.read(read_fd, 64)
        signums = [b for b in data if b in SIGNALS]
        if signums and not _acted_on_within(before):
            _force_stop(signums[-1])


def _acted_on_within(before: int) -> bool:
    """Whether an interrupt is raised within GRACE_S seconds (counted from the end of any held
    block, which a signal must not cut short)."""
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline or _held[0]:
        if _raised[0] > before:
            return True
        if _held[0]:
            deadline = time.monotonic() + GRACE_S
        time.sleep(0.05)
    return _raised[0] > before


def _force_stop(signum: int) -> None:
    """The main thread is stuck where Python cannot run its handler: close out as the
    command would on a KeyboardInterrupt, and end the process with exit code 130."""
    _forced[0] = True
    for close_out in reversed(list(_close_outs)):
        try:
            close_out()
        except Exception as exc:  # a close-out that fails must not keep the process alive
            print(f"imgclf: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"imgclf: interrupted (signal {signum} while TensorFlow was busy)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
