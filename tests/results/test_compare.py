"""The memory-regression check catches a planted regression and names it."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.results import compare

JOBS = 1  # in this process: each grid here is a few predictions (test_predictions_on_every_core covers the pool)


def _small_grid():
    return [c for c in compare.grid(["meunet"]) if c.size == (32, 32, 32) and c.mode == "train"]


@pytest.mark.slow  # meU-net's baseline rows predicted twice
def test_disabled_checkpoint_is_caught_and_named():
    configs = _small_grid()
    base = compare.predict_grid(configs, jobs=JOBS)
    same = compare.compare(base, compare.predict_grid(configs, jobs=JOBS))
    assert not same.failed and not same.grown and not same.shrunk  # deterministic
    planted = compare.compare(base, compare.predict_grid(configs, tamper={"meunet": {"checkpointing": False}}, jobs=JOBS))
    assert planted.failed
    named = {(g["config"].split()[0], g["figure"]) for g in planted.grown}
    assert ("meunet", "peak_allocated") in named and ("meunet", "activation") in named


def test_wider_layer_is_caught_and_shrinking_is_good_news():
    configs = _small_grid()[:1]
    base = compare.predict_grid(configs, jobs=JOBS)
    wide = {"meunet": {"encoder_channels": (24, 32, 64, 128, 128)}}
    wider = compare.compare(base, compare.predict_grid(configs, tamper=wide, jobs=JOBS))
    assert wider.failed and any(g["figure"] == "parameter" for g in wider.grown)
    narrow = {"meunet": {"encoder_channels": (8, 32, 64, 128, 128)}}
    narrower = compare.compare(base, compare.predict_grid(configs, tamper=narrow, jobs=JOBS))
    assert not narrower.failed and narrower.shrunk


def test_missing_configuration_fails():
    configs = _small_grid()[:2]
    base = compare.predict_grid(configs, jobs=JOBS)
    result = compare.compare(base, base.iloc[:1])
    assert result.failed and len(result.missing) == 1


def test_committed_baseline_covers_the_grid():
    base = compare.read()
    assert set(base["key"]) == {c.key() for c in compare.grid()}
    assert {"train", "infer"} == set(base["mode"]) and {"fp32", "fp16"} == set(base["precision"])


def test_pytest_benchmark_memory_comparison(tmp_path):
    def saved(path, peak):
        path.write_text(json.dumps({"benchmarks": [{"name": "test_train[unet]", "fullname": "t::test_train[unet]",
                                                    "extra_info": {"peak_bytes": peak, "pred_peak_allocated_bytes": 10}}]}))
        return path

    a, b = saved(tmp_path / "a.json", 1000), saved(tmp_path / "b.json", 1100)
    res = CliRunner().invoke(app, ["compare", "--from-pytest-benchmark", str(a), str(b)])
    assert res.exit_code == 1 and "peak_bytes" in res.output
    res = CliRunner().invoke(app, ["compare", "--from-pytest-benchmark", str(b), str(a)])
    assert res.exit_code == 0 and "shrank" in res.output
    for bad in ("-1%", "nan", "inf", "abc"):  # a tolerance is a fraction, 0 or more
        res = CliRunner().invoke(app, ["compare", "--tolerance", bad, "--from-pytest-benchmark", str(a), str(b)])
        assert res.exit_code == 2 and "--tolerance must be 0 or more" in res.output, res.output


def test_a_category_that_appears_while_the_totals_fall_is_not_a_regression():
    base = compare.predict_grid(_small_grid()[:1], jobs=JOBS)
    base.loc[0, "pred_temporary_bytes"] = 0
    cur = base.copy()
    cur.loc[0, "pred_temporary_bytes"] = 5_000_000  # the peak moved into the backward pass: "+inf%"
    for total in compare.TOTALS:
        cur.loc[0, total] -= 10_000_000
    result = compare.compare(base, cur)
    assert not result.failed and [s["figure"] for s in result.shifted] == ["temporary"]
    assert {s["figure"] for s in result.shrunk} == {"peak_allocated", "peak_reserved"}
    for total in compare.TOTALS:  # the same category change with a grown total fails and names it
        cur.loc[0, total] += 20_000_000
    grown = compare.compare(base, cur)
    assert grown.failed and {g["figure"] for g in grown.grown} == {"peak_allocated", "peak_reserved", "temporary"}


def test_the_grid_finds_checkpointing_by_the_spec_not_by_its_spelling():
    no_ckpt = {(c.arch, c.overrides) for c in compare.grid() if any(v is False for _, v in c.overrides)}
    assert {a for a, _ in no_ckpt} >= {"meunet", "cascade"}
    assert ("cascade", (("stage1_checkpointing", False),)) in no_ckpt


def test_predictions_on_every_core_are_the_sequential_ones():
    configs = _small_grid()[:3]
    seq = compare.predict_grid(configs, jobs=1)
    assert len(seq) == 3 and (seq["pred_peak_reserved_bytes"] > 0).all()
    pd.testing.assert_frame_equal(seq, compare.predict_grid(configs, jobs=2), check_exact=True)
