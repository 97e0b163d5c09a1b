"""The ``bench`` command line (Typer + rich). Parsing, one-line validation and progress only: the
sweep engine is :mod:`bench.sweep`, measurement :mod:`bench.measure`, training :mod:`bench.train`,
reading results :mod:`bench.results`. Option vocabularies come from :mod:`bench.options`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperOption

from . import record as R
from .console import bar, console, fail, show_warnings, summary_line
from .options import (
    Backend,
    BackendChoice,
    CascadeReading,
    ExecutorKind,
    Inferer,
    Mode,
    Planner,
    Precision,
    Weighting,
    parse_bytes,
    parse_overrides,
    parse_size,
)


def _flags_without_type(self, ctx) -> str | None:
    """typer >= 0.20 prints ``<bool>`` beside every flag, ``--help`` included: a flag takes no value, so
    its help shows none (the options that take a value keep their type)."""
    return None if self.is_flag else _display_type(self, ctx)


# older typer (the declared floor is 0.12) has no such method and prints no type beside a flag
_display_type = getattr(TyperOption, "display_type_rich", None)
if _display_type is not None:
    TyperOption.display_type_rich = _flags_without_type

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="segmem: peak memory, throughput and Dice of 3D segmentation networks.")
show_warnings()

DEFAULT_TIMEOUT = 900.0
#: a Dice run's time limit per stage and training iteration, when its budget is a number of iterations
SECONDS_PER_ITERATION = 5.0
#: ``bench paper`` predicts, or measures on CUDA
PaperBackend = StrEnum("PaperBackend", {b.name: b.value for b in (Backend.PREDICT, Backend.CUDA)})
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
                                                                      "BraTS [default: 1; a Dice run: its data's]")]
Classes = Annotated[int | None, typer.Option("--classes", help="output classes, background included [default: 3; "
                                                               "a Dice run: its data's]")]
GpuOption = Annotated[str | None, typer.Option("--gpu", help="predict step and epoch time on this GPU of the catalogue "
                                                             "(e.g. A100-80GB, RTX-4090; an unknown name lists them)")]


def _gpu(name: str | None) -> str | None:
    """The catalogue name of ``--gpu``, or the one-line list of known GPUs (exit 2)."""
    from .measure.gpus import find, known

    if name is None:
        return None
    g = find(name)
    if g is None:
        fail(f"unknown GPU {name!r}; known: {known()}")
    return g.name


def _validated(fn, *args, **kwargs) -> Any:
    """``fn(...)``, or the one-line error of its ValueError (exit 2)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        fail(str(exc))


