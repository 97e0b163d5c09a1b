"""Report, plots, fit and paper tables from a fixture of results (ok, oom and error rows)."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.results import fit, paper, report
from bench.sweep import store

GiB = 2**30
runner = CliRunner()


def rec(arch, size, batch, status="ok", backend="cuda", mode="train", alloc=None, pred=None, dice=None, t=None):
    vox = batch * size**3
    r = {"key": f"{arch}-{size}-{batch}-{backend}-{mode}", "arch": arch, "stage": "", "mode": mode, "backend": backend,
         "precision": "fp16", "size": f"{size}x{size}x{size}", "batch": batch, "options": "{}", "status": status,
         "voxels_per_step": vox, "pred_peak_allocated_bytes": pred, "pred_peak_reserved_bytes": pred and pred + GiB // 4}
    if status == "ok" and backend == "cuda":
        r.update(peak_allocated_bytes=alloc, peak_reserved_bytes=alloc + GiB // 2, nvml_peak_bytes=alloc + GiB,
                 step_time_median_s=t, throughput_voxels_per_s=vox / t, memtracker_peak_bytes=int(alloc * 0.9))
    if status == "ok" and backend == "cpu":
        r.update(cpu_live_peak_bytes=alloc, pred_peak_live_bytes=pred, step_time_median_s=t,
                 throughput_voxels_per_s=vox / t)
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
        rec("meunet", 128, 2, alloc=2 * GiB, pred=int(1.9 * GiB), t=0.8, dice=0.92),
        rec("meunet", 160, 4, alloc=6 * GiB, pred=6 * GiB, t=2.0),
        rec("unet", 240, 4, status="oom", pred=30 * GiB),
        rec("vnet", 128, 2, status="error"),
        rec("unet", 32, 1, backend="cpu", alloc=100 * 2**20, pred=101 * 2**20, t=0.3),
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


def test_report_and_plots_are_written(results, tmp_path):
    dest = tmp_path / "out"
    res = runner.invoke(app, ["report", "--out", str(results), "--to", str(dest)])
    assert res.exit_code == 0, res.output
    md = (dest / "report.md").read_text()
    assert "oom" in md and "error" in md and "CPU figures are not GPU figures" in md
    assert pd.read_csv(dest / "report_train.csv")["arch"].tolist().count("unet") == 4
    for name in ("memory_vs_voxels_train_cuda", "throughput_vs_batch_train_cuda", "dice_vs_memory_train_cuda",
                 "predicted_vs_measured_train_cuda", "largest_patch_train_cuda", "memory_vs_voxels_train_cpu"):
        for fmt in ("png", "svg"):
            assert (dest / f"{name}.{fmt}").stat().st_size > 1000, name


def test_nothing_to_show(results, tmp_path):
    res = runner.invoke(app, ["report", "--out", str(results), "--arch", "nnunet"])
    assert res.exit_code == 1 and "match arch=nnunet" in res.output
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


def test_fit_a_real_architecture_at_a_small_budget():
    budget = 300 * 2**20
    r = fit.fit("unet", budget, batch=1, precision="fp32", size=(32, 32, 32))
    assert r.edge is not None and r.edge % 16 == 0
    peak = fit.predicted_peak(__import__("architectures").spec("unet"), {}, "train", "fp32")
    assert peak((r.edge,) * 3, 1) <= budget < peak((r.edge + 16,) * 3, 1)
    assert peak((32,) * 3, r.max_batch) <= budget < peak((32,) * 3, r.max_batch + 1)


def test_paper_rows_and_ratios(monkeypatch):
    monkeypatch.setattr(paper, "predict_part", lambda part, figure: part.batch * part.size[0] ** 3 * 1000)
    df = paper.table(jobs=1)  # the patched prediction lives in this process
    assert len(df) == len(paper.ROWS) and set(df["table"]) == {"1", "2", "3", "4"}
    t1 = df[df["table"] == "1"].set_index("configuration")
    assert t1.loc["meU-net, 160^3 b4", "paper_ratio"] == pytest.approx(6.0 / 10.5)
    unet = 4 * 160**3 * 1000
    assert t1.loc["meU-net, 160^3 b4", "predicted_ratio"] == pytest.approx(unet / unet)
    t3 = df[df["table"] == "3"].set_index("configuration")
    assert t3.iloc[0]["predicted_reserved_gib"] == pytest.approx(544 * 1000 * 544**2 / GiB)  # the larger stage
