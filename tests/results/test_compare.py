"""The memory-regression check catches a planted regression and names it."""

import json

from typer.testing import CliRunner

from bench.cli import app
from bench.results import compare


def _small_grid():
    return [c for c in compare.grid(["meunet"]) if c.size == (32, 32, 32) and c.mode == "train"]


def test_disabled_checkpoint_is_caught_and_named():
    configs = _small_grid()
    base = compare.predict_grid(configs)
    same = compare.compare(base, compare.predict_grid(configs))
    assert not same.failed and not same.grown and not same.shrunk  # deterministic
    planted = compare.compare(base, compare.predict_grid(configs, tamper={"meunet": {"checkpointing": False}}))
    assert planted.failed
    named = {(g["config"].split()[0], g["figure"]) for g in planted.grown}
    assert ("meunet", "peak_allocated") in named and ("meunet", "activation") in named


def test_wider_layer_is_caught_and_shrinking_is_good_news():
    configs = _small_grid()[:1]
    base = compare.predict_grid(configs)
    wide = {"meunet": {"encoder_channels": (24, 32, 64, 128, 128)}}
    wider = compare.compare(base, compare.predict_grid(configs, tamper=wide))
    assert wider.failed and any(g["figure"] == "parameter" for g in wider.grown)
    narrow = {"meunet": {"encoder_channels": (8, 32, 64, 128, 128)}}
    narrower = compare.compare(base, compare.predict_grid(configs, tamper=narrow))
    assert not narrower.failed and narrower.shrunk


def test_missing_configuration_fails():
    configs = _small_grid()[:2]
    base = compare.predict_grid(configs)
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