def _named(option: str, fn, *args, **kwargs) -> Any:
    """``fn(...)``, its ValueError's message prefixed by the option it is about."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


@app.command("list")
def list_() -> None:
    """Every architecture with its parameter count (1 input channel, 3 classes), the sizes `bench run`
    accepts, its default patch and citation."""
    import architectures

    table = Table(title="segmem architectures (parameters for 1 input channel, 3 classes)")
    for col in ("name", "parameters", "sizes: multiples of", "default patch / batch", "summary"):
        table.add_column(col, overflow="fold")
    for name in architectures.names():
        s = architectures.spec(name)
        sizes = f"{s.size_divisor()}, >= {max(s.size_divisor(), s.min_size)}"  # what `bench run` enforces
        patch = s.patch_label(s.default_sizes[0])
        table.add_row(name, f"{s.param_count():,}", sizes, f"{patch} / {s.default_batches[0]}", s.summary)
    console.print(table)
    for name in architectures.names():
        console.print(f"[bold]{name}[/]: {escape(architectures.spec(name).citation)}", highlight=False)
    from architectures import monai_nets

    console.print(f"Also: MONAI's networks by name, {', '.join(monai_nets.PREFIX + n for n in monai_nets.NETWORKS)} "
                  f"({'installed' if monai_nets.available() else 'needs the monai extra: pip install segmem[monai]'}), "
                  "and any network by import path, --arch my_pkg.nets:build (see the README, 'Your own network'). "
                  f"Installed packages add architectures under the entry-point group {architectures.ENTRY_POINT_GROUP}.",
                  highlight=False)


@app.command()
def run(
    arch: ArchOption = None,
    size: Annotated[list[str] | None, typer.Option(help="cube edge (160) or DxHxW; repeatable; default: the arch's")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="batch size; repeatable; default: the arch's")] = None,
    mode: Annotated[list[Mode] | None, typer.Option(help="repeatable [default: train]")] = None,
    precision: Annotated[list[Precision] | None, typer.Option(help="autocast precision, repeatable; "
                                                                   "default: the arch's")] = None,
    checkpointing: Annotated[bool | None, typer.Option("--checkpointing/--no-checkpointing",
                                                       help="gradient checkpointing; default: the arch's")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last_3d memory format")] = False,
    backend: Annotated[BackendChoice, typer.Option(help="cuda or cpu (measure, and predict), predict (GPU-free CUDA "
                                                   "prediction only), auto (cuda if present, else cpu)")] = "auto",
    device: DeviceAlias = None,
    repeats: Annotated[int, typer.Option(help="timed steps after warm-up")] = 3,
    timeout: Annotated[float, typer.Option(help="seconds per configuration before it is recorded as timeout "
                                                "(Dice runs: more, see the README)")] = DEFAULT_TIMEOUT,
    out: OutOption = RESULTS,
    force: Annotated[bool, typer.Option(help="re-run configurations already recorded")] = False,
    retry_failed: Annotated[bool, typer.Option(help="re-run configurations recorded as error, timeout or oom")] = False,
    set_: SetOption = None,
    dice: Annotated[bool, typer.Option("--dice", help="also train on --data and record test Dice")] = False,
    data: Annotated[str, typer.Option(help="Dice data: phantom, phantom:DxHxW, an nnU-Net raw dataset or a "
                                           "TIFF folder (images/, labels/)")] = "phantom",
    train_iterations: Annotated[int | None, typer.Option(help="Dice training budget per stage in iterations "
                                                              "(default 1000 on CPU, 20000 on CUDA)")] = None,
    train_minutes: Annotated[float | None, typer.Option(help="Dice training budget per stage in minutes instead "
                                                             "(the Dice then depends on the machine's speed)")] = None,
    seed: Annotated[int, typer.Option(help="Dice runs: seed of initialisation and patch sampling")] = 0,
    weighting: Annotated[Weighting, typer.Option(help="sliding-window vote: centre (paper), gaussian (nnU-Net), "
                                                      "uniform")] = Weighting.CENTRE,
    jobs: Annotated[int | None, typer.Option(help="configurations at once on this machine [default: one per visible GPU "
                                                  "for cuda, one per core for cpu and predict]")] = None,
    gpu_memory: Annotated[str | None, typer.Option(help="predict each configuration first and record those that cannot "
                                                        "fit this GPU memory (80GB = 80e9 bytes, 80GiB = 80 x 2^30, a GPU such "
                                                        "as A100-40GB: its catalogue memory, or auto: the "
                                                        "GPU's) as predicted_oom without running them [default: auto on "
                                                        "cuda]; with --backend predict: predict at that capacity (an oom "
                                                        "record where a real GPU would run out). Both decide by the "
                                                        "same prediction: the allocator model at this memory less the "
                                                        "CUDA context of --gpu's family (else the named or visible "
                                                        "GPU's; else the generic figure)")] = None,
    no_skip: Annotated[bool, typer.Option("--no-skip", help="measure configurations predicted not to fit anyway "
                                                            "(checks the prediction)")] = False,
    executor_kind: Annotated[ExecutorKind, typer.Option("--executor", help="local worker processes, or one SLURM job "
                                                        "per configuration (submitit)")] = ExecutorKind.LOCAL,
    slurm_config: Annotated[Path | None, typer.Option(help="TOML file of SLURM options (the flags below win)",
                                                      rich_help_panel="SLURM")] = None,
    partition: Annotated[str | None, typer.Option(rich_help_panel="SLURM")] = None,
    account: Annotated[str | None, typer.Option(rich_help_panel="SLURM")] = None,
    time_limit: Annotated[int | None, typer.Option(help="minutes per job [default: --timeout + 10 min]",
                                                   rich_help_panel="SLURM")] = None,
    gpus_per_task: Annotated[int | None, typer.Option(help="as --gres=gpu:N [default: 1 for cuda, else 0]",
                                                      rich_help_panel="SLURM")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(rich_help_panel="SLURM")] = None,
    mem: Annotated[str | None, typer.Option(help="memory per job, e.g. 64G", rich_help_panel="SLURM")] = None,
    array_parallelism: Annotated[int | None, typer.Option(help="jobs of the array running at once [default: 64]",
                                                          rich_help_panel="SLURM")] = None,
    sbatch: Annotated[list[str] | None, typer.Option(help="another sbatch option, e.g. --sbatch=--qos=high; repeatable",
                                                     rich_help_panel="SLURM")] = None,
    inferer: Annotated[Inferer, typer.Option(help="Dice runs' whole-volume sliding window: segmem's, or MONAI's "
                                                  "sliding_window_inference (needs the monai extra)")] = Inferer.SEGMEM,
    in_channels: InChannels = None,
    classes: Classes = None,
    snapshot: Annotated[Path | None, typer.Option(help="write each configuration's predicted step as a PyTorch memory "
                                                       "snapshot (NAME.predicted.pickle, for pytorch.org/memory_viz) "
                                                       "and its timeline (.png) into this folder; on CUDA also the "
                                                       "recorded one (NAME.cuda.pickle)")] = None,
    gpu: GpuOption = None,
    alloc_conf: Annotated[str | None, typer.Option(help="CUDA caching-allocator options, PYTORCH_CUDA_ALLOC_CONF syntax "
                                                        "(expandable_segments:True, max_split_size_mb:N, "
                                                        "garbage_collection_threshold:F); measured under and predicted "
                                                        "with them [default: the environment's]")] = None,
    plans: Annotated[Path | None, typer.Option(help="an nnU-Net plans file (`bench plan` writes one): run the network, "
                                                    "patch and batch it names; --arch nnunet or none, nnunet_cascade "
                                                    "for its cascade", rich_help_panel="nnU-Net plans")] = None,
    configuration: Annotated[list[str] | None, typer.Option(help="the plans' configuration, repeatable [default: "
                                                                 "3d_fullres; --arch nnunet_cascade: 3d_lowres and "
                                                                 "3d_cascade_fullres]",
                                                            rich_help_panel="nnU-Net plans")] = None,
) -> None:
    """Sweep sizes x batches x modes x precisions for architectures (meunet unless --arch names others);
    one isolated process per run."""
    from .parallel import cores
    from .sweep import executor, store
    from .sweep.expand import expand, label, resolve_backend, size_warnings, visible_gpus
    from .sweep.expand import gpu_memory as detect_gpu_memory
    from .sweep.store import check_writable

    if jobs is not None and jobs < 1:
        fail(f"--jobs must be >= 1; got {jobs}")
    be = _validated(resolve_backend, device or backend)
    shape = (in_channels or 1, classes or 3)
    if plans is not None or configuration:
        if dice:
            fail("--dice does not take --plans yet (a Dice run's sliding window needs one divisor for every axis); "
                 "run the plans for memory and time without --dice")
        arch, shape = _plans_run(plans, arch, configuration, in_channels, classes)
    if dice:
        dice_opts, shape = _dice_options(data, train_minutes, train_iterations, weighting, seed, be, inferer,
                                         in_channels, classes)
    else:
        dice_opts = None
    configs = _validated(lambda: expand(
        arch or ["meunet"], [parse_size(s) for s in size or []], batch or [], mode or [Mode.TRAIN], precision or [],
        be, checkpointing, channels_last, parse_overrides(set_ or []), repeats, dice_opts, *shape))
    _divisor_notes(configs)
    if gpu is not None:
        gpu_name = _gpu(gpu)
        configs = [dataclasses.replace(c, gpu=gpu_name) for c in configs]
    conf = _alloc_conf(alloc_conf)
    if conf:
        configs = [dataclasses.replace(c, alloc_conf=conf) for c in configs]
    if timeout <= 0:
        fail(f"timeout must be positive; got {timeout:g}")
    if dice_opts is not None and timeout == DEFAULT_TIMEOUT:
        timeout = _dice_timeout(configs)
    if be is Backend.PREDICT and gpu_memory is not None:
        capacity = _validated(detect_gpu_memory, gpu_memory)
        named = _gpu(gpu_memory) if gpu is None and _is_gpu_name(gpu_memory) else None
        configs = [dataclasses.replace(c, gpu_memory=capacity, gpu=c.gpu or named or "") for c in configs]
        gpu_memory = None
    budget = _gpu_budget(gpu_memory, be, executor_kind, no_skip, detect_gpu_memory)
    slurm = _slurm_executor(executor_kind, jobs, be, out, slurm_config, dict(
        partition=partition, account=account, time_min=time_limit, gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task, mem=mem, array_parallelism=array_parallelism, sbatch=sbatch))
    gpus = visible_gpus() if be is Backend.CUDA and slurm is None else []
    n_jobs = jobs or (len(gpus) if be is Backend.CUDA else cores())
    log = None  # set once the bar exists
    pool = None if slurm else _validated(executor.local_pool, be, n_jobs, gpus, cores(), lambda line: log and log(line))
    if pool is not None and be is Backend.CUDA:  # the GPUs measure while the other cores predict ahead of them
        import torch

        ahead = executor.Predictions(executor.ahead_jobs(cores(), len(pool)))
        pool = [executor.PredictAheadExecutor(ex, ahead, torch.cuda.get_device_name(i)) for i, ex in enumerate(pool)]
    # every option is checked: now the folders (nothing is created for a command refused above)
    if snapshot is not None:
        _check_writable_dir(snapshot)
    try:
        check_writable(out)
    except OSError as exc:
        fail(str(exc))
    if snapshot is not None:
        configs = [dataclasses.replace(c, snapshot_dir=str(_writable_dir(snapshot))) for c in configs]
    for warning in size_warnings(configs):
        console.print(f"[yellow]note:[/] {escape(warning)}", highlight=False)
    if be is Backend.CPU:
        console.print("[yellow]No CUDA GPU: measuring on the CPU. CPU figures are not GPU figures; "
                      "each record also carries the predicted CUDA peak (pred_* columns).[/]")
    store.begin_sweep(out, configs, executor=executor_kind.value, backend=be.value)
    counts: dict[str, int] = {}
    if budget is not None:
        screen_gpu = _screen_gpu(gpu_memory, be)
        screens = [executor.ScreeningExecutor(budget, ex, screen_gpu) for ex in executor.local_pool(
            Backend.PREDICT, cores(), [], cores())]
        with bar(len(configs), f"predicting against {budget / 1e9:g} GB") as b:
            skipped = executor.run_sweep(configs, out, timeout, force, retry_failed, screens,
                                         on_done=_recorder(b, counts, label),
                                         on_skip=lambda cfg, why: b.advance(), budget_bytes=budget)
            b.done(f"{len(skipped)} predicted not to fit")
        left = {r[R.KEY] for r in skipped}
        configs_to_run = [c for c in configs if c.key() not in left]
    else:
        configs_to_run = configs
    with bar(len(configs_to_run), "running") as b:
        def skip(cfg, why: str) -> None:
            counts[f"skipped ({why})"] = counts.get(f"skipped ({why})", 0) + 1
            b.advance()

        log = lambda line: b.print(f"    {line}")  # noqa: E731
        if slurm is not None:
            console.print(f"submitting to SLURM: {escape(slurm.options.describe())}; `bench status --out {escape(str(out))}` "
                          "follows it", highlight=False)
        executor.run_sweep(configs_to_run, out, timeout, force, retry_failed, slurm or pool,
                           on_start=lambda cfg: b.start(label(cfg)), on_done=_recorder(b, counts, label), on_skip=skip,
                           no_skip=no_skip, budget_bytes=budget)
        b.done("sweep done")
    if snapshot is not None:
        _draw_timelines(snapshot)
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    console.print(f"{len(configs)} configuration(s): {parts}. Results: {escape(str(out / 'results.jsonl'))}",
                  highlight=False)
    if any(k.startswith("skipped (recorded") for k in counts):
        console.print("(recorded configurations were skipped; --force re-runs them, --retry-failed the failed ones)")
    failures = sum(counts.get(s, 0) for s in R.FAILED)
    if failures:
        fail(f"{failures} configuration(s) failed (error, timeout or preempted); see their rows' error column "
             "(--retry-failed runs them again)", code=1)


def _plans_run(plans: Path | None, arch: list[str] | None, configuration: list[str] | None, in_channels: int | None,
               classes: int | None) -> tuple[list[str], tuple[int, int]]:
    """The architecture names of ``--plans`` / ``--configuration``, and the data shape: the options', else the
    dataset.json's beside the plans, else 1 channel and 3 classes."""
    from architectures import nnunet_plans

    if plans is None:
        fail("--configuration names a configuration of an nnU-Net plans file: give it with --plans FILE")
    names = _validated(nnunet_plans.run_archs, plans, arch, configuration)
    ds = nnunet_plans.data_shape(plans) or (1, 3)
    return names, (in_channels or ds[0], classes or ds[1])


def _draw_timelines(folder: Path) -> None:
    """The timeline plot of each snapshot in ``folder`` that has none yet (or an older one), drawn here after
    the sweep rather than in the workers (see :mod:`bench.results.timeline`)."""
    from .results import timeline

    todo = timeline.pending(folder)
    if not todo:
        return
    with bar(len(todo), "drawing snapshot timelines") as b:
        def done(path: Path, error: str | None) -> None:
            if error:
                b.print(f"[yellow]note:[/] no timeline for {escape(path.name)}: {escape(error)}", highlight=False)
            b.advance()

        timeline.draw_snapshots(todo, done)
        b.done(f"timelines beside the snapshots in {escape(str(folder))}")


def _recorder(b, counts: dict[str, int], label):
    """The ``on_done`` of a sweep's bar: count the record's status and print its summary line (one for the
    screening pass and the run)."""

    def done(cfg, rec) -> None:
        counts[rec[R.STATUS]] = counts.get(rec[R.STATUS], 0) + 1
        b.print(summary_line(label(cfg), rec), markup=True)
        b.advance()

    return done


def _is_gpu_name(text: str) -> bool:
    from .measure.gpus import find

    return find(text) is not None


def _gpu_budget(text: str | None, be: Backend, kind: ExecutorKind, no_skip: bool, detect) -> int | None:
    """The GPU memory configurations are screened against before they run, or None (no screening; with
    --backend predict the capacity is the prediction's own, set on the configurations)."""
    if be is Backend.PREDICT:
        return None
    if no_skip:
        return None
    if text is None:
        return detect("auto") if (be is Backend.CUDA and kind is ExecutorKind.LOCAL) else None
    return _validated(detect, text)


