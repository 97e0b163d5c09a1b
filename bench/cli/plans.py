"""``bench plan``: nnU-Net's planner on a dataset fingerprint, the plans segmem runs with ``--plans``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..console import console, fail
from ..options import (
    Planner,
)
from .common import (
    app,
    positive,
    validated,
    writable_dir,
)


def _triple(text: str, what: str) -> tuple[float, float, float]:
    """``500x512x512`` -> three numbers; one line naming the option otherwise."""
    try:
        vals = tuple(float(p) for p in text.lower().split("x"))
    except ValueError:
        fail(f"{what} {text!r}: give three numbers DxHxW, e.g. 500x512x512")
    if len(vals) != 3:
        fail(f"{what} {text!r}: a fingerprint needs three spatial dimensions (DxHxW); got {len(vals)}")
    if not all(math.isfinite(v) and v > 0 for v in vals):
        fail(f"{what} {text!r}: each of DxHxW must be a positive number")
    return vals  # type: ignore[return-value]


def _number(text: str) -> bool:
    """Whether a channel name is a number (-2, 2.5): a count gone wrong, not a channel's name."""
    try:
        float(text)
    except ValueError:
        return False
    return True


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
                                                                       "(DIR/PLANS_NAME.json); nnU-Net's dataset.json "
                                                                       "beside it")] = None,
) -> None:
    """nnU-Net's own plans for a dataset fingerprint (nnunetv2's planners; no data is preprocessed): each 3D
    configuration's patch, batch, network and stages; `bench run --plans FILE` runs them."""
    from architectures import nnunet_planner as NP
    from architectures import nnunet_plans as NPL

    positive("--gpu-memory-target", gpu_memory_target, "GB")
    given = [n for n, v in (("--shape", shape), ("--fingerprint", fingerprint), ("--dataset", dataset)) if v is not None]
    if len(given) != 1:
        fail(f"give one fingerprint: --shape (with --spacing, --channels, --classes), --fingerprint FILE or --dataset "
             f"FOLDER; got {', '.join(given) or 'none'}")
    shape_only = [n for n, v in (("--spacing", spacing != "1x1x1"), ("--cases", cases != 100)) if v]
    if shape is None and shape_only:
        fail(f"{shape_only[0]} describes a fingerprint given by --shape; {given[0]} has its own")
    if dataset is not None and (channels != "1" or classes != 3):
        fail("--dataset reads channels and classes from its dataset.json: no --channels or --classes with it")
    names: list[str] | int = int(channels) if channels.isdigit() else [c.strip() for c in channels.split(",") if c.strip()]
    if not names or not isinstance(names, int) and any(_number(c) for c in names):
        fail(f"--channels is a count of 1 or more (e.g. 2) or the channels' names (CT, or T1,T2); got {channels!r}")
    if shape is not None:
        dims = _triple(shape, "--shape")
        if any(d != int(d) for d in dims):
            fail(f"--shape {shape!r}: whole voxels, e.g. 500x512x512")
        fp = validated(NP.Fingerprint.from_median, tuple(int(d) for d in dims), _triple(spacing, "--spacing"), names,
                        classes, cases)
    elif fingerprint is not None:
        fp = validated(NP.Fingerprint.from_json, fingerprint, None, names, classes)
    else:
        fp = validated(NP.Fingerprint.from_raw, dataset)
    folder = None  # -o DIR (an existing folder, or a path not ending in .json): DIR/<plans name>.json
    if output is not None:
        folder = output if output.is_dir() or output.suffix.lower() != ".json" else None
        writable_dir(folder or (output.parent if str(output.parent) else Path(".")))
    with console.status(f"planning with nnunetv2's {NP.PLANNERS[planner.value][1]}"):
        plans, ds = validated(NP.plan_files, fp, planner.value, gpu_memory_target)
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
    replaced = output.exists()
    NPL.save(plans, output)
    beside = output.with_name("dataset.json")
    text = json.dumps(ds, indent=4)
    kept = beside.exists() and beside.read_text() != text
    if kept:
        console.print(f"[yellow]note:[/] {escape(str(beside))} exists and differs: left as it is (bench run --plans "
                      "reads channels and classes from it, so these plans run with its channels and classes"
                      + (f"; {escape(str(output))} was replaced" if replaced else "") + ")", highlight=False)
    else:
        beside.write_text(text)
    written = escape(str(output)) + ("" if kept else f" and {escape(str(beside))}")
    three_d = [c for c in plans["configurations"] if c.startswith("3d")]
    if not three_d:
        console.print(f"written: {written}; [yellow]no 3D configuration[/] "
                      "(the images are too small for one): nothing here for bench run", highlight=False)
        return
    console.print(f"written: {written}; run it with:", highlight=False)
    conf = "3d_fullres" if "3d_fullres" in three_d else three_d[0]
    console.print(f"  bench run --backend predict --plans {escape(str(output))} --configuration {conf}",
                  highlight=False, soft_wrap=True)  # one line, whatever the width: it is copied and pasted
