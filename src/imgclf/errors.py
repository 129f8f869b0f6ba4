"""Errors a user can act on: one line, exit code 2, never a traceback."""


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