def _screen_gpu(text: str | None, be: Backend) -> str:
    """The GPU whose CUDA context the ``--gpu-memory`` screen predicts with where a configuration names none
    (``--gpu``): a catalogue GPU given as ``--gpu-memory``, else on CUDA the visible GPU (the one a cuda run's
    own prediction takes), else none (the generic context figure, bench.measure.device)."""
    if text is not None and _is_gpu_name(text):
        return _gpu(text)
    if be is not Backend.CUDA:
        return ""
    import torch

    from .measure import gpus

    g = gpus.find(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    return g.name if g else ""


def _slurm_executor(kind: ExecutorKind, jobs: int | None, be: Backend, out: Path, config: Path | None,
                    flags: dict[str, Any]):
    """The SLURM executor of ``--executor slurm`` (every option checked here, before anything is
    submitted), or None for local runs (where SLURM options are refused)."""
    from .sweep import slurm

    given = [k for k, v in flags.items() if v not in (None, [])] + (["slurm_config"] if config else [])
    if kind is ExecutorKind.LOCAL:
        if given:
            fail(f"--{given[0].replace('_', '-').replace('time-min', 'time-limit')} is a SLURM option: "
                 "add --executor slurm")
        return None
    if jobs is not None:
        fail("--jobs is for local runs; SLURM runs --array-parallelism jobs of the array at once")
    _validated(slurm.check_available)
    base = slurm.SlurmOptions(**_validated(slurm.SlurmOptions.from_file, config)) if config else slurm.SlurmOptions()
    if flags.get("gpus_per_task") is None and config is None:
        flags["gpus_per_task"] = 1 if be is Backend.CUDA else 0
    options = _validated(base.merged, **flags)
    return slurm.SlurmExecutor(options, (out / "slurm").resolve())


def _divisor_notes(configs) -> None:
    """Say how the suite found the input divisibility of networks that did not declare it (probed)."""
    import architectures

    for name, ov in dict.fromkeys((c.arch, c.overrides) for c in configs):
        note = architectures.spec(name).divisor_note(**dict(ov))
        if note:
            console.print(f"[yellow]{escape(note)}[/]", highlight=False)


def _check_writable_dir(folder: Path) -> None:
    """One clear line unless ``folder`` could be made and written into (see :func:`_writable_dir`), creating
    nothing: checked before another option's folder is created, so that a refused command leaves none."""
    target = folder.absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        fail(f"cannot write into {folder}: Not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"cannot write into {folder}: Permission denied")


def _writable_dir(folder: Path) -> Path:
    """``folder``, created, or one clear line when files cannot be written there."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        fail(f"cannot write into {folder}: {exc.strerror or exc}")
    return folder.resolve()


def _dice_options(data: str, minutes: float | None, iterations: int | None, weighting: Weighting, seed: int,
                  backend: Backend, inferer: Inferer, in_channels: int | None,
                  classes: int | None) -> tuple[dict, tuple[int, int]]:
    """Validate the Dice options (and the dataset itself, before anything trains); returns them (the budget
    resolved, so that a configuration and its key name the iterations it trains) and the data's (input
    channels, classes), which --in-channels / --classes may repeat but not contradict."""
    from .train.data.datasets import DatasetError
    from .train.data.phantom import LABELS
    from .train.dice_run import budget, open_dataset, phantom_shape

    if minutes is not None and minutes <= 0:
        fail(f"--train-minutes must be positive; got {minutes:g}")
    if iterations is not None and iterations < 1:
        fail(f"--train-iterations must be >= 1; got {iterations}")
    try:
        ds = None if phantom_shape(data) is not None else open_dataset(data)
    except DatasetError as exc:
        fail(f"data: {exc}")
    if ds is not None:
        console.print(f"data: {escape(ds.name)}: {len(ds.train)} train, {len(ds.val)} val, {len(ds.test)} test "
                      f"volumes, classes {escape(str(ds.labels))}", highlight=False)
    shape = (1, len(LABELS)) if ds is None else (ds.in_channels, ds.num_classes)
    for given, has, what in ((in_channels, shape[0], "--in-channels"), (classes, shape[1], "--classes")):
        if given is not None and given != has:
            fail(f"{what} {given} contradicts the data ({data}: {shape[0]} channel(s), {shape[1]} classes); "
                 f"a Dice run takes them from its data")
    if inferer is Inferer.MONAI:
        from architectures.monai_nets import available

        if not available():
            fail("--inferer monai needs MONAI: pip install 'segmem[monai]' (or pip install monai)")
    minutes, iterations = budget(minutes, iterations, backend.torch_device)
    return {"data": data, "train_minutes": minutes, "train_iterations": iterations, "weighting": weighting.value,
            "seed": seed, "inferer": inferer.value}, shape


def _dice_timeout(configs) -> float:
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


@app.command()
def status(
    out: OutOption = RESULTS,
    all_: Annotated[bool, typer.Option("--all", help="list every configuration, not only running and failed ones")] = False,
) -> None:
    """Pending / running / done / failed configurations of the sweeps on --out (one in flight included)."""
    from .sweep import store

    if not store.path(out).exists() and not (out / store.SWEEPS).is_dir():
        fail(f"no sweep under {out}: neither {store.path(out).name} nor {store.SWEEPS}/")
    rows = store.progress(out)
    counts = {s: sum(r["state"] == s for r in rows) for s in store.STATES}
    console.print(f"{escape(str(out))}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    shown = [r for r in rows if all_ or r["state"] in (store.RUNNING_STATE, store.FAILED_STATE)]
    if shown:
        table = Table()
        for col in ("state", "configuration", "detail"):
            table.add_column(col, overflow="fold")
        for r in shown:
            table.add_row(r["state"], escape(r["label"]), escape(r["detail"]))
        console.print(table)


@app.command()
def repair(out: OutOption = RESULTS) -> None:
    """Move lines of the results store that are not records (torn by a kill, foreign) aside, into
    results.rejected.jsonl, so that the store reads as JSON Lines again."""
    from .sweep import store

    if not store.path(out).exists():
        fail(f"no results store at {store.path(out)}")
    moved = store.repair(out)
    where = escape(str(store.path(out).parent / store.REJECTED))
    console.print(f"{moved} line(s) moved aside into {where}" if moved else "the store is whole: nothing to repair",
                  highlight=False)


def _tolerance(text: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fail(f"tolerance must be like 0.5% or 0.005; got {text!r}")
        raise


def _jobs(jobs: int | None) -> int | None:
    if jobs is not None and jobs < 1:
        fail(f"--jobs must be >= 1; got {jobs}")
    return jobs


def _predict_grid(configs, verb: str, jobs: int | None):
    from .results import compare
    from .sweep.expand import label

    with bar(len(configs), verb) as b:
        return compare.predict_grid(configs, progress=lambda cfg: (b.start(label(cfg)), b.advance()), jobs=jobs)


def _print_comparison(result, tolerance: float) -> None:
    def table(title: str, rows: list[dict]) -> Table:
        t = Table(title=title)
        for col in ("configuration", "category", "baseline", "now", "change"):
            t.add_column(col)
        for r in rows:
            t.add_row(escape(r["config"]), r["figure"], f"{r['baseline_bytes']:,}", f"{r['current_bytes']:,}",
                      f"{r['change']:+.2%}")
        return t

    if result.grown:
        console.print(table(f"[red]grew beyond {tolerance:.2%}[/]", result.grown))
    if result.missing:
        console.print("[red]configurations missing from the current grid:[/] " + escape("; ".join(result.missing)))
    if result.shifted:
        console.print(table("moved between categories (totals did not grow)", result.shifted))
    if result.shrunk:
        console.print(table("[green]shrank (good news)[/]", result.shrunk))
    if result.added:
        console.print(f"new configurations (not in the baseline): {len(result.added)}")
    if result.failed:
        console.print("[red]memory regression[/]: if intended, run `bench baseline --update` and commit the diff")
    else:
        console.print(f"[green]no memory regression[/] (tolerance {tolerance:.2%})")


def _alloc_settings(conf: str | None):
    """``--alloc-conf`` (PYTORCH_CUDA_ALLOC_CONF syntax), else the environment's, as allocator settings."""
    from .measure.allocator import AllocatorSettings

    return _validated(AllocatorSettings.parse, conf) if conf is not None else AllocatorSettings.from_env()


def _alloc_conf(conf: str | None) -> str:
    """``--alloc-conf``, else ``PYTORCH_CUDA_ALLOC_CONF``, checked and written the one canonical way (so that one
    setting is one key), or one clear line. Options the model does not follow are kept for a CUDA run and said."""
    text = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") if conf is None else conf
    if not text.strip():
        return ""
    from .measure.allocator import AllocatorSettings  # (torch-free, but a sweep's parent imports it only when asked)

    try:
        return AllocatorSettings.parse(text).conf()
    except ValueError as exc:
        if "is not modelled" not in str(exc):
            fail(f"--alloc-conf: {exc}")
        console.print(f"[yellow]note:[/] {escape(str(exc))}: the prediction leaves it out; a CUDA run passes it to "
                      "PyTorch as given (PyTorch says there whether it knows it)", highlight=False)
        return ",".join(s.strip() for s in text.split(",") if s.strip())


def _load_trace(path: Path, device: int):
    """A snapshot pickle or an ``.events.csv`` file as (trace, the snapshot dict or None), or one clear line."""
    from .measure import traces

    if not path.exists():
        fail(f"no such file: {path}")
    try:
        if path.name.endswith(".events.csv"):
            return traces.read_events(path), None
        data = traces.load_snapshot(path)
        return traces.snapshot_trace(data, device), data
    except ValueError as exc:  # SnapshotError included
        fail(str(exc))


@app.command()
def replay(
    snapshot: Annotated[Path, typer.Argument(help="a torch.cuda.memory._snapshot() pickle (or a .events.csv fixture)")],
    device: Annotated[int, typer.Option(help="which device's trace")] = 0,
    gpu_memory: Annotated[str | None, typer.Option(help="the allocator's capacity (e.g. 80GB, or a GPU: A100-40GB), for "
                                                        "the model's free-and-retry; taken whole: give the GPU's "
                                                        "memory less the CUDA context to match a run")] = None,
    plot: Annotated[Path | None, typer.Option(help="also draw the snapshot's timeline (allocated and reserved over "
                                                   "its trace, the largest tensors live at the peak) into this PNG")] = None,
) -> None:
    """Your own snapshot's real peak allocated / reserved / fragmentation beside the allocator model's on
    the same events, and under expandable_segments. Read safely: no class is loaded from the pickle."""
    from .measure import traces
    from .sweep.expand import gpu_memory as detect_gpu_memory

    capacity = _validated(detect_gpu_memory, gpu_memory) if gpu_memory is not None else None
    if plot is not None:
        if plot.suffix.lower() != ".png":
            fail(f"--plot writes a PNG: give a name ending in .png; got {plot.name}")
        if snapshot.name.endswith(".events.csv"):
            fail("--plot draws a snapshot pickle (its frames name the tensors); an event file has none")
        _writable_dir(plot.parent)
    trace, data = _load_trace(snapshot, device)
    if not any(e.action == traces.ALLOC for e in trace.events):
        fail(f"{snapshot}: the trace holds no allocation to replay")
    rows = traces.compare_rows(trace, capacity)
    real = rows[0]
    if data is not None and "segmem" in data:  # a prediction's snapshot: its trace is the model's own, not a GPU's
        real["source"] = "the prediction's trace"
    start = "" if trace.whole_run else " (starts mid-run)" if not trace.starts_empty else " (starts with segments cached)"
    table = Table(title=f"{escape(snapshot.name)}: {sum(e.action == traces.ALLOC for e in trace.events):,} allocations"
                        f"{start}; settings: {trace.settings.conf() or 'default'}"
                        + (f"; the model's capacity: {capacity / 2**20:,.0f} MiB" if capacity is not None else ""))
    for col in ("", "peak allocated", "peak reserved", "reserved vs real", "fragmentation at peak", "segments at end"):
        table.add_column(col)
    for r in rows:
        frag = "-" if r["fragmentation"] is None else f"{r['fragmentation']:.1%}"
        err = "" if r is real else f"{r['peak_reserved'] / real['peak_reserved'] - 1:+.2%}" if real["peak_reserved"] else "-"
        table.add_row(escape(r["source"]), f"{r['peak_allocated'] / 2**20:,.1f} MiB", f"{r['peak_reserved'] / 2**20:,.1f} MiB",
                      err, frag, "-" if r["segments"] is None else str(r["segments"]))
    console.print(table)
    short = [r for r in rows if r["ooms"]]
    if short:
        console.print(f"[yellow]note:[/] at --gpu-memory {escape(str(gpu_memory))} the model ran out of memory: "
                      + "; ".join(f"{escape(r['source'])} on {r['ooms']:,} allocation(s)" for r in short)
                      + ". Its peaks stop short there (a real run would raise torch.OutOfMemoryError), so their "
                      "errors are not the model's error.", highlight=False)
    console.print("[dim]Allocated from a trace counts each request rounded to 512 B; the model's also counts the "
                  "remainders of blocks too small to split, as torch.cuda.max_memory_allocated does.[/]")
    if not trace.starts_empty:
        console.print("[yellow]The trace starts mid-run: the blocks live at its start are allocated first in the model "
                      "(in address order), which the real allocator may have laid out differently.[/]")
    elif not trace.whole_run:
        console.print(f"[yellow]The trace starts with nothing allocated but {trace.initial_reserved / 2**20:,.0f} MiB "
                      "reserved (cached segments, free): the model starts with none and makes its own.[/]")
    if plot is not None:
        from .results import timeline

        timeline.draw(timeline.timeline(data, device, snapshot.name), plot)
        console.print(f"timeline: {escape(str(plot))}", highlight=False)


@app.command("trace2events")
def trace2events(
    snapshot: Annotated[Path, typer.Argument(help="a torch.cuda.memory._snapshot() pickle")],
    dest: Annotated[Path, typer.Argument(help="the event file to write (NAME.events.csv)")],
    source: Annotated[str, typer.Option(help="where the snapshot comes from (URL)")] = "",
    commit: Annotated[str, typer.Option(help="the source repository's commit")] = "",
    license_: Annotated[str, typer.Option("--license", help="the source's licence")] = "",
    device: Annotated[int, typer.Option(help="which device's trace")] = 0,
) -> None:
    """Convert a snapshot into a small event file (a test fixture: tests replay every one in tests/fixtures/traces)."""
    from .measure import traces

    if not dest.name.endswith(".events.csv"):
        fail(f"the event file's name must end in .events.csv; got {dest.name}")
    if not snapshot.exists():
        fail(f"no such file: {snapshot}")
    try:
        trace = traces.convert(snapshot, dest, {"source": source, "commit": commit, "license": license_}, device)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"{len(trace.events):,} events written to {escape(str(dest))}", highlight=False)


