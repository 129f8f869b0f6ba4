"""The command line: parse, call one function, map errors to exit codes."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from imgclf._tf import import_tensorflow
from imgclf.errors import ImgclfError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Image-classification experiments with Keras 3 on TensorFlow, from one YAML file.",
)


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (a scheduler's or `kill`'s stop) ends a run the way Ctrl-C does: the run is
    marked interrupted, and what finished (history, the best model) stays."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _fail(exc: ImgclfError) -> None:
    typer.echo(f"imgclf: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


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
) -> None:
    """Train a model; the last line printed is the run directory."""
    from imgclf.config import load_config

    _terminate_like_ctrl_c()
    try:
        if resume is not None:
            if config or set_ or out is not None:
                raise ImgclfError("--resume takes the run's own config.yaml; it cannot be combined "
                                  "with --config, --set or --out")
            import_tensorflow()
            from imgclf.training.trainer import resume as resume_training

            run_dir = resume_training(resume, echo=typer.echo)
        else:
            cfg = load_config(config, set_)  # config errors come before TensorFlow's slow import
            import_tensorflow()
            from imgclf.training.trainer import train as run_training

            run_dir = run_training(cfg, out=str(out) if out else None, echo=typer.echo)
    except ImgclfError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("imgclf: interrupted", err=True)
        raise typer.Exit(130) from None
    typer.echo(str(run_dir))


@app.command("lr-find")
def lr_find(
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML file(s), layered in order."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: section.key=value."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Parent folder (default: output.dir)."),
    start_lr: float = typer.Option(1e-7, "--start-lr", help="First learning rate."),
    end_lr: float = typer.Option(10.0, "--end-lr", help="Last learning rate."),
    steps: int = typer.Option(200, "--steps", help="Training steps over the range."),
) -> None:
    """Learning-rate range test: writes lr_find.csv/.png and prints a suggested rate."""
    from imgclf.config import load_config

    _terminate_like_ctrl_c()
    try:
        cfg = load_config(config, set_)
        import_tensorflow()
        from imgclf.training.lr_find import lr_find as run_lr_find

        run_dir, _ = run_lr_find(cfg, out=str(out) if out else None, start_lr=start_lr, end_lr=end_lr,
                                 steps=steps, echo=typer.echo)
    except ImgclfError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("imgclf: interrupted", err=True)
        raise typer.Exit(130) from None
    typer.echo(str(run_dir))


@app.command()
def models(pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'simple*'.")) -> None:
    """List the model registry."""
    import_tensorflow()
    from imgclf.models.registry import get_entry, list_models

    names = list_models(pattern)
    if not names:
        typer.echo(f"no model matches {pattern!r}", err=True)
        raise typer.Exit(1)
    rows = [get_entry(n) for n in names]
    width = max(len(n) for n in names)
    typer.echo(f"{'name':<{width}}  {'family':<8} {'input':<9} description")
    for e in rows:
        size = f"{e.default_size[0]}x{e.default_size[1]}" if e.default_size else "any"
        typer.echo(f"{e.name:<{width}}  {e.family:<8} {size:<9} {e.description}")


@app.command("config")
def show_config(
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML file(s), layered in order."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: section.key=value."),
) -> None:
    """Print the fully resolved config (defaults + file + overrides) and exit."""
    from imgclf.config import dump_yaml, load_config

    try:
        typer.echo(dump_yaml(load_config(config, set_)), nl=False)
    except ImgclfError as exc:
        _fail(exc)


def main() -> None:
    try:
        app()
    except ImgclfError as exc:  # raised outside a command's own handler
        print(f"imgclf: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
