"""The command line: parse, call one function, map errors to exit codes."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from imgclf import interrupts
from imgclf._tf import import_tensorflow
from imgclf.errors import ConfigError, ImgclfError, ModelError

TTA_HELP = ("Test-time augmentation: flip (average with the mirrored image) or flip_shift (the "
            "image and its mirror, each also shifted one pixel up-left and down-right: 6 views)")


class _FlagsTakeNoValue:
    """Typer's rich help shows a boolean flag (--unsafe, --help) with a <bool> metavar, as if it
    took a value: a flag gets an empty one."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Image-classification experiments with Keras 3 on TensorFlow, from one YAML file.",
)


def _load(module: str, tensorflow: bool = True, setup=None):
    """``imgclf.<module>``, imported when a command needs it (with TensorFlow first, imported
    quietly, and ``setup`` run right after it): the command line's one lazy import, so that
    `imgclf --help` and a bad config never wait for TensorFlow, pydantic or matplotlib."""
    if tensorflow:
        import_tensorflow(setup)
    return importlib.import_module(f"imgclf.{module}")


def _terminate_like_ctrl_c() -> None:
    """SIGTERM ends a run the way Ctrl-C does: the run is marked interrupted, and what finished
    (history, the best model, the checkpoint) stays (imgclf.interrupts)."""
    interrupts.install()


@contextmanager
def _handled():
    """Our errors as one line and their exit code; Ctrl-C (or SIGTERM) as exit 130."""
    try:
        yield
    except ImgclfError as exc:
        typer.echo(f"imgclf: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("imgclf: interrupted", err=True)
        raise typer.Exit(130) from None


@app.command()
def train(
    config: list[Path] = typer.Option(
        [], "--config", "-c", help="YAML experiment file (differences from configs/default.yaml); "
        "repeat to layer files, a later one winning (e.g. data + recipe).",
    ),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Override a key: section.key=value (repeatable)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Parent folder for the run directory (default: output.dir)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue an interrupted run in RUN_DIR from its last finished epoch.",
        metavar="RUN_DIR",
    ),
    folds: int | None = typer.Option(
        None, "--folds", help="k-fold cross-validation: K runs on stratified folds and their summary "
        "(the same as --set data.folds=K).", metavar="K",
    ),
) -> None:
    """Train a model; the last line printed is the run directory."""
    _terminate_like_ctrl_c()
    with _handled():
        if folds is not None:
            set_ = [*set_, f"data.folds={folds}"]
        if resume is not None:
            if config or set_ or out is not None:
                raise ImgclfError("--resume takes the run's own config.yaml; it cannot be combined "
                                  "with --config, --set, --folds or --out")
            run_dir = _load("training.trainer").resume(resume, echo=typer.echo)
        else:
            # config errors come before TensorFlow's slow import
            cfg = _load("training.request", tensorflow=False).train_config(config, set_, out)
            setup = None
            if cfg.train.strategy == "multi_worker":
                def setup():
                    _load("training.distribute", tensorflow=False).start_multi_worker()
            trainer = _load("training.trainer", setup=setup)
            run_dir = trainer.train(cfg, out=str(out) if out else None, echo=typer.echo)
    if run_dir is not None:  # None: a multi_worker worker other than the chief, which writes no run
        typer.echo(str(run_dir))