@app.command()
def validate(
    arch: Annotated[list[str] | None, typer.Option("--arch", "-a", help="narrow the grid to these architectures "
                                                                         "[default: all]")] = None,
    out: Annotated[Path, typer.Option(help="where the CSV and Markdown summary go")] = Path("reports/validation"),
    fixtures: Annotated[Path, typer.Option(help="where the recorded snapshots become event-file fixtures")] = Path(
        "tests/fixtures/traces/validation"),
    timeout: Annotated[float, typer.Option(help="seconds per configuration")] = DEFAULT_TIMEOUT,
    time_limit: Annotated[float | None, typer.Option(
        "--time-limit", help="seconds from the command's start, for a GPU lent for a while: start no configuration "
                             "after them, write the summary of those measured; the same command later measures "
                             "the rest (--timeout bounds each configuration)")] = None,
    published: Annotated[bool, typer.Option("--published", help="no GPU needed: predict every published GPU figure "
                                            "(memory: reports/validation/published_memory.csv; nnU-Net's epoch times: "
                                            "published_epoch_times.csv) and print the errors by fit / held-out split")] = False,
    fit: Annotated[bool, typer.Option("--fit", help="with --published: re-fit the fitted constants on the fit rows "
                                                    "(else: those in bench/measure/device.py and roofline.py)")] = False,
    recorded: Annotated[Path | None, typer.Option(
        "--recorded", help="no GPU needed: predict again, with this code, the configurations measured in a folder "
                           "bench validate wrote (e.g. reports/validation/nvidia-h200-2.11.0+cu130), and write the "
                           "errors beside it (NAME.repredicted.csv/.md)")] = None,
    jobs: Annotated[int | None, typer.Option(help="with --recorded: prediction processes [default: one per core]")] = None,
    keep_measured: Annotated[bool, typer.Option(
        "--keep-measured", help="measure only configurations with no CUDA measurement yet, keeping those another code "
                                "version measured (GPU time is the scarce part), and predict every measured one again "
                                "with this code for the summary, as --recorded does")] = False,
) -> None:
    """Measure the fixed grid on this CUDA GPU beside its prediction (every architecture, two sizes, train/infer,
    fp32/AMP, cudnn.benchmark off/on), a memory snapshot each; exit 1 when the median error of peak allocated
    exceeds 2% or any exceeds 5%. Interrupted: run it again, measured configurations are kept (those another code
    version measured are measured again, unless --keep-measured).

    With --published: the prediction against every published GPU figure instead (no GPU needed).
    With --recorded DIR: a recorded run's configurations predicted again by this code (no GPU needed)."""
    if fit and not published:
        fail("--fit re-fits the constants on the published figures: add --published")
    if recorded is not None and (published or arch or time_limit is not None or keep_measured):
        fail("--recorded predicts a recorded run again: no --published, --arch, --time-limit or --keep-measured with it")
    if jobs is not None and recorded is None:
        fail("--jobs applies only with --recorded (its prediction processes)")
    if recorded is not None:
        _validate_recorded(recorded, _jobs(jobs))
        return
    if time_limit is not None and not time_limit > 0:
        fail(f"--time-limit is in seconds and must be positive; got {time_limit:g}")
    if published:
        if arch:
            fail("--arch narrows the GPU grid; --published predicts every published figure")
        if keep_measured:
            fail("--keep-measured keeps the GPU grid's measurements; --published measures nothing")
        if time_limit is not None:
            fail("--time-limit bounds the GPU grid's measurements; --published measures nothing")
        _validate_published(fit, out)
        return
    import torch

    from .parallel import cores
    from .results import validate as V
    from .sweep import executor, store
    from .version import code_version

    configs = _validated(V.grid, arch)
    if not torch.cuda.is_available():
        fail("bench validate measures on a CUDA GPU and this machine has none (bench validate --published holds the "
             "prediction against published GPU figures without one)")
    name = V.report_name(torch.cuda.get_device_name(0), torch.__version__)
    runs = out / name
    try:
        store.check_writable(runs)
    except OSError as exc:
        fail(str(exc))
    snaps = _writable_dir(runs / "snapshots")
    whole = configs = [dataclasses.replace(c, snapshot_dir=str(snaps)) for c in configs]
    if keep_measured:  # measured on CUDA by any code version: not measured again
        before = {r[R.KEY] for r in store.latest(runs).values() if V.measured_on_cuda(r)}
        configs = [c for c in whole if c.key() not in before]
    # the GPU measures one configuration at a time while the other cores predict ahead of it
    ahead = executor.PredictAheadExecutor(executor.LocalExecutor(prestart=True),
                                          executor.Predictions(executor.ahead_jobs(cores(), 1)),
                                          live_gpu=torch.cuda.get_device_name(0))
    kept: list[str] = []
    left: list[str] = []
    deadline = time.monotonic() + time_limit if time_limit is not None else None
    with bar(len(configs), "validating") as b:
        executor.run_sweep(configs, runs, timeout, False, True, ahead,
                           on_start=lambda cfg: b.start(cfg.label()),
                           on_done=lambda cfg, rec: (b.print(summary_line(cfg.label(), rec), markup=True), b.advance()),
                           on_skip=lambda cfg, why: ((left if why == executor.TIME_LIMIT else kept).append(why),
                                                     b.advance()),
                           deadline=deadline)
    n_kept = len(kept) + len(whole) - len(configs)  # (--keep-measured leaves the kept ones out of the sweep)
    if n_kept:
        console.print(f"{n_kept} configuration(s) already measured in {escape(str(runs))}: kept", highlight=False)
    if left:
        console.print(f"[yellow]{len(left)} configuration(s) not started[/]: --time-limit reached; the same command "
                      "measures them, keeping those measured", highlight=False)
    if keep_measured:  # records of several code versions: every one predicted again by this code
        df = _repredicted(runs, _jobs(None), whole)
        csv, md = V.write(df, out, name, len(whole), title=f"{name}, predicted by segmem {code_version()}")
    else:
        records = store.load(runs)
        keys = {c.key() for c in whole}
        df = V.table(records[records[R.KEY].isin(keys)], snaps)  # store.load: the latest record per configuration
        csv, md = V.write(df, out, name, len(whole))
    made = V.fixtures(snaps, fixtures / name, {"source": f"bench validate on {torch.cuda.get_device_name(0)}",
                                                "commit": code_version(), "license": "segmem's own recording"})
    passed, med, worst = V.verdict(df["allocated_error"])
    console.print(f"{escape(str(csv))}, {escape(str(md))}; {len(made)} fixture(s) in {escape(str(fixtures / name))}",
                  highlight=False)
    if not passed:
        fail(f"validation failed: median |error| of peak allocated {med:.2%} (limit {V.MEDIAN_LIMIT:.0%}), "
             f"max {worst:.2%} (limit {V.MAX_LIMIT:.0%})", code=1)
    console.print(f"[green]validation passed[/]: median |error| {med:.2%}, max {worst:.2%}")


