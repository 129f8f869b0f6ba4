"""A finished run's diagnosis: what its history and val predictions say went wrong, each
finding one plain sentence with the config keys that would help. A run with nothing wrong
gets an empty list. Pure functions over numbers; build.py reads them from the run's files."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# a best first epoch means something only when later epochs had this many chances to beat it
MIN_EPOCHS_FIRST_BEST = 3
# val accuracy within this many standard errors of chance is not above chance
CHANCE_SE = 2.0
# training accuracy this far above val accuracy (best or last epoch) is overfitting
OVERFIT_GAP = 0.15
# val loss rising at every epoch from the first counts from this many epochs on
MIN_EPOCHS_RISING = 3
# a val accuracy with a standard error above this cannot tell two runs a few points apart
MAX_VAL_SE = 0.02
# never-predicted classes named in the sentence; more are counted
NAMED_CLASSES = 5


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a run: a short code, one sentence, the config keys that help."""

    code: str
    message: str
    keys: tuple[str, ...]

    def line(self) -> str:
        return f"{self.message} (see {', '.join(self.keys)})"

    def record(self) -> dict:
        return {"code": self.code, "message": self.message, "keys": list(self.keys)}


def standard_error(p: float, n: int) -> float:
    """The binomial standard error of a share ``p`` measured on ``n`` items."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n else math.inf


def diagnose(history: pd.DataFrame, y_true, y_pred, class_names: list[str],
             best_epoch: int | None = None) -> list[Finding]:
    """The findings of a run from its history.csv rows and its val split's true and
    predicted class indices; ``best_epoch`` is the epoch whose weights it kept."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    rising = _loss_rising(history)
    # a loss that rose from the start already says why epoch 1 stayed best
    found = [rising or _first_epoch_best(history, best_epoch), _overfitting(history, best_epoch)]
    if len(y_true):
        chance = _at_chance(y_true, y_pred, len(class_names))
        # a model at chance names few classes; the classes it leaves out are no news then
        found += [chance or _never_predicted(y_true, y_pred, class_names), _val_too_small(y_true, y_pred)]
    return [f for f in found if f is not None]


def _column(history: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in history or not len(history):
        return None
    return pd.to_numeric(history[name], errors="coerce").to_numpy(dtype="float64")


def _loss_rising(history: pd.DataFrame) -> Finding | None:
    loss, val = _column(history, "loss"), _column(history, "val_loss")
    if loss is not None and not np.isfinite(loss).all():
        epoch = int(history["epoch"].iloc[int(np.argmin(np.isfinite(loss)))])
        said = f"the training loss is not finite from epoch {epoch} on"
    elif loss is not None and len(loss) >= 2 and loss[-1] > loss[0]:
        said = f"the training loss rose from {loss[0]:.4g} (epoch 1) to {loss[-1]:.4g}"
    elif val is not None and len(val) >= MIN_EPOCHS_RISING and np.all(np.diff(val) > 0):
        said = f"the val loss rose at every epoch from the first ({val[0]:.4g} -> {val[-1]:.4g})"
    else:
        return None
    return Finding("loss_rising", f"{said}: the learning rate is likely too high; `imgclf lr-find` "
                   "suggests one", ("train.optimizer.lr",))


def _first_epoch_best(history: pd.DataFrame, best_epoch: int | None) -> Finding | None:
    if best_epoch != 1 or len(history) < MIN_EPOCHS_FIRST_BEST:
        return None
    return Finding("first_epoch_best", f"the best epoch was the first of {len(history)}: nothing learned "
                   "after epoch 1 improved on it; try a lower learning rate", ("train.optimizer.lr",))


def _overfitting(history: pd.DataFrame, best_epoch: int | None) -> Finding | None:
    train, val = _column(history, "accuracy"), _column(history, "val_accuracy")
    if train is None or val is None:
        return None
    epochs = history["epoch"].to_numpy()
    rows = [len(epochs) - 1] + [i for i in np.flatnonzero(epochs == best_epoch)[:1]]
    gaps = {int(epochs[i]): train[i] - val[i] for i in rows if np.isfinite(train[i] - val[i])}
    if not gaps:
        return None
    epoch = max(gaps, key=gaps.get)
    if gaps[epoch] <= OVERFIT_GAP:
        return None
    row = int(np.flatnonzero(epochs == epoch)[0])
    return Finding("overfitting", f"training accuracy {train[row]:.3f} is {gaps[epoch]:.3f} above val "
                   f"accuracy {val[row]:.3f} at epoch {epoch}: the model is overfitting; add augmentation "
                   "or dropout",
                   ("augment", "model.dropout"))


def _at_chance(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> Finding | None:
    n = len(y_true)
    # chance: guessing uniformly, or always naming the largest val class, whichever scores more
    chance = max(1.0 / classes, np.bincount(y_true, minlength=classes).max() / n)
    bar = chance + CHANCE_SE * standard_error(chance, n)
    accuracy = float(np.mean(y_true == y_pred))
    if accuracy > bar:
        return None
    return Finding("at_chance", f"val accuracy {accuracy:.3f} is not above chance ({chance:.3f}; "
                   f"{bar:.3f} with {CHANCE_SE:g} standard errors at n={n}): the model learned nothing "
                   "usable; check the learning rate (`imgclf lr-find`) and the labels",
                   ("train.optimizer.lr",))


def _never_predicted(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> Finding | None:
    missing = [class_names[c] for c in sorted(set(y_true.tolist()) - set(y_pred.tolist()))]
    if not missing:
        return None
    named = ", ".join(missing[:NAMED_CLASSES])
    if len(missing) > NAMED_CLASSES:
        named += f" and {len(missing) - NAMED_CLASSES} more"
    which = "class is" if len(missing) == 1 else f"{len(missing)} classes are"
    return Finding("class_never_predicted", f"{which} never predicted on val: {named}; weigh the rare "
                   "classes' loss up", ("train.class_weight",))


def _val_too_small(y_true: np.ndarray, y_pred: np.ndarray) -> Finding | None:
    n = len(y_true)
    accuracy = float(np.mean(y_true == y_pred))
    se = standard_error(accuracy, n)
    if se <= MAX_VAL_SE:
        return None
    # two runs' accuracies differ by 2 standard errors of their difference before it tells
    apart = 2 * math.sqrt(2) * se
    return Finding("val_too_small", f"val accuracy {accuracy:.3f} +- {se:.3f} (n={n}): too few val images to "
                   f"tell apart two runs less than {apart:.3f} apart; hold out more", ("data.val_split",))
