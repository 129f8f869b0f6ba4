"""`imgclf train`: config -> data -> model -> fit -> run directory -> reports.

Everything that can be wrong with the input is checked before the run directory is made
(setup.py), so a bad config or a missing folder never leaves a half-made run behind. Every
finished epoch leaves a checkpoint (weights, optimizer state, the deciding callbacks'
counters), so `imgclf train --resume RUN_DIR` continues an interrupted run from its last
finished epoch (loop.py restores it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras

from imgclf import interrupts
from imgclf.config import Config, dump_yaml, load_config
from imgclf.data import DataBundle
from imgclf.data.splits import older_split_note
from imgclf.errors import ConfigError
from imgclf.gradcam import case_maps
from imgclf.inference import load_model, predict_probs, save_inference_model, write_prediction_rows
from imgclf.reports import diagnose_run, write_reports
from imgclf.reports.metrics import expected_calibration_error
from imgclf.runs import (
    MANIFEST,
    Manifest,
    default_run_name,
    holding,
    new_run_dir,
    read_manifest,
    refuse_if_running,
    write_json,
    write_text,
)
from imgclf.training.calibration import calibrate, nll
from imgclf.training.callbacks import CHECKPOINT_DIR, CHECKPOINT_WEIGHTS, read_checkpoint
from imgclf.training.distribute import barrier
from imgclf.training.folds import KIND, fold_dirs, fold_status, is_kfold, write_summary
from imgclf.training.loop import Fitted, Run, checkpoint_phase, fit_all
from imgclf.training.phases import is_partial, is_phased
from imgclf.training.setup import (
    build_model,
    distribution,
    enter_phase,
    noise_into_whitening,
    prepare,
    seed_everything,
)


def train(cfg: Config, out: str | None = None, echo=print, *, on_run_dir=None,
          resume_hint: bool = True) -> Path | None:
    """Train one model as ``cfg`` says; returns the new run directory (None on a
    multi_worker worker other than the chief, which writes no run directory).
    ``on_run_dir(path)`` hears of the run directory as soon as it exists (a sweep keeps its
    trials' directories, failed ones too); ``resume_hint=False`` leaves out the line that says
    how to resume an interrupted run (a sweep resumes its own way). With data.folds and no
    data.fold, it trains every fold and their summary (a k-fold run: training/folds.py)."""
    if cfg.data.folds and cfg.data.fold is None:
        return _train_folds(cfg, out, echo, on_run_dir, resume_hint)
    # a model that cannot be built, weights that do not fit, or a recipe the optimizer
    # refuses all fail before a run directory exists
    prep, dist, model, entered = _assemble(cfg, echo)
    cfg = prep.cfg
    if is_partial(cfg.train) and not is_phased(cfg.train):
        echo(entered)  # phased runs say so as each phase starts
    run_dir = dist.run_dir(out or cfg.output.dir, default_run_name(cfg))
    if on_run_dir is not None and dist.is_chief:
        on_run_dir(run_dir)
    try:
        with holding(run_dir):
            manifest = Manifest(run_dir, "train")
            write_text(run_dir / "config.yaml", dump_yaml(cfg))
            run = Run(run_dir, prep, model, manifest, dist, echo, entered=entered)
            with manifest.closing(on_interrupt=lambda: _say_interrupted(run, resume_hint)):
                return _train_in(run)
    finally:
        dist.cleanup()  # a non-chief worker's scratch directory


def resume(run_dir: str | Path, echo=print) -> Path:
    """Continue an interrupted run in its own directory, from its last finished epoch, with
    its saved config, optimizer state and schedule position."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / MANIFEST).is_file():
        raise ConfigError(f"--resume {run_dir}: not an imgclf run directory (no config.yaml / {MANIFEST})")
    if is_kfold(run_dir):
        return _resume_folds(run_dir, echo)
    with holding(run_dir):  # from the first check to the end: two resumes cannot both pass it
        cfg, state = _resumable(run_dir, echo)
        note = older_split_note(read_manifest(run_dir / MANIFEST).get("versions", {}).get("imgclf"), cfg.data)
        if note:
            echo(f"warning: {note}")
        run = _restored(run_dir, cfg, state, echo)
        with run.manifest.closing(on_interrupt=lambda: _say_interrupted(run, True)):
            return _train_in(run)


def _train_folds(cfg: Config, out, echo, on_run_dir, resume_hint: bool) -> Path:
    """A k-fold run: its parent directory, then each fold's run in it, then the summary."""
    if cfg.train.strategy == "multi_worker":
        raise ConfigError("data.folds trains its folds one after another in one process; use another "
                          "train.strategy than multi_worker")
    name = cfg.output.name
    # the data's and the config's errors come before anything is made; the parent's config is the
    # settled one (image size and channels filled in), as every run's config.yaml
    cfg = prepare(_fold_config(cfg, 1)).cfg.model_copy(deep=True)
    cfg.data.fold, cfg.output.name = None, name
    parent = new_run_dir(out or cfg.output.dir, f"{default_run_name(cfg)}-{cfg.data.folds}fold")
    if on_run_dir is not None:
        on_run_dir(parent)
    with holding(parent):
        manifest = Manifest(parent, "train --folds")
        manifest.update(kind=KIND, folds=cfg.data.folds, model=cfg.model.name)
        write_text(parent / "config.yaml", dump_yaml(cfg))
        return _run_folds(parent, cfg, manifest, echo, resume_hint)


def _resume_folds(parent: Path, echo) -> Path:
    """A k-fold run goes on at the fold it was in: finished folds stay, an interrupted one resumes."""
    with holding(parent):
        recorded = read_manifest(parent / MANIFEST)
        refuse_if_running(recorded, parent)
        if recorded.get("status") == "finished":
            raise ConfigError(f"--resume {parent}: this k-fold run already finished")
        cfg = load_config(parent / "config.yaml")
        return _run_folds(parent, cfg, Manifest.reopen(parent), echo, True)


def _run_folds(parent: Path, cfg: Config, manifest: Manifest, echo, resume_hint: bool) -> Path:
    def interrupted():
        echo(f"interrupted; every finished fold and epoch is saved in {parent}")
        if resume_hint:
            echo(f"resume with: imgclf train --resume {parent}")

    k = cfg.data.folds
    with manifest.closing(on_interrupt=interrupted):
        for i in range(1, k + 1):
            started = fold_dirs(parent).get(i)
            if started is not None and fold_status(started) == "finished":
                continue
            echo(f"fold {i} of {k}" + (f": resuming {started.name}" if started else ""))
            keras.backend.clear_session()  # each fold's model starts from a clean slate
            if started is not None and (started / MANIFEST).is_file():
                resume(started, echo)
            else:
                train(_fold_config(cfg, i), out=str(parent), echo=echo, resume_hint=False)
        bundle = prepare(_fold_config(cfg, 1)).bundle
        cv = write_summary(parent, fold_dirs(parent), bundle.class_names, bundle.id_column)
        runs = [read_manifest(d / MANIFEST) for d in fold_dirs(parent).values()]
        manifest.close("finished", params=runs[0].get("params"),
                       train_time_s=round(sum(r.get("train_time_s") or 0 for r in runs), 3))
    parts = [f"{s} accuracy {cv['mean'][s]['accuracy']:.4f} +- {cv['std'][s]['accuracy']:.4f}"
             for s in ("val", "test") if s in cv["mean"]]
    echo(f"done: {k} folds, " + ", ".join(parts) + " (mean +- std over the folds)")
    return parent


def _fold_config(cfg: Config, fold: int) -> Config:
    one = cfg.model_copy(deep=True)
    one.data.fold = fold
    one.output.name = f"fold{fold}"
    return one


def _resumable(run_dir: Path, echo) -> tuple[Config, dict | None]:
    """The saved config and checkpoint of a run that may be resumed, or one line why not."""
    recorded = read_manifest(run_dir / MANIFEST)
    refuse_if_running(recorded, run_dir)
    if recorded.get("status") == "finished":
        raise ConfigError(f"--resume {run_dir}: this run already finished; start a new one with --config "
                          f"{run_dir / 'config.yaml'}")
    state = read_checkpoint(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if state is not None:
        # the checkpoint holds every weight: the starting weights (a download, another run's
        # directory) need not be there any more
        cfg.model.weights = None
    if cfg.train.strategy == "multi_worker":
        # the run directory and its checkpoint are the chief's alone: the run continues here, in
        # one process, with the same global batch (the checkpoint holds plain, unmirrored values)
        echo("resuming a multi_worker run in this one process (train.strategy auto); "
             f"the global batch stays {cfg.data.batch_size}")
        cfg.train.strategy = "auto"
    return cfg, state


def _assemble(cfg: Config, echo, state: dict | None = None, run_dir: Path | None = None):
    """(prepared data, strategy, model, enter_phase's line): the model built and compiled for
    the phase the run starts in, or for a checkpoint's ``state`` (so its optimizer state fits)
    with every variable loaded from ``run_dir``'s checkpoint. Variables and optimizer are made
    in the strategy's scope, so they are mirrored over its replicas."""
    prep = prepare(cfg)
    dist = distribution(prep, echo)
    seed_everything(prep.cfg)
    with dist.strategy.scope():
        model = build_model(prep, adapt=state is None)
        if (note := noise_into_whitening(prep.cfg, model)) is not None:
            echo(note)
        entered = enter_phase(model, prep, checkpoint_phase(prep.cfg.train, state))
        if state is not None:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(run_dir / CHECKPOINT_DIR / CHECKPOINT_WEIGHTS)
    return prep, dist, model, entered


def _restored(run_dir: Path, cfg: Config, state: dict | None, echo) -> Run:
    """The run rebuilt from its checkpoint, and a line that says from where it goes on."""
    prep, dist, model, entered = _assemble(cfg, echo, state, run_dir)
    cfg = prep.cfg
    batch = (state or {}).get("callbacks", {}).get("batch_size", {}).get("batch_size")
    if state is not None:
        echo(f"resuming {run_dir} after epoch {state['epoch']} of {cfg.train.epochs}"
             + (f" (batch size {batch})" if batch else ""))
    else:
        echo(f"resuming {run_dir}: no epoch had finished, starting again from epoch 1")
    return Run(run_dir, prep, model, Manifest.reopen(run_dir), dist, echo, state, entered)


def _say_interrupted(run: Run, resume_hint: bool) -> None:
    if not run.dist.is_chief:  # its run directory is a scratch one: the chief's is the run
        run.echo("interrupted; the chief's run directory holds every finished epoch")
        return
    run.echo(f"interrupted; every finished epoch is saved in {run.dir}")
    if resume_hint:
        run.echo(f"resume with: imgclf train --resume {run.dir}")


def _train_in(run: Run) -> Path | None:
    """Under multi_worker every worker trains; only the chief's ``run.dir`` is the run (the
    others' is a scratch directory, removed at the end)."""
    with run.dist.strategy.scope():
        fitted = fit_all(run)
    if not run.dist.is_chief:
        run.dist.worker_done(run.echo)
        return None
    return finish(run, fitted)


def finish(run: Run, fitted: Fitted) -> Path:
    """The chief's part after training: the best model, predictions, reports, the manifest."""
    interrupts.raise_if_pending()  # a stop asked for in the last batches: the run stays resumable
    run_dir, model, best = run.dir, run.model, fitted.best
    run.manifest.update(epochs=fitted.epochs, best_epoch=best.best_epoch,
                        monitor=run.prep.cfg.train.early_stopping.monitor, best_value=best.best,
                        train_time_s=round(fitted.train_time, 3), strategy=run.dist.kind,
                        replicas=run.dist.replicas,
                        mixed_precision=model.dtype_policy.name.startswith("mixed"),
                        dtype_policy=model.dtype_policy.name)
    if run.dist.kind == "multi_worker":
        # model.keras holds the best epoch (BestModel saved it); predictions come from a copy
        # of it outside the strategy, on this machine alone
        if not (run_dir / "model.keras").exists():  # no epoch had a finite monitor
            save_inference_model(model, run_dir / "model.keras")
        model = load_model(run_dir / "model.keras")
    else:
        best.restore(model)  # the best epoch's weights are back; save them as the run's model
    calibration = _calibrate(run, model, fitted)
    if run.dist.kind != "multi_worker" or calibration:
        save_inference_model(model, run_dir / "model.keras")
    write_predictions(model, fitted.data, run.prep.bundle, run_dir / "predictions.csv",
                      run.prep.cfg.train.tta)
    metrics = write_reports(run_dir, explain=case_maps(model, run.prep.cfg))
    if calibration:
        metrics = _keep_uncalibrated(run_dir, metrics, calibration)
    findings = diagnose_run(run_dir, run.manifest.data)
    run.manifest.close("finished", diagnosis=[f.record() for f in findings])
    barrier(run.dist)  # the other workers wait for this
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # a finished run needs no resume

    parts = [f"{s} accuracy {metrics[s]['accuracy']:.4f}" for s in ("val", "test") if s in metrics]
    run.echo(f"done in {fitted.train_time:.1f}s, {fitted.epochs} epochs (best {best.best_epoch}): "
             + ", ".join(parts))
    for finding in findings:  # nothing when nothing is wrong; the run directory stays the last line
        run.echo(f"diagnosis: {finding.line()}")
    return run_dir


def _calibrate(run: Run, model, fitted: Fitted) -> dict | None:
    """train.calibration: the temperature fitted on the val predictions, folded into ``model``,
    and calibration.json (with each split's log loss and ECE before it)."""
    if run.prep.cfg.train.calibration != "temperature":
        return None
    tta, splits = run.prep.cfg.train.tta, run.prep.bundle.splits
    raw = {s: predict_probs(model, fitted.data[s], tta) for s in ("val", "test") if s in fitted.data}
    record = calibrate(model, splits["val"].y, fitted.data["val"].map(lambda x, y: x))
    for s, probs in raw.items():
        record[f"{s}_before"] = {"loss": nll(splits[s].y, probs),
                                 "ece": expected_calibration_error(splits[s].y, probs)}
    write_json(run.dir / "calibration.json", record)
    run.echo(f"calibration: temperature {record['temperature']:.3f}; val log loss "
             f"{record['val_loss_uncalibrated']:.4f} -> {record['val_loss']:.4f}, ECE "
             f"{record['val_ece_uncalibrated']:.4f} -> {record['val_ece']:.4f}")
    return record


def _keep_uncalibrated(run_dir: Path, metrics: dict, calibration: dict) -> dict:
    """metrics.json keeps each split's log loss and ECE before the temperature too."""
    for split, m in metrics.items():
        before = calibration.get(f"{split}_before", {})
        m.update(loss_uncalibrated=before.get("loss"), ece_uncalibrated=before.get("ece"))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def write_predictions(model, data: dict, bundle: DataBundle, path: Path, tta: str | None = None) -> None:
    """One row per val/test item, in split order: split, id, true and predicted class,
    and one probability column per class (averaged over ``tta``'s views, train.tta)."""
    splits = {name: (bundle.splits[name].ids, bundle.splits[name].y, predict_probs(model, data[name], tta))
              for name in ("val", "test") if name in data}
    write_prediction_rows(path, bundle.class_names, bundle.id_column, splits)