@app.command("compare")
def compare_(
    baseline: Annotated[Path, typer.Option(help="baseline CSV")] = BASELINE,
    tolerance: Annotated[str, typer.Option(help="allowed relative growth, e.g. 0.5%")] = "0.5%",
    from_pytest_benchmark: Annotated[tuple[Path, Path] | None, typer.Option(
        "--from-pytest-benchmark", help="compare the memory in two saved pytest-benchmark JSON files instead")] = None,
    jobs: JobsOption = None,
) -> None:
    """Re-predict the baseline grid and fail (exit 1) on memory growth or missing configurations."""
    from .results import compare

    tol = _tolerance(tolerance)
    jobs = _jobs(jobs)
    if from_pytest_benchmark:
        for p in from_pytest_benchmark:
            if not p.exists():
                fail(f"no such pytest-benchmark file: {p}")
        result = compare.compare_pytest_benchmark(*from_pytest_benchmark, tolerance=tol)
    else:
        try:
            base = compare.read(baseline)
        except FileNotFoundError as exc:
            fail(str(exc))
        result = compare.compare(base, _predict_grid(compare.grid(), "predicting", jobs), tol)
    _print_comparison(result, tol)
    if result.failed:
        raise typer.Exit(1)


@app.command("baseline")
def baseline_(
    update: Annotated[bool, typer.Option("--update", help="rewrite the baseline from current predictions")] = False,
    path: Annotated[Path, typer.Option(help="baseline CSV")] = BASELINE,
    jobs: JobsOption = None,
) -> None:
    """Show or (with --update) rewrite the committed memory baseline."""
    from .results import compare

    jobs = _jobs(jobs)
    if not update:
        if not path.exists():
            fail(f"no baseline at {path}; create it with `bench baseline --update`")
        # as wide as the table needs: a squeezed column would cut figures (a narrow terminal wraps whole lines)
        from rich.console import Console

        table = _baseline_table(compare.read(path), path)
        width = sum(c.min_width or 0 for c in table.columns) + 2 * len(table.columns)
        Console(width=max(console.width, width)).print(table)
        return
    df = _predict_grid(compare.grid(), "predicting", jobs)
    compare.write(df, path)
    console.print(f"wrote {len(df)} configurations to {escape(str(path))}; review `git diff {escape(str(path))}` "
                  "and commit it", highlight=False)


def _baseline_table(df, path: Path) -> Table:
    """The baseline as a table a reader can scan: one row per configuration, figures in KiB/MiB/GiB, no
    column cut (each is as wide as its widest cell)."""
    from architectures.spec import format_patch

    from .console import human_bytes
    from .results import compare

    names = ["arch", "stage", "mode", "precision", "size", "batch", "options"]
    figures = [f for f in compare.FIGURES if f in df]
    heads = names + [f.removeprefix("pred_").removeprefix("peak_").removesuffix("_bytes") for f in figures]
    rows = []
    for r in df.to_dict("records"):
        opts = ",".join(f"{k}={v}" for k, v in json.loads(r["options"]).items()) if isinstance(r["options"], str) else ""
        rows.append([str(r["arch"]), r["stage"] if isinstance(r["stage"], str) else "", str(r["mode"]), str(r["precision"]),
                     format_patch(parse_size(str(r["size"]))), str(r["batch"]), opts, *(human_bytes(r[f]) for f in figures)])
    t = Table(title=f"{path}: predicted CUDA peaks, and the live bytes at the peak by category ({len(df)} configurations)",
              box=None, padding=(0, 1))
    for i, head in enumerate(heads):
        width = max([len(head)] + [len(row[i]) for row in rows])
        t.add_column(head, justify="left" if i < len(names) else "right", no_wrap=True, min_width=width)
    for row in rows:
        t.add_row(*map(escape, row))
    return t


@app.command()
def report(
    out: OutOption = RESULTS,
    to: Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")] = None,
    arch: Filter = None,
    backend: Filter = None,
    device: Annotated[list[str] | None, typer.Option("--device", hidden=True, help="old name of --backend")] = None,
    mode: Filter = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="also draw the plots")] = True,
    gpu: GpuOption = None,
) -> None:
    """Markdown report and CSV tables (and the plots) from the results store."""
    from .results import report as rep

    gpu = _gpu(gpu)
    df = _results(out, arch, backend or device, mode)
    if gpu is not None:
        from .results.throughput import retime

        df = retime(df, gpu)
        if R.PRED_STEP_TIME not in df or df[R.PRED_STEP_TIME].isna().all():
            console.print(f"[yellow]no record has its step's work (pred_work): recorded before step-time prediction; "
                          f"re-run them with --force to predict their time on {gpu}[/]")
    dest = to or out
    written = rep.write(df, dest)
    console.print(f"report of {len(df)} records: " + escape(", ".join(str(p) for p in written)), highlight=False)
    if plots:
        _plot(df, dest)


@app.command()
def plot(
    out: OutOption = RESULTS,
    to: Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")] = None,
    arch: Filter = None,
    backend: Filter = None,
    device: Annotated[list[str] | None, typer.Option("--device", hidden=True, help="old name of --backend")] = None,
    mode: Filter = None,
) -> None:
    """Comparison plots (seaborn, PNG and SVG) from the results store."""
    _plot(_results(out, arch, backend or device, mode), to or out)


def _results(out: Path, arch: list[str] | None, backend: list[str] | None, mode: list[str] | None):
    """The filtered store, or exit 1 saying why there is nothing to show."""
    from .results import report as rep

    try:
        return rep.load(out, arch or [], backend or [], mode or [])
    except rep.NothingToShow as exc:
        fail(str(exc), code=1)


def _plot(df, dest: Path) -> None:
    from .results.plots import plot_all

    files, notes = plot_all(df, dest)
    for n in notes:
        console.print(f"[yellow]skipped[/] {escape(n)}", highlight=False)
    if files:
        console.print(f"{len(files)} plot files in {escape(str(dest))}: " + ", ".join(sorted({p.stem for p in files})),
                      highlight=False)
    else:
        console.print("[yellow]nothing to plot[/]")