@app.command()
def tune(
    config: list[Path] = typer.Option(
        [], "--config", "-c", help="YAML file(s) with a tune: section, layered in order."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: section.key=value."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Parent folder for the tune directory (default: output.dir)."),
    directory: Path | None = typer.Option(
        None, "--dir", help="The exact tune directory (new or empty); required with --chief and "
        "--worker, where every process names the same one.", metavar="TUNE_DIR"),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue an interrupted search in TUNE_DIR (--set tune.max_trials=N "
        "may raise its trial count).", metavar="TUNE_DIR"),
    chief: str | None = typer.Option(
        None, "--chief", help="Distributed: HOST:PORT of the chief. Alone: be the chief (serve the "
        "oracle there, run no trials); with --worker: join it.", metavar="HOST:PORT"),
    worker: str | None = typer.Option(
        None, "--worker", help="Distributed: run trials for the chief under this name (with --chief "
        "and --dir; the config comes from TUNE_DIR/config.yaml).", metavar="NAME"),
) -> None:
    """Hyperparameter search (KerasTuner) over tune.space; the last line printed is the tune
    directory (trials.csv, best_config.yaml, tune.png)."""
    load_config = _load("config", tensorflow=False).load_config
    _terminate_like_ctrl_c()
    with _handled():
        more_trials = _resume_overrides(set_) if resume is not None else None
        if resume is not None and (config or out is not None or directory is not None):
            raise ImgclfError("--resume takes the search's own config.yaml; it cannot be combined with "
                              "--config, --out or --dir")
        if worker is not None:
            if chief is None or directory is None:
                raise ImgclfError("--worker NAME needs --chief HOST:PORT and --dir TUNE_DIR (the chief's)")
            if config or set_ or out is not None or resume is not None:
                raise ImgclfError("--worker reads the chief's TUNE_DIR/config.yaml; it cannot be combined "
                                  "with --config, --set, --out or --resume")
            tune_dir = _load("tuning").worker(str(directory), worker, chief, echo=typer.echo)
        elif chief is not None:
            if resume is None and directory is None:
                raise ImgclfError("--chief needs --dir TUNE_DIR (the directory its workers share), or "
                                  "--resume TUNE_DIR")
            if out is not None:
                raise ImgclfError("--chief takes --dir TUNE_DIR, the exact directory, not --out")
            cfg = load_config(config, set_) if resume is None else None
            tune_dir = _load("tuning").chief(cfg, chief, directory=str(directory) if directory else None,
                                           resume_dir=str(resume) if resume else None,
                                           max_trials=more_trials, echo=typer.echo)
        elif resume is not None:
            tune_dir = _load("tuning").resume(resume, max_trials=more_trials, echo=typer.echo)
        else:
            cfg = _load("training.request", tensorflow=False).tune_config(config, set_, out, directory)
            tune_dir = _load("tuning").tune(cfg, out=str(out) if out else None,
                                          directory=str(directory) if directory else None, echo=typer.echo)
    typer.echo(str(tune_dir))


def _resume_overrides(items: list[str]) -> int | None:
    """--resume takes one override, tune.max_trials (more trials for a search)."""
    config = _load("config", tensorflow=False)
    parse_override, TuneConfig = config.parse_override, config.TuneConfig
    max_trials = None
    for item in items:
        parts, value = parse_override(item)
        if parts != ["tune", "max_trials"]:
            raise ConfigError(f"--resume takes only --set tune.max_trials=N. Received: --set {item}")
        try:
            max_trials = TuneConfig(max_trials=value).max_trials
        except ValueError:
            raise ConfigError(f"tune.max_trials must be a whole number > 0. Received: --set {item}") from None
    return max_trials


@app.command("lr-find")
def lr_find(
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML file(s), layered in order."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: section.key=value."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Parent folder (default: output.dir)."),
    start_lr: float = typer.Option(1e-7, "--start-lr", help="First learning rate."),
    end_lr: float = typer.Option(10.0, "--end-lr", help="Last learning rate."),
    steps: int = typer.Option(200, "--steps", help="Training steps over the range."),
) -> None:
    """Learning-rate range test: writes lr_find.csv/.png and prints a suggested rate; the last
    line printed is the folder written."""
    _terminate_like_ctrl_c()
    with _handled():
        cfg = _load("config", tensorflow=False).load_config(config, set_)
        run_dir, _ = _load("training.lr_find").lr_find(cfg, out=str(out) if out else None, start_lr=start_lr,
                                                       end_lr=end_lr, steps=steps, echo=typer.echo)
    typer.echo(str(run_dir))


@app.command()
def models(pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'efficientnet*'.")) -> None:
    """List the model registry: family, default input size, backbone parameters (the head
    depends on the class count and is not counted), and whether ImageNet weights exist."""
    catalog = _load("catalog", tensorflow=False)  # the registry's table, kept without Keras
    rows = catalog.rows(pattern)
    if not rows:
        with _handled():
            raise ModelError(f"no model matches {pattern!r}; `imgclf models` lists them all")
    for line in catalog.table(rows, width=shutil.get_terminal_size().columns):
        typer.echo(line.rstrip())


@app.command("config")
def show_config(
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML file(s), layered in order."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: section.key=value."),
) -> None:
    """Print the fully resolved config (defaults + file + overrides) and exit."""
    with _handled():
        configs = _load("config", tensorflow=False)
        typer.echo(configs.dump_yaml(configs.load_config(config, set_)), nl=False)


UNSAFE_HELP = ("Load a model.keras that holds Python code (a Lambda layer): it runs as the file "
               "loads, so only for files you trust. Refused without this flag.")


