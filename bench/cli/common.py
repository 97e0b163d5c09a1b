"""What every command shares: the app, the option types that recur, one-line validation helpers, and the
run-wide defaults."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from .. import record as R
from ..console import console, error_line, fail, show_warnings, summary_line


def _flags_without_type(self, ctx) -> str | None:
    """typer >= 0.20 prints ``<bool>`` beside every flag, ``--help`` included: a flag takes no value, so
    its help shows none (the options that take a value keep their type)."""
    return None if self.is_flag else _display_type(self, ctx)


# older typer (the declared floor is 0.12) has no such method and prints no type beside a flag
_display_type = getattr(TyperOption, "display_type_rich", None)
if _display_type is not None:
    TyperOption.display_type_rich = _flags_without_type

# click's exceptions where this typer raises them: typer >= 0.2x carries its own copy of click
_click_errors = sys.modules[typer.BadParameter.__module__]


class OneLineErrors(TyperGroup):
    """The ``bench`` group, whose usage errors (a value click cannot parse, an unknown option or command, a
    missing argument) are one ``error:`` line and exit 2, as the commands' own checks are, instead of
    Typer's boxed panel under a usage line; a file-system error no check foresaw is one line too (exit 1).
    Help for a bare ``bench`` is left to Typer."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra) -> Any:
        argv = sys.argv[1:] if args is None else args
        if not standalone_mode or not argv:  # a bare `bench`: Typer's help
            return super().main(args, prog_name, complete_var, standalone_mode=standalone_mode, **extra)
        empty = _empty_path(self, list(argv))
        if empty:
            error_line(f"{empty} (see: bench {argv[0]} --help)")
            sys.exit(2)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_errors.UsageError as exc:
            if exc.ctx is not None:
                command = exc.ctx.command_path
            else:  # an option's missing value is raised without a context: the command is the first word
                first = next(iter(argv), "")
                command = "bench " + first if first in self.commands else "bench"
            error_line(f"{exc.format_message()} (see: {command} --help)")
            sys.exit(exc.exit_code)
        except _click_errors.ClickException as exc:  # e.g. a file click could not open
            error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        except OSError as exc:  # a path the file system refused, one no check foresaw: what it said, no traceback
            error_line(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
            sys.exit(1)
        # without standalone mode, click returns an Exit's code (fail's 2, --help's 0) or the command's value
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx) -> Any:
        """A command interrupted (Ctrl-C) where it says nothing of its own (a sweep says what it kept): one line,
        exit 130, where Typer would exit 130 in silence."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: the command stopped before its end", highlight=False)
            raise typer.Exit(130) from None


def _empty_path(group: TyperGroup, argv: list[str]) -> str | None:
    """What is wrong when ``argv`` gives a path option or argument an empty string, else None. Typer reads ``""``
    as ``Path("")``, the current folder, so ``--out ""`` (an unset shell variable, say) wrote results into
    whatever folder the command ran in. Which parameters are paths is read off the commands' own annotations."""
    import typing

    spec = next((c for c in app.registered_commands
                 if (c.name or c.callback.__name__.replace("_", "-")) == argv[0]), None) if argv else None
    command = group.commands.get(argv[0]) if argv else None
    if spec is None or command is None or "" not in [a.partition("=")[2] if a.startswith("--") else a for a in argv]:
        return None
    paths = {n for n, a in typing.get_type_hints(spec.callback, include_extras=True).items() if "Path" in str(a)}
    params = [p for p in command.params if p.name in paths]
    options = {o for p in params if p.param_type_name == "option" for o in p.opts}
    for i, arg in enumerate(argv[1:], start=1):
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and eq and not value and name in options:
            return f"{name} is empty: give a path (. for the current folder)"
        if arg == "" and argv[i - 1] in options:
            return f"{argv[i - 1]} is empty: give a path (. for the current folder)"
        if arg == "" and not argv[i - 1].startswith("-") and any(p.param_type_name == "argument" for p in params):
            return "an empty path: give a file"
    return None


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, rich_markup_mode="markdown")
show_warnings()


def _version(value: bool) -> None:
    if value:
        from ..version import code_version

        console.print(f"segmem {code_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="segmem's version (and git commit) and exit")] = False) -> None:
    """segmem: peak memory, throughput and Dice of 3D segmentation networks."""

DEFAULT_TIMEOUT = 900.0
#: a Dice run's time limit per stage and training iteration, when its budget is a number of iterations
SECONDS_PER_ITERATION = 5.0

RESULTS = Path("reports")
BASELINE = Path("reports/baseline/memory.csv")

ArchOption = Annotated[list[str] | None, typer.Option("--arch", "-a", metavar="NAME|all",
                                                     help="architecture name (`bench list`), repeatable, or 'all'; "
                                                          "without --arch: meunet")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="architecture override key=value, or a training "
                                                                   "recipe change recipe.KEY=VALUE; repeatable")]
OutOption = Annotated[Path, typer.Option(help="results directory (its results.jsonl)")]
Filter = Annotated[list[str] | None, typer.Option(help="keep only these values; repeatable")]
DeviceAlias = Annotated[str | None, typer.Option("--device", hidden=True, help="old name of --backend")]
JobsOption = Annotated[int | None, typer.Option(help="prediction processes [default: one per core]")]
InChannels = Annotated[int | None, typer.Option("--in-channels", help="input channels of the network, e.g. 4 for "
                                                                      "BraTS [default: 1]")]