@app.command("fit")
def fit_(
    arch: ArchOption = None,
    budget: Annotated[str, typer.Option(help="GPU memory, e.g. 16GB, 16GiB, 500MB, a GPU of the catalogue "
                                             "(A100-40GB: its memory and CUDA context), or auto: the smallest "
                                             "visible GPU's")] = "16GB",
    batch: Annotated[int, typer.Option(help="batch for the largest cube/box")] = 4,
    mode: Annotated[Mode, typer.Option(help="what to fit")] = Mode.TRAIN,
    precision: Annotated[Precision | None, typer.Option(help="default: the arch's")] = None,
    shape_ratio: Annotated[str | None, typer.Option(help="also the largest box of this aspect, e.g. 1072x470x470")] = None,
    size: Annotated[str | None, typer.Option(help="patch at which to find the largest batch; default: the arch's")] = None,
    margin: Annotated[str, typer.Option("--margin", "--overhead", help="extra memory to keep free beyond the device "
                                        "model's figure (the CUDA context and cuDNN's workspaces are in it already): "
                                        "fit within the budget less this; --overhead is its old name")] = "0",
    figure: Annotated[str | None, typer.Option(hidden=True)] = None,
    confirm: Annotated[bool, typer.Option(help="confirm each answer by a real run on CUDA")] = False,
    out: Annotated[Path, typer.Option(help="results directory for the table (and confirmation runs)")] = RESULTS,
    set_: SetOption = None,
    jobs: JobsOption = None,
    in_channels: InChannels = None,
    classes: Classes = None,
    gpu: GpuOption = None,
) -> None:
    """The largest cube, box and batch each architecture fits in a memory budget, by prediction (meunet
    unless --arch names others). Fits: as bench run --backend predict --gpu-memory BUDGET decides, the
    allocator model at the budget less the CUDA context of --gpu's family (without --gpu: the generic
    context); the GiB shown are the nvidia-smi figure."""
    import pandas as pd

    import architectures

    from .results import fit as fitmod
    from .results.report import markdown_table

    jobs = _jobs(jobs)
    gpu = _gpu(gpu)
    if figure is not None:
        fail("bench fit --figure is gone: fit decides by the device model's nvidia-smi figure at the budget, as "
             "bench run --backend predict --gpu-memory does (--margin keeps extra memory free)")
    from .sweep.expand import gpu_memory as detect_gpu_memory

    budget_b = _validated(detect_gpu_memory, budget, option="--budget")
    if _is_gpu_name(budget):  # a GPU of the catalogue: its context too, unless --gpu names another
        gpu = gpu or _gpu(budget)
    margin_b = _validated(_named, "--margin", parse_bytes, margin, allow_zero=True)
    if margin_b >= budget_b:
        fail(f"--margin {margin} leaves nothing of --budget {budget}")
    wanted = arch or ["meunet"]
    names = architectures.names() if "all" in wanted else [a for a in wanted if _validated(architectures.spec, a)]
    if batch < 1:
        fail(f"batch must be >= 1; got {batch}")
    ratio = _validated(parse_size, shape_ratio) if shape_ratio else None
    at = _validated(parse_size, size) if size else None
    ov = _validated(parse_overrides, set_ or [])
    if any(k.startswith("recipe.") for k in ov):
        fail("bench fit predicts each architecture with its own training recipe; --set recipe.KEY is for bench run")
    shape = (in_channels or 1, classes or 3)
    if shape[0] < 1 or shape[1] < 2:
        fail(f"--in-channels must be >= 1 and --classes >= 2; got {shape[0]} and {shape[1]}")
    if confirm:
        from .sweep.expand import resolve_backend

        _validated(resolve_backend, Backend.CUDA)
    with bar(len(names), "fitting") as b:
        fitted = fitmod.fit_many(
            names, progress=lambda name: (b.start(name), b.advance()),
            overrides={n: {k: v for k, v in ov.items() if k in architectures.spec(n).parameters()} for n in names},
            budget_bytes=budget_b, batch=batch, mode=mode, precision=precision, ratio=ratio, size=at,
            margin_bytes=margin_b, gpu=gpu, jobs=jobs, in_channels=shape[0], num_classes=shape[1])
    for name, r in zip(names, fitted):
        if isinstance(r, str):
            console.print(f"  {escape(r)}", highlight=False)
        elif note := architectures.spec(name).divisor_note(**{k: v for k, v in ov.items()
                                                              if k in architectures.spec(name).parameters()}):
            console.print(f"  {escape(note)}", highlight=False)
    rows = []
    for r in fitted:
        if not isinstance(r, str):
            rows.append(r.row())
            if gpu is not None:
                rows[-1].update(_fit_epochs(r, gpu, ov))
    if not rows:
        fail("no architecture could be fitted", code=1)
    df = pd.DataFrame(rows).dropna(axis=1, how="all").convert_dtypes()  # whole numbers stay integers
    on = f"{gpu}'s" if gpu else "the generic (no --gpu)"
    table = Table(title=f"largest {mode} configurations within {budget} (predicted nvidia-smi figure, {on} CUDA "
                        f"context" + (f", {margin} margin)" if margin_b else ")"))
    for col in df.columns:
        table.add_column(col, overflow="fold")
    for r in df.itertuples(index=False):
        table.add_row(*("" if pd.isna(v) else escape(str(v)) for v in r))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "fit.csv", index=False)
    (out / "fit.md").write_text(f"# bench fit: {budget}, {mode}\n\n" + markdown_table(df) + "\n")
    console.print(f"written: {escape(str(out / 'fit.csv'))}, {escape(str(out / 'fit.md'))}", highlight=False)
    if confirm:
        from .sweep.executor import run_sweep
        from .sweep.expand import expand, label

        configs = [c for r in rows if r["largest_cube"] for c in expand(
            [r["arch"]], [(r["largest_cube"],) * 3], [batch], [mode], [r["precision"]], Backend.CUDA,
            in_channels=shape[0], num_classes=shape[1])]
        run_sweep(configs, out, on_done=lambda cfg, rec: console.print(summary_line(label(cfg), rec), highlight=False))


def _fit_epochs(r, gpu: str, overrides: dict) -> dict[str, Any]:
    """Predicted seconds per epoch on ``gpu`` of a fit's largest cube and largest batch."""
    import architectures

    from .results.throughput import EPOCH_STEPS, predicted_epoch

    ov = {k: v for k, v in overrides.items() if k in architectures.spec(r.arch).parameters()}
    cube = predicted_epoch(r.arch, ov, (r.edge,) * 3, r.batch, r.mode, r.precision, gpu) if r.edge else None
    big = (predicted_epoch(r.arch, ov, tuple(r.batch_size), r.max_batch, r.mode, r.precision, gpu)
           if r.max_batch else None)
    return {"gpu": gpu, f"cube_epoch_s ({EPOCH_STEPS} steps)": cube and round(cube, 1),
            f"batch_epoch_s ({EPOCH_STEPS} steps)": big and round(big, 1)}


def _triple(text: str, what: str) -> tuple[float, float, float]:
    """``500x512x512`` -> three numbers; one line naming the option otherwise."""
    try:
        vals = tuple(float(p) for p in text.lower().split("x"))
    except ValueError:
        fail(f"{what} {text!r}: give three numbers DxHxW, e.g. 500x512x512")
    if len(vals) != 3:
        fail(f"{what} {text!r}: a fingerprint needs three spatial dimensions (DxHxW); got {len(vals)}")
    return vals  # type: ignore[return-value]