@app.command()
def evaluate(
    run_dirs: list[Path] = typer.Argument(..., help="A run directory (several with --ensemble)."),
    data: Path | None = typer.Option(
        None, "--data", help="Evaluate on this data instead: a folder of class folders (or with "
        "train/ val/ test/), or the run's array source read from this path."),
    split: str | None = typer.Option(None, "--split", help="val or test (default: test if there is one)."),
    tta: str | None = typer.Option(None, "--tta", help=TTA_HELP + "; an ensemble's members otherwise "
                                   "use their own train.tta."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Average the probabilities of all the "
                                  "runs given; writes a run directory of its own."),
    name: str | None = typer.Option(None, "--name", help="Folder under RUN_DIR/eval/ (default: the split)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="With --ensemble: parent folder for "
                                    "its run directory (default: the folder holding the first run)."),
    unsafe: bool = typer.Option(False, "--unsafe", help=UNSAFE_HELP),
) -> None:
    """Recompute metrics, plots and report.html from a saved model; the last line printed is
    the folder written."""
    with _handled():
        if not ensemble and len(run_dirs) != 1:
            raise ImgclfError(f"evaluate takes one run directory (or --ensemble with several). "
                              f"Received: {len(run_dirs)}")
        jobs = _load("evaluate")
        data_arg = str(data) if data else None
        if ensemble:
            written = jobs.evaluate_ensemble(run_dirs, data=data_arg, split=split, tta=tta,
                                             out=str(out) if out else None, unsafe=unsafe,
                                             echo=typer.echo)
        else:
            written = jobs.evaluate_run(run_dirs[0], data=data_arg, split=split, tta=tta, name=name,
                                        unsafe=unsafe, echo=typer.echo)
    typer.echo(str(written))


@app.command()
def predict(
    model: Path = typer.Argument(..., help="A run directory or a .keras model file."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An image file or a folder (recursive)."),
    top_k: int | None = typer.Option(None, "--top-k", "-k", help="Classes per row (default 3, at most "
                                     "the model's classes)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="FILE.csv or FILE.json "
                                       "(default: CSV on stdout)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per batch."),
    tta: str | None = typer.Option(None, "--tta", help=TTA_HELP + "."),
    unsafe: bool = typer.Option(False, "--unsafe", help=UNSAFE_HELP),
) -> None:
    """Top-k classes for every image, one row per file in sorted order; a file that does not
    decode gets a row with its error."""
    with _handled():
        jobs = _load("predict")
        bars = []  # made once the work starts, so a bad argument prints only its error

        def progress(done: int, total: int) -> None:
            if not bars:
                bars.append(typer.progressbar(length=total, label="predicting", file=sys.stderr))
                bars[0].__enter__()
            bars[0].update(done - bars[0].pos)

        def warn(text: str) -> None:
            typer.echo(text, err=True)

        try:
            summary = jobs.predict(model, input_path, top_k=top_k, output=output, batch_size=batch_size,
                                   tta=tta, unsafe=unsafe, warn=warn, progress=progress)
        finally:
            if bars:
                bars[0].__exit__(None, None, None)
    typer.echo(jobs.summary_line(summary), err=True)
    if summary.failed == summary.total:  # nothing predicted: a script must not take it for success
        raise typer.Exit(1)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    fmt: list[str] = typer.Option(["saved_model"], "--format", "-f", help="saved_model, tflite or onnx "
                                  "(repeat for several)."),
    quantize: str | None = typer.Option(None, "--quantize", "-q", help="float16 or int8 (tflite and "
                                        "onnx; int8 calibrated on the run's training images)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the files (default: "
                                    "RUN_DIR/export)."),
    force: bool = typer.Option(False, "--force", help="Keep a float32 export that differs from "
                               "model.keras by more than 1e-4."),
    unsafe: bool = typer.Option(False, "--unsafe", help=UNSAFE_HELP),
) -> None:
    """Export the run's model (raw 0-255 pixels in, probabilities out), each file checked
    against model.keras on the run's own images; the last line printed is the folder."""
    with _handled():
        written = _load("export").export_run(run_dir, formats=fmt, quantize=quantize, out=out,
                                             force=force, unsafe=unsafe, echo=typer.echo)
    typer.echo(str(written))


