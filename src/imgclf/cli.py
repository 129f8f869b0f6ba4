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
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML experiment file (differences from configs/default.yaml)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Override a key: section.key=value (repeatable)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Parent folder for the run directory (default: output.dir)."
    ),
) -> None:
    """Train a model; the last line printed is the new run directory."""
    from imgclf.config import load_config

    _terminate_like_ctrl_c()
    try:
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


@app.command()
def models(pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'efficientnet*'.")) -> None:
    """List the model registry: family, default input size, backbone parameters (the head
    depends on the class count and is not counted), and whether ImageNet weights exist."""
    import_tensorflow()
    from imgclf.models.registry import get_entry, list_models

    names = list_models(pattern)
    if not names:
        typer.echo(f"no model matches {pattern!r}", err=True)
        raise typer.Exit(1)
    width = max(len(n) for n in names + ["name"])
    typer.echo(f"{'name':<{width}}  {'family':<12} {'input':<9} {'params':>11}  {'imagenet':<8}  description")
    for e in (get_entry(n) for n in names):
        size = f"{e.default_size[0]}x{e.default_size[1]}" if e.default_size else "any"
        params = f"{e.params:,}" if e.params is not None else "by config"
        net = "yes" if e.pretrained else "no"
        typer.echo(f"{e.name:<{width}}  {e.family:<12} {size:<9} {params:>11}  {net:<8}  {e.description}")


@app.command("config")
def show_config(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML experiment file."),
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