@app.command("plan")
def plan_(
    shape: Annotated[str | None, typer.Option(help="median image shape DxHxW (nnU-Net's axis order), e.g. 500x512x512",
                                              rich_help_panel="fingerprint (one of)")] = None,
    spacing: Annotated[str, typer.Option(help="median spacing DxHxW with --shape, e.g. 1x0.78x0.78",
                                         rich_help_panel="fingerprint (one of)")] = "1x1x1",
    channels: Annotated[str, typer.Option(help="input channels with --shape: a count (2) or their names (CT, or "
                                               "T1,T2: CT gets nnU-Net's CT normalisation)",
                                          rich_help_panel="fingerprint (one of)")] = "1",
    classes: Annotated[int, typer.Option(help="classes with --shape, background included",
                                         rich_help_panel="fingerprint (one of)")] = 3,
    cases: Annotated[int, typer.Option(help="training cases with --shape (caps the batch: nnU-Net sees at most 5% of "
                                            "the dataset per step)", rich_help_panel="fingerprint (one of)")] = 100,
    fingerprint: Annotated[Path | None, typer.Option(help="an nnU-Net dataset_fingerprint.json (channels and classes "
                                                          "from the dataset.json beside it, else --channels/--classes)",
                                                     rich_help_panel="fingerprint (one of)")] = None,
    dataset: Annotated[Path | None, typer.Option(help="a raw nnU-Net dataset folder (dataset.json, imagesTr): only "
                                                      "image headers are read", rich_help_panel="fingerprint (one of)")] = None,
    planner: Annotated[Planner, typer.Option(help="nnunetv2's planner: ExperimentPlanner, nnUNetPlannerResEncM / L / XL")]
    = Planner.DEFAULT,
    gpu_memory_target: Annotated[float | None, typer.Option(help="GB the planner targets [default: the planner's: "
                                                                 "8, 8, 24, 40]")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the plans here: FILE.json, or a folder "
                                                                       "(DIR/<plans name>.json); nnU-Net's dataset.json "
                                                                       "beside it")] = None,
) -> None:
    """nnU-Net's own plans for a dataset fingerprint (nnunetv2's planners; no data is preprocessed): each 3D
    configuration's patch, batch, network and stages; `bench run --plans FILE` runs them."""
    from architectures import nnunet_planner as NP
    from architectures import nnunet_plans as NPL

    given = [n for n, v in (("--shape", shape), ("--fingerprint", fingerprint), ("--dataset", dataset)) if v is not None]
    if len(given) != 1:
        fail(f"give one fingerprint: --shape (with --spacing, --channels, --classes), --fingerprint FILE or --dataset "
             f"FOLDER; got {', '.join(given) or 'none'}")
    names: list[str] | int = int(channels) if channels.isdigit() else [c.strip() for c in channels.split(",") if c.strip()]
    if shape is not None:
        dims = _triple(shape, "--shape")
        if any(d != int(d) for d in dims):
            fail(f"--shape {shape!r}: whole voxels, e.g. 500x512x512")
        fp = _validated(NP.Fingerprint.from_median, tuple(int(d) for d in dims), _triple(spacing, "--spacing"), names,
                        classes, cases)
    elif fingerprint is not None:
        fp = _validated(NP.Fingerprint.from_json, fingerprint, None, names, classes)
    else:
        fp = _validated(NP.Fingerprint.from_raw, dataset)
    folder = None  # -o DIR (an existing folder, or a path not ending in .json): DIR/<plans name>.json
    if output is not None:
        folder = output if output.is_dir() or output.suffix.lower() != ".json" else None
        _writable_dir(folder or (output.parent if str(output.parent) else Path(".")))
    with console.status(f"planning with nnunetv2's {NP.PLANNERS[planner.value][1]}"):
        plans, ds = _validated(NP.plan_files, fp, planner.value, gpu_memory_target)
    table = Table(title=f"{plans['plans_name']} ({plans['experiment_planner_used']}, "
                        f"{plans[NP.PROVENANCE]['gpu_memory_target_in_gb']:g} GB target) for "
                        f"{'x'.join(map(str, fp.median_shape))} at {'x'.join(f'{s:g}' for s in fp.median_spacing)}")
    rows = NPL.describe(plans)
    for col in rows[0] if rows else ["configuration"]:
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(str(v)) for v in r.values()))
    console.print(table)
    if output is None:
        console.print("(not written: -o FILE writes the plans, and nnU-Net's dataset.json beside them)")
        return
    if folder is not None:
        output = folder / f"{plans['plans_name']}.json"
    NPL.save(plans, output)
    beside = output.with_name("dataset.json")
    text = json.dumps(ds, indent=4)
    if beside.exists() and beside.read_text() != text:
        console.print(f"[yellow]note:[/] {escape(str(beside))} exists and differs: left as it is (bench run --plans "
                      "reads channels and classes from it)", highlight=False)
    else:
        beside.write_text(text)
    console.print(f"written: {escape(str(output))} and {escape(str(beside))}; run it with: bench run --backend predict "
                  f"--plans {escape(str(output))} --configuration 3d_fullres", highlight=False)


@app.command()
def paper(
    backend: Annotated[PaperBackend, typer.Option(help="predict (any machine) or cuda (also measure)")] = "predict",
    device: DeviceAlias = None,
    out: Annotated[Path, typer.Option(help="results directory")] = RESULTS,
    timeout: Annotated[float, typer.Option(help="seconds per measured configuration")] = DEFAULT_TIMEOUT,
    jobs: JobsOption = None,
    cascade_reading: Annotated[list[CascadeReading] | None, typer.Option(
        help="Table 3's nnU-Net cascade, stage 1: the paper's reading (whole x2-downsampled volume, batch 1) or as "
             "nnU-Net plans it (3d_lowres's planned patch and batch); repeatable [default: both]")] = None,
    dice: Annotated[bool, typer.Option("--dice", help="instead: the paper's Dice ranking, U-net, meU-net and the cascade "
                                                      "trained on the phantom at equal memory over seeds (CPU; into "
                                                      "--out's results.jsonl, ranking.csv, ranking.md)")] = False,
    size: Annotated[int | None, typer.Option(help="--dice: standard patch edge (paper 160) [default: 16]")] = None,
    batch: Annotated[int | None, typer.Option(help="--dice: batch (paper 4) [default: 2]")] = None,
    train_iterations: Annotated[int | None, typer.Option(help="--dice: iterations per stage [default: 200]")] = None,
    data: Annotated[str | None, typer.Option(help="--dice: phantom or phantom:DxHxW [default: phantom:64x48x48]")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="--dice: seeds, repeatable [default: 0 1 2]")] = None,
    precision: Annotated[Precision, typer.Option(help="precision of the readings (the paper: AMP, fp16)")] = Precision.FP16,
) -> None:
    """The paper's Tables 1-4 (training memory) beside its own GB figures, with the ratios; with --dice its
    Dice ranking (cascade >= meU-net >= U-net) re-measured on the phantom."""
    import pandas as pd

    from .results import paper as pp
    from .sweep import store
    from .sweep.executor import run_sweep
    from .sweep.expand import label, resolve_backend

    jobs = _jobs(jobs)
    if dice:
        return _paper_dice(out, timeout if timeout != DEFAULT_TIMEOUT else None, jobs, size, batch, train_iterations, seed,
                           data)
    given = [n for n, v in (("--size", size), ("--batch", batch), ("--train-iterations", train_iterations),
                            ("--seed", seed), ("--data", data)) if v]
    if given:
        fail(f"{given[0]} is a --dice option: add --dice")
    be = Backend(_validated(resolve_backend, device or backend))
    if be not in (Backend.PREDICT, Backend.CUDA):
        fail(f"backend must be predict or cuda; got {be.value!r}")
    rows = _validated(pp.paper_rows, list(dict.fromkeys(cascade_reading or CascadeReading)))
    measured = None
    if be is Backend.CUDA:
        configs = list(dict.fromkeys(c for r in rows for p in r.parts for c in pp.part_configs(p, Backend.CUDA)))
        with bar(len(configs), "measuring") as b:
            run_sweep(configs, out, timeout, on_start=lambda c: b.start(label(c)), on_done=lambda c, r: b.advance(),
                      on_skip=lambda c, why: b.advance())
        measured = store.load(out)
    reads = list(dict.fromkeys([pp.Reading(), *pp.readings(precision.value)]))
    with bar(len(pp.reading_jobs(rows, reads)), "predicting every reading") as b:
        peaks = pp.predict_readings(rows, reads, jobs,
                                    progress=lambda job: (b.start(f"{job[0]} {job[1]} {dict(job[2])}"), b.advance()))
    df = pp.table(rows, measured=measured, peaks=pp.as_built_peaks(rows, peaks))
    verdict = pp.cascade_verdict(df, rows)
    long = pp.readings_table(rows, reads, peaks)
    scores = pp.reading_scores(long)
    note = "Measured on CUDA and predicted." if measured is not None else "Predicted (no GPU used)."
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "paper.csv", index=False)
    long.to_csv(out / "paper_readings.csv", index=False)
    (out / "paper.md").write_text(pp.markdown(df, note) + (f"\n{verdict}\n" if verdict else "") + "\n\n"
                                  + pp.readings_markdown(long, scores))
    show = df.round(2)
    table = Table(title="the paper's training memory (GB) and ours (GiB)")
    for col in show.columns:
        table.add_column(col, overflow="fold", max_width=48 if col == "note" else None)
    for r in show.itertuples(index=False):
        table.add_row(*("" if (not isinstance(v, str) and pd.isna(v)) else escape(str(v)) for v in r))
    console.print(table)
    if verdict:
        console.print(escape(verdict), highlight=False)
    _print_readings(long, scores, pp.workspace_model_available())
    console.print(f"written: {escape(str(out / 'paper.csv'))}, {escape(str(out / 'paper_readings.csv'))}, "
                  f"{escape(str(out / 'paper.md'))}", highlight=False)