@app.command()
def explain(
    model: Path = typer.Argument(..., help="A run directory or a .keras model file."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An image file, a folder (recursive) "
                                      "or a CSV of image paths."),
    class_name: str | None = typer.Option(None, "--class", help="Explain this class (default: the "
                                          "predicted one).", metavar="NAME"),
    top_k: int | None = typer.Option(None, "--top-k", "-k", help="Explain the K most probable "
                                     "classes of each image.", metavar="K"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the files (default: a new "
                                    "folder under RUN_DIR/explain/)."),
    unsafe: bool = typer.Option(False, "--unsafe", help=UNSAFE_HELP),
) -> None:
    """Grad-CAM heat maps: where the model looked in each image, as an overlay PNG and a .npy
    array at the image's size, plus explain.csv and a contact sheet; the last line printed is
    the folder."""
    with _handled():
        jobs = _load("explain")
        done = jobs.explain(model, input_path, class_name=class_name, top_k=top_k, out=out,
                            unsafe=unsafe, warn=lambda t: typer.echo(t, err=True))
    typer.echo(jobs.summary_line(done), err=True)
    typer.echo(str(done.out))
    if done.failed == done.total:
        raise typer.Exit(1)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories, or folders holding runs."),
    sort: str | None = typer.Option(None, "--sort", help="Column to sort by, e.g. val_accuracy "
                                    "(best first; losses and times ascending)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or markdown."),
    plot: Path | None = typer.Option(None, "--plot", help="PNG overlay of the validation curves."),
) -> None:
    """One table of runs: model, parameters, epochs, time, val/test accuracy, loss, macro F1."""
    with _handled():
        text = _load("comparison", tensorflow=False).compare(run_dirs, sort=sort, fmt=fmt,
                                                          plot=str(plot) if plot else None,
                                                          warn=lambda t: typer.echo(t, err=True))
    typer.echo(text, nl=False)
    if plot:
        typer.echo(f"curves: {plot}", err=True)


@app.command("inspect")
def inspect_data(
    target: Path = typer.Argument(..., metavar="DATA_OR_CONFIG", help="A folder of class folders, "
                                  "an .npz file, a CSV of paths and labels, or a config .yaml "
                                  "(any data source)."),
    augment: bool = typer.Option(False, "--augment", help="Also draw the samples after the "
                                 "config's augmentation."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for samples.png and "
                                    "duplicates.csv (default: a new folder under outputs/)."),
    grid: Path | None = typer.Option(None, "--grid", help="Put the sample grid here instead "
                                     "(--augment adds <name>_augmented.png)."),
    per_class: int = typer.Option(6, "--per-class", help="Samples per class in the grid."),
    fix_split: bool = typer.Option(False, "--fix-split", help="Inspect the data as "
                                   "data.dedupe_split=true splits it: duplicates kept in one split."),
) -> None:
    """Class counts and imbalance, image sizes and modes, unreadable files, exact and near
    duplicates (duplicates.csv), sample grids; the last line printed is the folder."""
    with _handled():
        folder = _load("inspect").inspect(target, augment=augment, grid=grid, out=out, per_class=per_class,
                                          fix_split=fix_split, echo=typer.echo)
    typer.echo(str(folder))


def _one_line_paragraphs(doc: str | None) -> str | None:
    """A docstring's paragraphs with their line breaks undone: Typer's rich help keeps a
    docstring's breaks in the command list, cutting sentences mid-line; it wraps them itself."""
    if not doc:
        return doc
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


for _info in app.registered_commands:
    _info.cls = _Command
    _info.help = _info.help or _one_line_paragraphs(_info.callback.__doc__)


def main() -> None:
    """The console script: every way a command line can be wrong is one line and exit 2."""
    try:  # Typer 0.2x carries its own copy of click; earlier ones use click itself
        from typer._click import exceptions as cx
    except ImportError:
        from click import exceptions as cx

    try:
        code = app(standalone_mode=False)
    except getattr(cx, "NoArgsIsHelpError", ()) as exc:  # `imgclf` or `imgclf evaluate` alone: the help
        print(exc.ctx.get_help() if exc.ctx else str(exc), file=sys.stderr)
        sys.exit(2)
    except cx.UsageError as exc:  # an unknown option, a missing argument, a bad value
        where = exc.ctx.command_path if exc.ctx else "imgclf"
        print(f"imgclf: error: {' '.join(exc.format_message().split())} (see {where} --help)",
              file=sys.stderr)
        sys.exit(2)
    except (getattr(cx, "Abort", typer.Abort), typer.Abort, KeyboardInterrupt):  # Ctrl-C, early
        print("imgclf: interrupted", file=sys.stderr)
        sys.exit(130)
    except ImgclfError as exc:  # raised outside a command's own handler
        print(f"imgclf: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug of ours: one line and how to see more, unless asked for
        if os.environ.get("IMGCLF_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"imgclf: internal error: {type(exc).__name__}: {text} (a bug: please report it; "
              "IMGCLF_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
