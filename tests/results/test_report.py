"""Report, plots, fit and paper tables from a fixture of results (ok, oom and error rows)."""

import math
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

import architectures
from bench.cli import app
from bench.measure.gpus import find
from bench.results import fit, paper, report, stages
from bench.sweep import store

GiB = 2**30
runner = CliRunner()


def rec(arch, size, batch, status="ok", backend="cuda", mode="train", alloc=None, pred=None, dice=None, t=None,
        stage="", expanded=None, live=None):
    """A record as the worker writes it (meU-net-like when ``expanded`` gives the expanded edge)."""
    labelled = batch * size**3
    vox = labelled + (batch * expanded**3 if expanded else 0)
    r = {"key": f"{arch}-{stage}-{size}-{batch}-{backend}-{mode}", "arch": arch, "stage": stage, "mode": mode,
         "backend": backend, "precision": "fp16", "size": f"{size}x{size}x{size}", "batch": batch, "options": "{}",
         "status": status, "patch": f"{size}^3" + (f" -> {expanded}^3" if expanded else ""),
         "voxels_per_step": vox, "labelled_voxels_per_step": labelled,
         "pred_peak_allocated_bytes": pred, "pred_peak_reserved_bytes": pred and pred + GiB // 4}
    timing = dict(step_time_median_s=t, step_time_iqr_s=t and t / 10, repeats=5, throughput_voxels_per_s=t and labelled / t,
                  throughput_input_voxels_per_s=t and vox / t)
    if status == "ok" and backend == "cuda":
        r.update(peak_allocated_bytes=alloc, peak_reserved_bytes=alloc + GiB // 2, nvml_peak_bytes=alloc + GiB,
                 memtracker_peak_bytes=int(alloc * 0.9), **timing)
    if status == "ok" and backend == "cpu":
        r.update(cpu_live_peak_bytes=alloc, pred_peak_live_bytes=live or pred, **timing)
    if dice is not None:
        r.update(dice_status="ok", dice_mid_gut=dice, dice_hind_gut=dice - 0.1, dice_mean_fg=dice - 0.05,
                 threshold_dice_mean_fg=0.1)
    if status != "ok":
        r["error"] = "CUDA out of memory" if status == "oom" else "boom"
    return r


@pytest.fixture
def results(tmp_path):
    rows = [
        rec("unet", 128, 2, alloc=4 * GiB, pred=int(4.2 * GiB), t=0.5, dice=0.9),
        rec("unet", 160, 4, alloc=10 * GiB, pred=10 * GiB, t=1.5),
        rec("meunet", 128, 2, alloc=2 * GiB, pred=int(1.9 * GiB), t=0.8, dice=0.92, expanded=192),
        rec("meunet", 160, 4, alloc=6 * GiB, pred=6 * GiB, t=2.0, expanded=240),
        rec("unet", 240, 4, status="oom", pred=30 * GiB),
        rec("vnet", 128, 2, status="error"),
        rec("unet", 32, 1, backend="cpu", alloc=100 * 2**20, pred=120 * 2**20, live=101 * 2**20, t=0.3),
        # nnU-Net's cascade: a small first stage and a large second one (what the equal-memory table once missed)
        rec("nnunet_cascade", 128, 2, stage="3d_lowres", alloc=5 * GiB, pred=5 * GiB, t=1.0),
        rec("nnunet_cascade", 128, 2, stage="3d_cascade_fullres", alloc=30 * GiB, pred=30 * GiB, t=3.0),
    ]
    for r in rows:
        store.append(tmp_path, r)
    return tmp_path


def test_tables_hold_the_fixture_numbers(results):
    df = report.load(results)
    table = report.summary(df)
    row = table[(table["arch"] == "unet") & (table["size"] == "128x128x128")].iloc[0]
    assert row["measured_allocated_gib"] == pytest.approx(4.0)
    assert row["prediction_error"] == pytest.approx(0.05, abs=1e-3)
    assert row["memtracker_error"] == pytest.approx(-0.1, abs=1e-3)
    assert row["dice_mean_fg"] == pytest.approx(0.85)
    cpu = table[table["backend"] == "cpu"].iloc[0]
    assert cpu["prediction_error"] == pytest.approx(0.01)
    eq = report.equal_memory(df[df["backend"] == "cuda"], budgets_gb=[8])
    # within 8 GB: unet's 128^3 b2 (4.5 GiB reserved) but not its 160^3 b4; meU-net's 160^3 b4 (6.5 GiB)
    assert dict(zip(eq["arch"], eq["size"])) == {"unet": "128x128x128", "meunet": "160x160x160"}


def test_prediction_error_of_a_cpu_row_is_computed_from_columns_the_report_shows(results):
    table = report.summary(report.load(results))
    cpu = table[table["backend"] == "cpu"].iloc[0]
    shown = (cpu["predicted_live_gib"] - cpu["cpu_live_peak_gib"]) / cpu["cpu_live_peak_gib"]
    assert cpu["prediction_error"] == pytest.approx(shown)
    # not from the CUDA prediction shown in the same row (120 MiB against 100 MiB would be +20 %)
    assert cpu["predicted_allocated_gib"] == pytest.approx(120 / 1024)


def test_a_cascade_is_judged_by_its_largest_stage_everywhere(results):
    df = report.load(results)
    whole = stages.whole_runs(df[df["arch"] == "nnunet_cascade"])
    assert len(whole) == 1 and whole.iloc[0]["largest_stage"] == "3d_cascade_fullres"
    assert whole.iloc[0]["peak_reserved_bytes"] == 30 * GiB + GiB // 2
    assert whole.iloc[0]["step_time_median_s"] == pytest.approx(4.0)  # both stages train, one after the other
    # its small first stage (5.5 GiB) must not make the cascade "fit" 16 GB: only 40 GB holds it
    eq = report.equal_memory(df[df["backend"] == "cuda"], budgets_gb=[16, 40])
    fits = eq[eq["arch"] == "nnunet_cascade"]
    assert fits["budget_gb"].tolist() == [40]
    assert fits.iloc[0]["memory_gib"] == pytest.approx(30.5)
    # a run missing a stage is not a result
    part = stages.whole_runs(df[(df["arch"] == "nnunet_cascade") & (df["stage"] == "3d_lowres")])
    assert part.iloc[0]["status"] == stages.INCOMPLETE and "3d_cascade_fullres" in part.iloc[0]["error"]


def test_fit_judges_a_cascade_by_its_largest_stage(monkeypatch):
    """bench fit's prediction of a cascade goes through the same rule (stages.combine) as the tables."""
    import bench.results.fit as fitmod

    peaks = {"nnunet_cascade.3d_lowres": 10, "nnunet_cascade.3d_cascade_fullres": 80}
    folded = []

    class Trace:
        def __init__(self, name):
            self.name, self.marks = name, {"measured": 0}

    class Alloc:
        def __init__(self, n):
            self.peak_reserved = self.peak_allocated = n

    monkeypatch.setattr(fitmod, "trace", lambda sp, *a: (Trace(sp.name), None, None))
    monkeypatch.setattr(fitmod, "replay", lambda tracker, host, start: Alloc(peaks[tracker.name]))
    monkeypatch.setattr(fitmod, "combine", lambda values: folded.append(list(values)) or stages.combine(folded[-1]))
    assert fitmod.predicted_peak(architectures.spec("nnunet_cascade"), {}, "train", "fp16")((128,) * 3, 2) == 80
    assert folded == [[10, 80]]
    # and the device figure bench fit decides by (each stage at the budget)
    monkeypatch.setattr(fitmod, "run_device", lambda tracker, *a: SimpleNamespace(nvidia_smi=peaks[tracker.name] + 5))
    assert fitmod.predicted_device(architectures.spec("nnunet_cascade"), {}, "train", "fp16", 100)((128,) * 3, 2) == 85
    assert folded[-1] == [15, 85]


def test_throughput_counts_labelled_voxels_not_both_meunet_patches(results):
    table = report.summary(report.load(results))
    me = table[(table["arch"] == "meunet") & (table["size"] == "160x160x160")].iloc[0]
    assert me["voxels_per_s"] == pytest.approx(4 * 160**3 / 2.0)  # the standard patch, what U-net also segments
    assert me["input_voxels_per_s"] == pytest.approx(4 * (160**3 + 240**3) / 2.0)
    assert me["patch"] == "160^3 -> 240^3"


def test_the_worker_defines_throughput_on_the_standard_patch():
    from bench.measure import timing
    from bench.sweep.config import RunConfig
    from bench.sweep.worker import spec_columns

    cols = spec_columns(RunConfig("meunet", (32, 32, 32), 2, backend="predict"))
    assert cols["labelled_voxels_per_step"] == 2 * 32**3
    assert cols["voxels_per_step"] == 2 * (32**3 + 48**3)
    assert cols["patch"] == "32^3 -> 48^3"
    rates = timing.summarize([1.0, 1.0, 1.0], cols["labelled_voxels_per_step"], cols["voxels_per_step"], 2, None, None)
    assert rates["throughput_voxels_per_s"] == 2 * 32**3 and rates["throughput_input_voxels_per_s"] == 2 * (32**3 + 48**3)


def test_old_records_read_with_the_new_throughput():
    old = pd.DataFrame([{"arch": "meunet", "stage": "", "mode": "train", "backend": "cpu", "size": "32x32x32", "batch": 2,
                         "options": "{}", "status": "ok", "input_shape": "32x32x32", "voxels_per_step": 2 * (32**3 + 48**3),
                         "step_time_median_s": 2.0, "throughput_voxels_per_s": (32**3 + 48**3)}])
    new = report.upgrade(old).iloc[0]
    assert new["throughput_voxels_per_s"] == 32**3 and new["throughput_input_voxels_per_s"] == 32**3 + 48**3
    assert new["patch"] == "32^3 -> 48^3"


def test_report_and_plots_are_written(results, tmp_path):
    dest = tmp_path / "out"
    res = runner.invoke(app, ["report", "--out", str(results), "--to", str(dest)])
    assert res.exit_code == 0, res.output
    md = (dest / "report.md").read_text()
    assert "oom" in md and "error" in md and "CPU figures are not GPU figures" in md
    assert "(9 records;" in md and "## What the memory columns mean" in md
    for column in ("measured_allocated_gib", "measured_reserved_gib", "measured_device_gib", "predicted_reserved_gib",
                   "cpu_live_peak_gib"):
        assert f"**{column}**" in md or f"**{column} " in md or f"{column}**" in md, column
    train = pd.read_csv(dest / "report_train.csv")
    # a CPU time is never shown without its spread, the stage is named on every cascade row
    cols = list(train.columns)
    assert cols.index("step_time_iqr_s") == cols.index("step_time_s") + 1
    assert set(train[train["arch"] == "nnunet_cascade"]["stage"]) == {"3d_lowres", "3d_cascade_fullres"}
    assert train["arch"].tolist().count("unet") == 4
    for name in ("memory_vs_voxels_train_cuda", "throughput_vs_batch_train_cuda", "dice_vs_memory_train_cuda",
                 "predicted_vs_measured_train_cuda", "largest_patch_train_cuda", "memory_vs_voxels_train_cpu"):
        for fmt in ("png", "svg"):
            assert (dest / f"{name}.{fmt}").stat().st_size > 1000, name


def test_the_largest_input_plot_says_what_was_run(tmp_path):
    res = runner.invoke(app, ["run", "--arch", "unet", "--backend", "predict", "--size", "32", "--batch", "1",
                              "--mode", "infer", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["plot", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    svg = (tmp_path / "largest_patch_infer_predict.svg").read_text()
    assert "Largest input inferred within each budget" in svg and "trained" not in svg
    assert re.search(r"\b\d+\.\d MiB\b", svg) and "GiB" not in svg  # tens of MiB read so, not as 0.0469 GiB
    assert "labelled voxels per step" not in svg  # one value: no colour bar spanning an invented range


def test_nothing_to_show(results, tmp_path):
    there = sorted(set(store.load(results)["arch"]))
    assert "predict" not in set(store.load(results)["backend"])
    res = runner.invoke(app, ["report", "--out", str(results), "--arch", there[0], "--backend", "predict"])
    assert res.exit_code == 1 and f"match arch={there[0]}, backend=predict" in " ".join(res.output.split())
    res = runner.invoke(app, ["report", "--out", str(results), "--arch", "nnunet"])  # no record of it: bad input
    assert res.exit_code == 2 and "--arch nnunet: no record of it" in " ".join(res.output.split())
    assert f"(architectures there: {', '.join(there)})" in " ".join(res.output.split())  # what would match
    res = runner.invoke(app, ["plot", "--out", str(results), "--backend", "gpu"])
    assert res.exit_code == 2 and "--backend must be one of cuda, cpu, predict; got 'gpu'" in res.output
    res = runner.invoke(app, ["plot", "--out", str(tmp_path / "none")])  # no such folder: bad input
    assert res.exit_code == 2 and "no such folder" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["plot", "--out", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no results" in res.output


def test_fit_finds_the_known_answer_of_a_monotone_function():
    # memory = 1000 bytes per voxel of the batch; budget 100 MB; unet's sizes are multiples of 16
    mem = lambda size, batch: 1000 * batch * size[0] * size[1] * size[2]  # noqa: E731
    r = fit.fit("unet", 100_000_000, batch=2, memory=mem, ratio=(2, 1, 1), size=(32, 32, 32))
    assert r.edge == 32  # 2 x 32^3 x 1000 = 65.5 MB fits, 2 x 48^3 x 1000 = 221 MB does not
    assert r.box == (48, 32, 32)  # 98.3 MB fits; the next box (64, 32, 32) is 131 MB
    assert r.max_batch == 3  # 3 x 32.8 MB fits, 4 does not


def test_largest_is_exact():
    for answer in (1, 2, 3, 7, 64, 100, 1000):
        assert fit.largest(lambda n, a=answer: n <= a, 1, 4096) == answer
    assert fit.largest(lambda n: False) is None
    assert fit.largest(lambda n: True, 1, 50) == 50


def test_fit_a_real_architecture_at_a_small_budget(monkeypatch):
    """fit's answer is the largest size whose nvidia-smi figure fits the budget and the next one's does not,
    by the rule of --backend predict --gpu-memory: the worker's prediction at that memory agrees."""
    from bench import record as R
    from bench.sweep import worker
    from bench.sweep.config import RunConfig

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")  # restored after the test (the worker sets it)
    budget = 1_300_000_000  # the generic CUDA context and a training step's kernels take 0.97 GB of it
    r = fit.fit("unet", budget, batch=1, precision="fp32", size=(32, 32, 32))
    assert r.edge is not None and r.edge % 16 == 0
    need = fit.predicted_device(architectures.spec("unet"), {}, "train", "fp32", budget)
    assert need((r.edge,) * 3, 1) == round(r.edge_bytes) <= budget < need((r.edge + 16,) * 3, 1)
    assert need((32,) * 3, r.max_batch) <= budget < need((32,) * 3, r.max_batch + 1)
    fits, over = (worker.run(RunConfig("unet", (e,) * 3, 1, backend="predict", gpu_memory=budget), memtracker=False)
                  for e in (r.edge, r.edge + 16))
    assert fits[R.STATUS] == "ok" and fits[R.PRED_NVIDIA_SMI] == need((r.edge,) * 3, 1)
    assert over[R.STATUS] == "oom" and over[R.PRED_NVIDIA_SMI] == need((r.edge + 16,) * 3, 1)


def test_fit_margin_keeps_memory_free_and_figure_is_gone(tmp_path):
    mem = lambda size, batch: 1000 * batch * size[0] * size[1] * size[2]  # noqa: E731
    r = fit.fit("unet", 100_000_000, batch=2, memory=mem, margin_bytes=40_000_000)
    assert r.edge == 16  # 2 x 16^3 x 1000 + 40 MB margin = 48 MB fits; 2 x 32^3 x 1000 + 40 MB = 106 MB does not
    res = runner.invoke(app, ["fit", "--arch", "unet", "--figure", "allocated", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--figure is gone" in res.output and not (tmp_path / "fit.csv").exists()
    res = runner.invoke(app, ["fit", "--arch", "unet", "--budget", "1GB", "--margin", "2GB", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "leaves nothing of --budget 1GB" in res.output
    res = runner.invoke(app, ["fit", "--arch", "unet", "--margin", "lots", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--margin: 'lots' is not a memory size" in res.output
    res = runner.invoke(app, ["fit", "--arch", "unet", "--shape-ratio", "abc", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--shape-ratio: size 'abc'" in res.output


def test_paper_rows_and_ratios(monkeypatch):
    monkeypatch.setattr(paper, "predict_part", lambda part, figure: part.batch * part.size[0] ** 3 * 1000)
    df = paper.table(jobs=1)  # the patched prediction lives in this process
    assert len(df) == len(paper.paper_rows()) and set(df["table"]) == {"1", "2", "3", "4"}
    t1 = df[df["table"] == "1"].set_index("configuration")
    assert t1.loc["meU-net, 112^3 -> 160^3 b4", "paper_ratio"] == pytest.approx(6.0 / 10.5)
    unet = 4 * 160**3 * 1000
    assert t1.loc["meU-net, 112^3 -> 160^3 b4", "predicted_ratio"] == pytest.approx(unet / unet)
    # the rounded k is said where the row is shown
    assert "k = 1.43" in t1.loc["meU-net, 112^3 -> 160^3 b4", "note"]
    t3 = df[df["table"] == "3"].set_index("configuration")
    assert t3.iloc[0]["predicted_reserved_gib"] == pytest.approx(544 * 1000 * 544**2 / GiB)  # the larger stage


def test_every_paper_label_names_the_patches_it_runs():
    """A row's label names each trained patch as the spec makes it (meU-net: standard -> expanded)."""
    for row in paper.paper_rows():
        for part in row.parts:
            for cfg in paper.part_configs(part, "predict"):
                patch = architectures.spec(cfg.arch).patch_label(cfg.size, "train", cfg.stage, **cfg.overrides_dict)
                if cfg.stage and part.stage == "":  # a whole cascade: its stage-1 patches are in the label too
                    assert patch in row.label, (row.label, cfg.stage, patch)
                assert paper.patch_label(part) in row.label, (row.label, paper.patch_label(part))


def test_the_nnunet_cascade_is_read_both_ways_and_the_verdict_names_the_nearer(monkeypatch):
    """Stage 1 on the whole downsampled volume (paper) or on nnU-Net's planned 3d_lowres patch and batch."""
    from architectures import nnunet_plans

    monkeypatch.setattr(paper, "predict_part", lambda part, figure: part.batch * math.prod(part.size) * 2000)
    rows = paper.cascade_rows()
    df = paper.table(rows, jobs=1).set_index("configuration")
    lowres = nnunet_plans.configuration(paper.PAPER_PLANS, "3d_lowres")
    by = {r.key: r for r in rows}
    assert by["paper"].parts[0].size == (544, 256, 256) and by["paper"].parts[0].batch == 1
    assert (by["planned"].parts[0].size, by["planned"].parts[0].batch) == (lowres.patch, lowres.batch)
    stage2 = 4 * 160**3 * 2000
    planned = max(lowres.batch * math.prod(lowres.patch) * 2000, stage2)
    assert df.loc[by["planned"].label, "predicted_reserved_gib"] == pytest.approx(planned / GiB)
    assert df.loc[by["paper"].label, "predicted_reserved_gib"] == pytest.approx(544 * 256 * 256 * 2000 / GiB)
    verdict = paper.cascade_verdict(df.reset_index(), rows)
    # 15.5 GB lies nearer the planned reading's figure here (the paper's: 544*256*256*2000 B = 71 GB)
    assert "fits reading 'planned' best" in verdict and "cannot fit its 16 GB GPU" in verdict
    only = paper.paper_rows([paper.CascadeReading.PAPER])
    assert [r.key for r in only if r.key] == ["paper"]


def test_paper_console_table_shows_the_notes(monkeypatch, tmp_path):
    monkeypatch.setattr(paper, "predict_job", lambda job: (job[4] * job[3][0] ** 3 * 1000,) * 3)
    # the paper's reading of the nnU-Net cascade only: the planned one needs reports/plans/, which no branch commits
    res = runner.invoke(app, ["paper", "--out", str(tmp_path), "--jobs", "1", "--cascade-reading", "paper"],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "note" in res.output and "padded to" in res.output and "k = 1.43" in res.output


def test_fit_explains_a_blank_and_prints_whole_numbers(monkeypatch, tmp_path):
    # 1000 bytes per voxel: within 100 MB unet fits 32^3 at batch 2; nnunet_cascade's smallest (128^3) does not
    mem = lambda size, batch: 1000 * batch * size[0] * size[1] * size[2]  # noqa: E731
    r = fit.fit("nnunet_cascade", 100_000_000, batch=2, memory=mem)
    assert r.edge is None and "no cube: the smallest allowed, 128x128x128 b2, needs 3.91 GiB" in r.row()["note"]
    monkeypatch.setattr(fit, "predicted_device", lambda *a, **k: mem)
    res = runner.invoke(app, ["fit", "--arch", "unet", "--arch", "nnunet_cascade", "--budget", "100MB", "--batch", "2",
                              "--overhead", "0", "--jobs", "1", "--out", str(tmp_path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output  # (one job: the patched prediction lives in this process)
    assert "160.0" not in res.output and ".0 " not in res.output
    table = pd.read_csv(tmp_path / "fit.csv")
    unet = table[table["arch"] == "unet"].iloc[0]
    assert unet["largest_cube"] == 32 and unet["cube_patch"] == "32^3"
    assert "no cube" in table[table["arch"] == "nnunet_cascade"].iloc[0]["note"]
    assert "| 32 |" in (tmp_path / "fit.md").read_text()


def test_fit_takes_a_gpu_as_its_budget(monkeypatch, tmp_path):
    mem = lambda size, batch: 1000 * batch * size[0] * size[1] * size[2]  # noqa: E731
    seen = {}
    monkeypatch.setattr(fit, "predicted_device", lambda *a, **k: seen.update(capacity=a[4], gpu=a[5]) or mem)
    res = runner.invoke(app, ["fit", "--arch", "unet", "--budget", "a100-40gb", "--jobs", "1", "--out", str(tmp_path)],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    a100 = find("A100-40GB")
    assert seen == {"capacity": a100.memory_bytes, "gpu": a100.name}  # its memory (nvidia-smi's), and its context
    assert "A100-40GB's CUDA context" in " ".join(res.output.split())
    assert pd.read_csv(tmp_path / "fit.csv").iloc[0]["budget_gib"] == round(a100.memory_bytes / 2**30, 2)
    res = runner.invoke(app, ["fit", "--budget", "lots"])
    assert res.exit_code == 2 and "neither a size" in res.output and "A100-40GB" in res.output


def test_plots_read_at_a_glance(results, tmp_path, monkeypatch):
    """Legend outside the data, one colour and marker per architecture, log axes said, a cascade one
    point (its largest stage), batches as integer ticks, the CPU plot on the CPU's own memory."""
    from bench.results import plots

    assert len(set(plots.palette().values())) == len(plots.palette()) == len(architectures.names())
    assert len(set(plots.markers().values())) == len(architectures.names())
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, reports, name: figures.setdefault(name, fig) and [])
    plots.plot_all(report.load(results), tmp_path)
    for name, fig in figures.items():
        ax = fig.axes[0]
        legend = ax.get_legend()
        if legend is not None:  # outside the axes, to their right
            fig.canvas.draw()
            assert legend.get_window_extent().x0 >= ax.get_window_extent().x1, name
        for axis, scale in (("x", ax.get_xscale()), ("y", ax.get_yscale())):
            if scale == "log":
                assert "log scale" in getattr(ax, f"get_{axis}label")(), name
    mem = figures["memory_vs_voxels_train_cuda"].axes[0]
    cascade = [c for c in mem.containers if c.get_label() == "nnunet_cascade"]  # errorbar containers, one per line
    assert len(cascade) == 1 and list(cascade[0].lines[0].get_ydata()) == [pytest.approx(30.5)]  # its largest stage
    assert "not GPU memory" in figures["memory_vs_voxels_train_cpu"].axes[0].get_ylabel()
    ticks = figures["throughput_vs_batch_train_cuda"].axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)
    # the fixture's unet has two patches (128^3, 160^3): two lines of one colour, told apart by their style
    unet = [c.lines[0] for c in figures["throughput_vs_batch_train_cuda"].axes[0].containers
            if c.get_label().startswith("unet ")]
    assert len(unet) == 2 and unet[0].get_linestyle() != unet[1].get_linestyle()
    texts = [t.get_text() for t in figures["dice_vs_memory_train_cuda"].axes[0].texts]
    assert "128^3 -> 192^3 b2" in texts and "128^3 b2" in texts  # its points are labelled


def test_one_record_is_one_record(results, tmp_path):
    df = report.load(results)
    md, *_ = report.write(df[df["arch"] == "vnet"], tmp_path)
    assert md.read_text().startswith("# segmem report (1 record; backends: cuda)")


def test_the_report_gives_the_prediction_the_console_gives(tmp_path):
    """One predicted peak per record everywhere: cuDNN's workspaces in, as max_memory_* count them (the console's
    and bench validate's figure), not the allocator model's alone."""
    res = runner.invoke(app, ["run", "--arch", "unet", "--backend", "predict", "--size", "64", "--batch", "1",
                              "--mode", "infer", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rec = store.load(tmp_path).iloc[0]
    assert rec["pred_device_reserved_bytes"] != rec["pred_peak_reserved_bytes"]  # the workspaces move the peak here
    res = runner.invoke(app, ["report", "--out", str(tmp_path), "--no-plots"])
    assert res.exit_code == 0, res.output
    row = pd.read_csv(tmp_path / "report_infer.csv").iloc[0]
    assert row["predicted_reserved_gib"] == pytest.approx(rec["pred_device_reserved_bytes"] / 2**30)
    assert row["predicted_allocated_gib"] == pytest.approx(rec["pred_device_allocated_bytes"] / 2**30)


def test_labels_of_close_points_do_not_overprint_and_crowded_minor_ticks_go():
    """Two batches of one patch lie close: their labels are stacked, each clear of the other label and of the other
    point's marker, the lower label the lower point's. A log axis over a decade labels its minor ticks at 2, 3 and 5
    (90k beside 100k overprinted), a shorter one every minor tick but 9."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from bench.results import plots

    fig = Figure(figsize=(7.5, 6), dpi=100)
    ax = fig.add_subplot()
    points = [(0.058, 0.06), (0.088, 0.09)]  # the U-net's 32^3 b1 and b2 on a 0..1.3 GiB plot
    ax.scatter(*zip(*points), s=60)
    ax.set(xlim=(0, 1.3), ylim=(0, 1.3))
    plots._annotate(ax, [p[0] for p in points], [p[1] for p in points], ["32^3 b1", "32^3 b2"])
    fig.canvas.draw()
    boxes = {t.get_text(): t.get_window_extent() for t in ax.texts}
    assert not boxes["32^3 b1"].overlaps(boxes["32^3 b2"]) and boxes["32^3 b1"].y0 < boxes["32^3 b2"].y0
    for label, other in (("32^3 b1", points[1]), ("32^3 b2", points[0])):
        x, y = ax.transData.transform(other)
        assert not boxes[label].overlaps(type(boxes[label]).from_bounds(x - 5, y - 5, 10, 10))  # the marker
    assert {tuple(np.round(t.xy, 3)) for t in ax.texts} == set(points)  # each label's line ends at its own point

    ax.set_xscale("log")
    minor = plots._some_minor(ax.xaxis, EngFormatter(sep=""))
    ax.set_xlim(3e4, 2e6)
    assert [minor(v) for v in (4e4, 5e4, 9e4, 2e5)] == ["", "50k", "", "200k"]
    ax.set_xlim(3e4, 7e4)
    assert [minor(v) for v in (4e4, 6e4)] == ["40k", "60k"]