def _print_readings(long, scores, workspace: bool) -> None:
    """Every row's error under each reading (one column per reading, best first), the readings' legend and
    the best one's figures."""
    # as many reading columns as the terminal shows whole (best first); every reading is in paper_readings.csv
    shown = list(scores["reading"])[:max(1, (console.width - 36) // 8)]
    cut = f"; the best {len(shown)} of {len(scores)}, all in paper_readings.csv" if len(shown) < len(scores) else ""
    matrix = Table(title=f"error of every row under each reading (predicted GiB / paper GB - 1; best reading first{cut})")
    matrix.add_column("row", overflow="fold", min_width=24, max_width=34)
    matrix.add_column("GB")
    for r in shown:
        matrix.add_column(f"R{r}", justify="right", no_wrap=True)
    for (t, conf, gb), part in long.groupby(["table", "configuration", "paper_gb"], sort=False):
        err = dict(zip(part["reading"], part["error"]))
        mark = "" if part["measured_by_paper"].iloc[0] else " (estimated)"
        matrix.add_row(escape(f"T{t} {conf}{mark}"), f"{gb:g}", *(f"{err[r]:+.0%}" for r in shown))
    console.print(matrix)
    for r in scores.itertuples():
        console.print(f"  R{r.reading}: {escape(r.reading_label)}: worst {r.worst_abs_error_own_rows:+.0%} "
                      f"({escape(r.worst_row)}), {r.rows_within_10pct} rows within 10%, median "
                      f"{r.median_abs_error_own_rows:.0%}", highlight=False)
    best = scores.iloc[0]
    rows = long[long["reading"] == best.reading]
    console.print(f"best single reading R{best.reading} ({escape(best.reading_label)}): "
                  + "; ".join(f"T{r.table} {escape(r.configuration)} {r.predicted_gib:.2f} vs {r.paper_gb:g} ({r.error:+.0%})"
                              for r in rows.itertuples()), highlight=False)
    if not workspace:
        console.print("[yellow]cuDNN's benchmark workspaces are not predicted here (no device model): those readings "
                      "are left out[/]")


def _paper_dice(out: Path, timeout: float | None, jobs: int | None, size: int | None, batch: int | None,
                iterations: int | None, seeds: list[int] | None, data: str | None) -> None:
    """``bench paper --dice``: the equal-memory plan by prediction, the Dice runs through the sweep engine
    (resumable: recorded seeds are skipped), then the ranking table (:mod:`bench.results.ranking`)."""
    import os

    import architectures

    from .parallel import cores
    from .results import ranking as rk
    from .sweep import executor, store
    from .sweep.expand import label
    from .sweep.store import check_writable
    from .train.dice_run import phantom_shape

    defaults = rk.Scale()
    if iterations is not None and iterations < 1:
        fail(f"--train-iterations must be >= 1; got {iterations}")
    if batch is not None and batch < 1:
        fail(f"--batch must be >= 1; got {batch}")
    if seeds and len(set(seeds)) != len(seeds):
        fail(f"--seed repeats a seed: {seeds}")
    if data is not None and phantom_shape(data) is None:
        fail(f"--data must be phantom or phantom:DxHxW (the paper's ranking is measured on the phantom); got {data!r}")
    scale = rk.Scale(edge=size or defaults.edge, batch=batch or defaults.batch,
                     iterations=iterations or defaults.iterations, seeds=tuple(seeds or defaults.seeds),
                     data=data or defaults.data)
    _validated(architectures.spec("meunet").check_size, (scale.edge,) * 3, Mode.TRAIN)
    try:
        check_writable(out)
    except OSError as exc:
        fail(str(exc))
    console.print(f"scale: {escape(scale.describe())}", highlight=False)
    with console.status("equal memory by prediction (meU-net's peak is the U-net box's budget)"):
        the_plan = _validated(rk.plan, scale)
    for arch, sz in the_plan.sizes.items():
        console.print(f"  {arch}: {escape(architectures.spec(arch).patch_label(sz))} b{scale.batch}, "
                      f"predicted {the_plan.peaks[arch] / 2**30:.3f} GiB", highlight=False)
    configs = rk.configs(scale, the_plan)
    timeout = timeout or _dice_timeout(configs)
    n_jobs = jobs or cores()
    store.begin_sweep(out, configs, executor=ExecutorKind.LOCAL.value, backend=Backend.CPU.value)
    counts: dict[str, int] = {}
    log = None
    pool = _validated(executor.local_pool, Backend.CPU, n_jobs, [], cores(), lambda line: log and log(line))
    with bar(len(configs), "training") as b:
        log = lambda line: b.print(f"    {line}")  # noqa: E731
        executor.run_sweep(configs, out, timeout, executor=pool, on_start=lambda cfg: b.start(label(cfg)),
                           on_done=_recorder(b, counts, label), on_skip=lambda cfg, why: b.advance())
        b.done("runs done")
    seeds_df = rk.per_seed(store.load(out), configs, the_plan)
    summ = rk.summary(seeds_df)
    budget = os.environ.get("SEGMEM_CPU_TIME_BUDGET_S")
    command = (f"SEGMEM_CPU_TIME_BUDGET_S={budget} " if budget else "") + "bench paper --dice " + " ".join(
        a for a in sys.argv[1:] if a not in ("paper", "--dice"))
    seeds_df.to_csv(out / "ranking_seeds.csv", index=False)
    summ.to_csv(out / "ranking.csv", index=False)
    (out / "ranking.md").write_text(rk.markdown(summ, seeds_df, scale, command.strip()))
    for line in rk.verdict(summ, seeds_df):
        console.print(escape(line), highlight=False)
    console.print(f"written: {escape(str(out / 'ranking.csv'))}, ranking_seeds.csv, ranking.md", highlight=False)
    if (seeds_df["status"] != "ok").any():
        fail("some Dice runs did not finish ok; see ranking_seeds.csv's status column", code=1)


@app.command("validate-published", hidden=True)
def validate_published(
    fit: Annotated[bool, typer.Option("--fit", help="re-fit the fitted constants on the fit rows")] = False,
    to: Annotated[Path, typer.Option(help="where the validation tables go")] = Path("reports/validation"),
) -> None:
    """The old name of ``bench validate --published``."""
    _validate_published(fit, to)


def _validate_recorded(runs: Path, jobs: int | None) -> None:
    """``bench validate --recorded RUNS``: the measured configurations of a recorded run predicted again here."""
    from .results import validate as V
    from .sweep import store
    from .version import code_version

    if runs.is_file():
        fail(f"--recorded takes the folder bench validate wrote (holding results.jsonl), not a file; got {runs}")
    if not store.path(runs).exists():
        fail(f"no bench validate records in {runs} (expected {store.path(runs)})")
    df = _repredicted(runs, jobs)
    csv, md = V.write(df, runs.parent, f"{runs.name}.repredicted", len(V.grid()),
                      title=f"{runs.name}, predicted again by segmem {code_version()}")
    console.print(escape(md.read_text()), highlight=False)
    console.print(f"{escape(str(csv))}, {escape(str(md))}", highlight=False)


def _repredicted(runs: Path, jobs: int | None, configs: list | None = None) -> Any:
    """The configurations measured on CUDA in ``runs`` (of ``configs``, default the whole grid) predicted again by
    this code on ``jobs`` processes, with a progress bar (:func:`bench.results.validate.repredict`)."""
    from .results import validate as V

    rows = _validated(V.measured, runs, configs=configs)
    with bar(len(rows), f"predicting again the configurations measured in {runs.name}") as b:
        return V.repredict(runs, rows, jobs, progress=lambda _job: b.advance(), configs=configs)


def _validate_published(fit: bool, to: Path) -> None:
    """``bench validate --published``: the memory figures, then nnU-Net's epoch times; tables written to ``to``."""
    _validate_published_memory(fit, to)
    _validate_published_times(fit, to)


def _validate_published_memory(fit: bool, to: Path) -> None:
    """Predicted against published GPU memory figures (bench/results/published_memory.py); errors by split."""

    from .measure import device
    from .results import published_memory as M

    factor, kernels = None, None
    if fit:
        with console.status("fitting the workspace factor and the context's kernels on the fit rows"):
            factor, kernels = M.fit()
        console.print(f"fitted on the fit rows: workspace factor {factor:g} (benchmark on), training kernels "
                      f"{kernels // 2**20} MiB; put them in bench/measure/device.py (WORKSPACE_FACTOR, TRAINING_KERNELS) "
                      "to use them", highlight=False)
    with bar(len(M.FIGURES), "predicting published GPU memory figures") as b:
        pred = M.predict_rows(factor=factor, kernels=kernels, progress=lambda i: (b.start(i), b.advance()))
    used = factor if factor is not None else device.WORKSPACE_FACTOR
    _errors_table(f"predicted vs published GPU memory (GiB; nnU-Net's training: {M.NNUNET_RECIPE}; "
                  f"workspace factor {used:g})",
                  pred[["id", "gpu", "measured", "split", "network", "patch", "batch", "published_gib", "pred_gib",
                        "error", "verdict"]], "{:.2f}")
    console.print(escape(M.summary(pred).to_string(index=False, float_format="{:.1%}".format)), highlight=False)
    _write_table(pred.round({"pred_gib": 3, "error": 4}), to / M.TABLE.name)


def _errors_table(title: str, shown, number: str) -> None:
    """A validation table on the console: errors as signed percentages, other numbers as ``number`` formats
    them, a missing prediction (the model ran out of memory) as OOM."""
    import pandas as pd

    table = Table(title=title)
    for col in shown.columns:
        table.add_column(col)
    for r in shown.itertuples(index=False):
        table.add_row(*("OOM" if isinstance(v, float) and pd.isna(v) else f"{v:+.1%}" if k == "error"
                        else number.format(v) if isinstance(v, float) else escape(str(v))
                        for k, v in zip(shown.columns, r, strict=True)))
    console.print(table)


def _write_table(df, dest: Path) -> None:
    """A validation table's CSV, and a line saying where it went."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest, index=False)
    console.print(f"written: {escape(str(dest))}", highlight=False)


def _validate_published_times(fit: bool, to: Path) -> None:
    """Predicted epoch times against nnU-Net's published ones (7 GPUs x 3 tasks); errors by split."""
    import pandas as pd

    from .results import published as P

    with bar(len(P.TASKS), "tracing nnU-Net v1 3d_fullres steps") as b:
        pred, scales = P.validate(fit, progress=lambda t: (b.start(t), b.advance()))
    if scales:
        console.print(f"fitted scales (tensor-core compute, CUDA-core compute, bandwidth, launch s): {scales}; "
                      "put them in bench/measure/roofline.py FITTED_SCALES to use them", highlight=False)
    _errors_table("predicted vs published nnU-Net v1 epoch times (3d_fullres dummy, s)",
                  pred[["task", "gpu", "split", "published_epoch_s", "pred_epoch_s", "error"]], "{:.1f}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        console.print(escape(P.summary(pred).to_string(index=False, float_format="{:.1%}".format)), highlight=False)
        console.print(escape(P.ranking(pred)[["task", "pairs", "misordered", "which"]].to_string(index=False)),
                      highlight=False)
    _write_table(pred.round({"pred_epoch_s": 2, "error": 4}), to / P.TABLE.name)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
