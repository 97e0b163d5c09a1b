"""``bench list``, ``bench run`` (the sweep: local workers, SLURM, Dice runs, nnU-Net plans), ``bench status``,
``bench repair``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import record as R
from ..console import bar, console, fail
from ..options import (
    Backend,
    BackendChoice,
    ExecutorKind,
    Inferer,
    Mode,
    Precision,
    Weighting,
    parse_overrides,
    parse_size,
)
from .common import (
    DEFAULT_TIMEOUT,
    RESULTS,
    ArchOption,
    Classes,
    DeviceAlias,
    GpuOption,
    InChannels,
    OutOption,
    SetOption,
    app,
    backend_or_alias,
    catalogue_gpu,
    check_writable_dir,
    data_shape,
    dice_timeout,
    is_gpu_name,
    positive,
    recorder,
    validated,
    writable_dir,
)


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
                  f"({'installed' if monai_nets.available() else 'needs the monai extra: ' + escape(monai_nets.INSTALL)}), "
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
    dice: Annotated[bool, typer.Option("--dice", help="also train on --data and record test Dice (channels "
                                                      "and classes: the data's)")] = False,
    data: Annotated[str, typer.Option(help="Dice data: phantom, phantom:DxHxW, an nnU-Net raw dataset or a "
                                           "TIFF folder (images/, labels/)")] = "phantom",
    train_iterations: Annotated[int | None, typer.Option(help="Dice training budget per stage in iterations "
                                                              "(default 1000 on CPU, 20000 on CUDA)")] = None,
    train_minutes: Annotated[float | None, typer.Option(help="Dice training budget per stage in minutes (the Dice "
                                                             "then depends on the machine's speed; with "
                                                             "--train-iterations: whichever ends first)")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Dice runs: seed of initialisation and patch sampling")] = 0,
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
    from ..parallel import cores
    from ..sweep import executor, store
    from ..sweep.expand import expand, label, resolve_backend, size_warnings, visible_gpus
    from ..sweep.store import check_writable

    if jobs is not None and jobs < 1:
        fail(f"--jobs must be >= 1; got {jobs}")
    be = validated(resolve_backend, backend_or_alias(backend, device, "auto"))
    given_memory = validated(_gpu_memory, gpu_memory) if gpu_memory is not None else None
    shape = data_shape(in_channels, classes)
    if plans is not None or configuration:
        if dice:
            fail("--dice does not take --plans yet (a Dice run's sliding window needs one divisor for every axis); "
                 "run the plans for memory and time without --dice")
        arch, shape = _plans_run(plans, arch, configuration, in_channels, classes)
    if dice:
        dice_opts, shape = _dice_options(data, train_minutes, train_iterations, weighting, seed, be, inferer,
                                         in_channels, classes)
    else:
        given = [n for n, v in (("--data", data != "phantom"), ("--train-iterations", train_iterations is not None),
                                ("--train-minutes", train_minutes is not None), ("--seed", seed != 0),
                                ("--weighting", weighting is not Weighting.CENTRE),
                                ("--inferer", inferer is not Inferer.SEGMEM)) if v]
        if given:
            fail(f"{given[0]} is an option of Dice runs: add --dice")
        dice_opts = None
    if no_skip and be is Backend.PREDICT:
        fail("--no-skip measures configurations predicted not to fit: it is for --backend cuda or cpu")
    if no_skip and gpu_memory is None and be is not Backend.CUDA:
        fail("--no-skip measures configurations predicted not to fit, and nothing is screened here: screening needs "
             "--gpu-memory (or a CUDA run, which screens against its GPU)")
    configs = validated(lambda: expand(
        arch or ["meunet"], [parse_size(s) for s in size or []], batch or [], mode or [Mode.TRAIN], precision or [],
        be, checkpointing, channels_last, parse_overrides(set_ or []), repeats, dice_opts, *shape))
    _divisor_notes(configs)
    if gpu is not None:
        gpu_name = catalogue_gpu(gpu)
        configs = [dataclasses.replace(c, gpu=gpu_name) for c in configs]
    conf = _alloc_conf(alloc_conf)
    if conf:
        configs = [dataclasses.replace(c, alloc_conf=conf) for c in configs]
    positive("--timeout", timeout, "seconds")
    if dice_opts is not None and timeout == DEFAULT_TIMEOUT:
        timeout = dice_timeout(configs)
    if be is Backend.PREDICT and gpu_memory is not None:
        named = catalogue_gpu(gpu_memory) if gpu is None and is_gpu_name(gpu_memory) else None
        configs = [dataclasses.replace(c, gpu_memory=given_memory, gpu=c.gpu or named or "") for c in configs]
        gpu_memory = None
    budget = _gpu_budget(given_memory, be, executor_kind, no_skip)
    slurm = _slurm_executor(executor_kind, jobs, be, out, slurm_config, dict(
        partition=partition, account=account, time_min=time_limit, gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task, mem=mem, array_parallelism=array_parallelism, sbatch=sbatch))
    gpus = visible_gpus() if be is Backend.CUDA and slurm is None else []
    n_jobs = jobs or (len(gpus) if be is Backend.CUDA else cores())
    log = None  # set once the bar exists
    pool = None if slurm else validated(executor.local_pool, be, n_jobs, gpus, cores(), lambda line: log and log(line))
    if pool is not None and be is Backend.CUDA:  # the GPUs measure while the other cores predict ahead of them
        import torch

        ahead = executor.Predictions(executor.ahead_jobs(cores(), len(pool)))
        pool = [executor.PredictAheadExecutor(ex, ahead, torch.cuda.get_device_name(i)) for i, ex in enumerate(pool)]
    # every option is checked: now the folders (nothing is created for a command refused above)
    if snapshot is not None:
        check_writable_dir(snapshot)
    try:
        check_writable(out)
    except OSError as exc:
        fail(str(exc))
    if snapshot is not None:
        configs = [dataclasses.replace(c, snapshot_dir=str(writable_dir(snapshot))) for c in configs]
    for warning in size_warnings(configs):
        console.print(f"[yellow]note:[/] {escape(warning)}", highlight=False)
    if be is Backend.CPU:
        console.print("[yellow]No CUDA GPU: measuring on the CPU. CPU figures are not GPU figures; "
                      "each record also carries the predicted CUDA peak (pred_* columns).[/]")
    store.begin_sweep(out, configs, label, executor=executor_kind.value, backend=be.value)
    counts: dict[str, int] = {}
    if budget is not None:
        screen_gpu = _screen_gpu(gpu_memory, be)
        screens = [executor.ScreeningExecutor(budget, ex, screen_gpu) for ex in executor.local_pool(
            Backend.PREDICT, cores(), [], cores())]
        with bar(len(configs), f"predicting against {budget / 1e9:g} GB") as b:
            skipped = executor.run_sweep(configs, out, timeout, force, retry_failed, screens,
                                         on_done=recorder(b, counts, label),
                                         on_skip=lambda cfg, why: b.advance(), budget_bytes=budget)
            b.done(f"{len(skipped)} predicted not to fit")
        left = {r[R.KEY] for r in skipped}
        configs_to_run = [c for c in configs if c.key() not in left]
    else:
        configs_to_run = configs
    with _said_if_interrupted(counts, len(configs), out), bar(len(configs_to_run), "running") as b:
        def skip(cfg, why: str) -> None:
            counts[f"skipped ({why})"] = counts.get(f"skipped ({why})", 0) + 1
            b.advance()

        log = lambda line: b.print(f"    {line}")  # noqa: E731
        if slurm is not None:
            console.print(f"submitting to SLURM: {escape(slurm.options.describe())}; `bench status --out {escape(str(out))}` "
                          "follows it", highlight=False)
        executor.run_sweep(configs_to_run, out, timeout, force, retry_failed, slurm or pool,
                           on_start=lambda cfg: b.start(label(cfg)), on_done=recorder(b, counts, label), on_skip=skip,
                           no_skip=no_skip, budget_bytes=budget)
        b.done("sweep done")
    if snapshot is not None:
        _draw_timelines(snapshot)
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    console.print(f"{len(configs)} configuration(s): {parts}. Results: {escape(str(out / 'results.jsonl'))}",
                  highlight=False)
    if any(k.startswith("skipped (recorded") for k in counts):
        console.print("(recorded configurations were skipped; --force re-runs them, --retry-failed the failed ones"
                      + ("; no snapshot was written for them" if snapshot is not None else "") + ")")
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
    names = validated(nnunet_plans.run_archs, plans, arch, configuration)
    return names, data_shape(in_channels, classes, nnunet_plans.data_shape(plans))


def _draw_timelines(folder: Path) -> None:
    """The timeline plot of each snapshot in ``folder`` that has none yet (or an older one), drawn here after
    the sweep rather than in the workers (see :mod:`bench.results.timeline`)."""
    from ..results import timeline

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


@contextlib.contextmanager
def _said_if_interrupted(counts: dict[str, int], total: int, out: Path):
    """Ctrl-C during a sweep: one line saying what is kept and how to go on (exit 130), not a bar left mid-way."""
    try:
        yield
    except KeyboardInterrupt:
        done = sum(counts.values())
        console.print(f"[yellow]interrupted[/]: {done} of {total} configuration(s) recorded or skipped, in "
                      f"{escape(str(out / 'results.jsonl'))}; the same command again runs the rest", highlight=False)
        raise typer.Exit(130) from None


def _gpu_memory(text: str) -> int:
    """``--gpu-memory``'s bytes (:func:`bench.sweep.expand.gpu_memory`), a size under the smallest CUDA context
    refused: every configuration would be screened out (1MB typed for 1GB). The context's figures are read only
    for a size: a sweep given none keeps the measurement stack out of this process."""
    from ..sweep.expand import gpu_memory

    if text.strip().lower() == "auto":
        return gpu_memory(text)
    from ..measure.device import least_context

    return gpu_memory(text, least=least_context())


def _gpu_budget(given: int | None, be: Backend, kind: ExecutorKind, no_skip: bool) -> int | None:
    """The GPU memory configurations are screened against before they run (``given``: --gpu-memory's bytes), or
    None (no screening; with --backend predict the capacity is the prediction's own, set on the configurations)."""
    if be is Backend.PREDICT or no_skip:
        return None
    if given is None:
        return _gpu_memory("auto") if (be is Backend.CUDA and kind is ExecutorKind.LOCAL) else None
    return given


def _screen_gpu(text: str | None, be: Backend) -> str:
    """The GPU whose CUDA context the ``--gpu-memory`` screen predicts with where a configuration names none
    (``--gpu``): a catalogue GPU given as ``--gpu-memory``, else on CUDA the visible GPU (the one a cuda run's
    own prediction takes), else none (the generic context figure, bench.measure.device)."""
    if text is not None and is_gpu_name(text):
        return catalogue_gpu(text)
    if be is not Backend.CUDA:
        return ""
    import torch

    from ..measure import gpus

    g = gpus.find(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    return g.name if g else ""


def _slurm_executor(kind: ExecutorKind, jobs: int | None, be: Backend, out: Path, config: Path | None,
                    flags: dict[str, Any]):
    """The SLURM executor of ``--executor slurm`` (every option checked here, before anything is
    submitted), or None for local runs (where SLURM options are refused)."""
    from ..sweep import slurm

    given = [k for k, v in flags.items() if v not in (None, [])] + (["slurm_config"] if config else [])
    if kind is ExecutorKind.LOCAL:
        if given:
            fail(f"--{given[0].replace('_', '-').replace('time-min', 'time-limit')} is a SLURM option: "
                 "add --executor slurm")
        return None
    if jobs is not None:
        fail("--jobs is for local runs; SLURM runs --array-parallelism jobs of the array at once")
    validated(slurm.check_available)
    base = slurm.SlurmOptions(**validated(slurm.SlurmOptions.from_file, config)) if config else slurm.SlurmOptions()
    if flags.get("gpus_per_task") is None and config is None:
        flags["gpus_per_task"] = 1 if be is Backend.CUDA else 0
    options = validated(base.merged, **flags)
    return slurm.SlurmExecutor(options, (out / "slurm").resolve())


def _divisor_notes(configs) -> None:
    """Say how the suite found the input divisibility of networks that did not declare it (probed)."""
    import architectures

    # (by repr: an override may be a list, --set encoder_channels=[8,16,32,64,128], which does not hash)
    for name, ov in {repr((c.arch, c.overrides)): (c.arch, c.overrides) for c in configs}.values():
        note = architectures.spec(name).divisor_note(**dict(ov))
        if note:
            console.print(f"[yellow]{escape(note)}[/]", highlight=False)


def _dice_options(data: str, minutes: float | None, iterations: int | None, weighting: Weighting, seed: int,
                  backend: Backend, inferer: Inferer, in_channels: int | None,
                  classes: int | None) -> tuple[dict, tuple[int, int]]:
    """Validate the Dice options (and the dataset itself, before anything trains); returns them (the budget
    resolved, so that a configuration and its key name the iterations it trains) and the data's (input
    channels, classes), which --in-channels / --classes may repeat but not contradict."""
    from ..train.data.datasets import DatasetError
    from ..train.data.phantom import LABELS
    from ..train.dice_run import budget, open_dataset, phantom_shape

    positive("--train-minutes", minutes, "minutes")
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
        from architectures.monai_nets import INSTALL, available

        if not available():
            fail(f"--inferer monai needs MONAI: {INSTALL}")
    minutes, iterations = budget(minutes, iterations, backend.torch_device)
    return {"data": data, "train_minutes": minutes, "train_iterations": iterations, "weighting": weighting.value,
            "seed": seed, "inferer": inferer.value}, shape


def _alloc_conf(conf: str | None) -> str:
    """``--alloc-conf``, else ``PYTORCH_CUDA_ALLOC_CONF``, checked and written the one canonical way (so that one
    setting is one key), or one clear line. Options the model does not follow are kept for a CUDA run and said."""
    text = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") if conf is None else conf
    if not text.strip():
        return ""
    from ..measure.allocator import AllocatorSettings, near_miss  # (torch-free; a sweep's parent imports it when asked)

    typo = near_miss(text)
    if typo:
        fail(f"--alloc-conf: unknown allocator option {typo[0]!r}; did you mean {typo[1]}? (PyTorch refuses an option it "
             "does not know)")
    try:
        return AllocatorSettings.parse(text).conf()
    except ValueError as exc:
        if "is not modelled" not in str(exc):
            fail(f"--alloc-conf: {exc}")
        console.print(f"[yellow]note:[/] {escape(str(exc))}: the prediction leaves it out; a CUDA run passes it to "
                      "PyTorch as given (PyTorch says there whether it knows it)", highlight=False)
        return ",".join(s.strip() for s in text.split(",") if s.strip())


@app.command()
def status(
    out: OutOption = RESULTS,
    all_: Annotated[bool, typer.Option("--all", help="list every configuration, not only running and failed ones")] = False,
) -> None:
    """Pending / running / done / failed configurations of the sweeps on --out (one in flight included)."""
    from ..sweep import store

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
    from ..sweep import store

    if not store.path(out).exists():
        fail(f"no results store at {store.path(out)}")
    moved = store.repair(out)
    where = escape(str(store.path(out).parent / store.REJECTED))
    console.print(f"{moved} line(s) moved aside into {where}" if moved else "the store is whole: nothing to repair",
                  highlight=False)