Classes = Annotated[int | None, typer.Option("--classes", help="output classes, background included [default: 3]")]
GpuOption = Annotated[str | None, typer.Option("--gpu", help="predict step and epoch time on this GPU of the catalogue "
                                                             "(e.g. A100-80GB, RTX-4090; an unknown name lists them)")]


def backend_or_alias(backend: Any, device: Any, default: Any = None) -> Any:
    """``--backend``, or ``--device`` (its old name) where that is given; one clear line when both are given and
    differ, as one would otherwise be dropped without a word (``backend`` at ``default`` counts as not given)."""
    if device is not None and device != backend and backend != default and backend:
        fail(f"--device is the old name of --backend: give one of them (got --backend {_words(backend)} and "
             f"--device {_words(device)})")
    return device or backend


def _words(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def data_shape(in_channels: int | None, classes: int | None, data: tuple[int, int] | None = None) -> tuple[int, int]:
    """(input channels, classes): ``--in-channels`` / ``--classes`` where given (0 included, for the checks to
    refuse), else the data's (a plans file's dataset.json), else segmem's 1 and 3."""
    default = data or (1, 3)
    return (default[0] if in_channels is None else in_channels, default[1] if classes is None else classes)


def positive(option: str, value: float | None, unit: str = "") -> None:
    """One clear line (exit 2) unless ``value`` (None: not given) is a positive, finite number."""
    if value is not None and not (0 < value < math.inf):
        fail(f"{option} must be a positive number{f' of {unit}' if unit else ''}; got {value:g}")


def catalogue_gpu(name: str | None) -> str | None:
    """The catalogue name of ``--gpu``, or the one-line list of known GPUs (exit 2)."""
    from ..measure.gpus import find, known

    if name is None:
        return None
    g = find(name)
    if g is None:
        fail(f"unknown GPU {name!r}; known: {known()}")
    return g.name


def validated(fn, *args, **kwargs) -> Any:
    """``fn(...)``, or the one-line error of its ValueError (exit 2). Warnings raised on the way (a network built
    with a bad value warns before it fails) are held back: shown when the check passes, dropped when it fails,
    so that bad input is the one error line."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        try:
            result = fn(*args, **kwargs)
        except ValueError as exc:
            fail(str(exc))
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result


def named(option: str, fn, *args, **kwargs) -> Any:
    """``fn(...)``, its ValueError's message prefixed by the option it is about."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def is_gpu_name(text: str) -> bool:
    from ..measure.gpus import find

    return find(text) is not None


def check_writable_dir(folder: Path) -> None:
    """One clear line unless ``folder`` could be made and written into (see :func:`writable_dir`), leaving
    nothing: checked before another option's folder is created, so that a refused command leaves none."""
    _try_dir(folder, keep=False)


def writable_file(path: Path) -> Path:
    """``path``, its folder created, or one clear line unless a file can be written there (a folder is not a
    file name): checked by a command's last check, before the work whose result it is to hold."""
    if path.is_dir():
        fail(f"{path} is a folder: give a file name")
    writable_dir(path.parent)
    return path


def writable_dir(folder: Path) -> Path:
    """``folder``, created, or one clear line when files cannot be written there."""
    _try_dir(folder, keep=True)
    return folder.resolve()


def _try_dir(folder: Path, keep: bool) -> None:
    """Make ``folder`` and write a file there, or one clear line saying why not; unless ``keep``, the folders
    it made are removed again. Only trying tells (a path under /proc, a read-only mount); a file in the way
    is "Not a directory", not mkdir's "File exists"."""
    import tempfile

    from ..sweep.store import nearest_existing

    existing = nearest_existing(folder)
    if not existing.is_dir():
        fail(f"cannot write into {folder}: Not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"cannot write into {folder}: Permission denied")
    target = folder.absolute()
    made = [] if keep else [a for a in (target, *target.parents) if existing in a.parents]  # deepest first
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        fail(f"cannot write into {folder}: {exc.strerror or exc}")
    finally:
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break


def recorder(b, counts: dict[str, int], label):
    """The ``on_done`` of a sweep's bar: count the record's status and print its summary line (one for the
    screening pass and the run)."""

    def done(cfg, rec) -> None:
        counts[rec[R.STATUS]] = counts.get(rec[R.STATUS], 0) + 1
        b.print(summary_line(label(cfg), rec), markup=True)
        b.advance()

    return done


def dice_timeout(configs) -> float:
    """A Dice run's time limit: the default plus 1.5 x the training budget of all its stages (a budget
    of iterations: :data:`SECONDS_PER_ITERATION` each)."""
    import architectures

    dice = [c for c in configs if c.dice]
    stages = max(len(architectures.spec(c.arch).train_stages(**c.overrides_dict)) for c in dice)
    minutes, iterations = dice[0].train_minutes, dice[0].train_iterations
    per_stage = 60 * minutes if minutes else iterations * SECONDS_PER_ITERATION
    timeout = DEFAULT_TIMEOUT + 1.5 * stages * per_stage
    console.print(f"Dice runs: training {dice[0].train_budget()}; timeout per configuration {timeout / 60:.0f} min "
                  "(--timeout to change)", highlight=False)
    return timeout


def prediction_jobs(jobs: int | None) -> int | None:
    if jobs is not None and jobs < 1:
        fail(f"--jobs must be >= 1; got {jobs}")
    return jobs
