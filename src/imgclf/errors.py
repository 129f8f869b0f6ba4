"""Errors a user can act on: one line, exit code 2, never a traceback; and the one way of
suggesting what a mistyped name may have meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ImgclfError(Exception):
    """Base class: the message is printed as one line and the CLI exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's own error), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ConfigError(ImgclfError):
    """A config file or --set override is malformed, unknown or of the wrong type."""


class DataError(ImgclfError):
    """The data cannot be loaded: missing folder, empty class, too few classes, bad arrays."""


class ModelError(ImgclfError):
    """Unknown model name or a model that cannot be built with the given settings."""


class TrainingError(ImgclfError):
    """Training cannot produce a usable model, e.g. the loss diverged from the start."""


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean X?)`` for the closest of ``candidates`` to ``word``, or ``""``. A word that
    matches no whole candidate is matched by its last part against theirs too (``train.epoch``
    -> ``train.epochs``, ``lr`` -> ``train.optimizer.lr``); where no candidate is dotted, that
    is the same match again."""
    candidates = list(candidates)
    match = difflib.get_close_matches(str(word), candidates, n=1, cutoff=cutoff)
    if not match:
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = difflib.get_close_matches(str(word).rsplit(".", 1)[-1], list(tails), n=1, cutoff=cutoff)
        match = [tails[close[0]]] if close else []
    return f" (did you mean {match[0]}?)" if match else ""
