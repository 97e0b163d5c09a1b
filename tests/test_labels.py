"""What the console, `bench list` and the records say about sizes: patches named, stages named, the
divisibility `bench list` shows is the one `bench run` enforces, a rounded k is said."""

import re

import pytest
from rich.text import Text
from typer.testing import CliRunner

import architectures
from bench.cli import app
from bench.console import summary_line
from bench.sweep.config import RunConfig
from bench.sweep.expand import expand, label, size_warnings

runner = CliRunner()


def _shown_divisors() -> dict[str, int]:
    res = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"│ (\w+)\s+│ [\d,]+\s+│ (\d+), >=", res.output)}


def test_bench_list_shows_the_divisibility_bench_run_enforces():
    shown = _shown_divisors()
    assert set(shown) == set(architectures.names())
    for name, d in shown.items():
        spec = architectures.spec(name)
        start = -(-max(d, spec.min_size) // d)
        for j in range(start, start + 3):  # every multiple is accepted (check_size is what `bench run` calls) ...
            spec.check_size((d * j,) * 3, "train")
        smaller = [c for c in range(spec.divisor, d, spec.divisor)]
        for c in smaller:  # ... and no smaller step would: some multiple of it is refused
            refused = 0
            for j in range(-(-max(d, spec.min_size) // c), -(-max(d, spec.min_size) // c) + 4):
                try:
                    spec.check_size((c * j,) * 3, "train")
                except ValueError:
                    refused += 1
            assert refused, (name, c)
    assert shown["meunet"] == 16  # its standard patch; the old listing said 2


def test_meunet_named_by_its_expanded_patch_needs_only_even_sizes_and_says_a_rounded_k():
    spec = architectures.spec("meunet")
    assert spec.size_divisor(size_refers_to="expanded") == 2
    configs = expand(["meunet"], [(280,) * 3], [1], backend="predict", overrides={"size_refers_to": "expanded"})
    (warning,) = size_warnings(configs)
    assert "k = 1.46" in warning and "192x192x192 -> 280x280x280" in warning
    meaning = spec.describe_size((280,) * 3, size_refers_to="expanded")
    assert meaning.startswith("expanded patch") and "k = 1.46" in meaning
    assert spec.describe_size((160,) * 3).startswith("standard patch") and "k =" not in spec.describe_size((160,) * 3)
    assert size_warnings(expand(["meunet"], [(240,) * 3], [1], backend="predict",
                                overrides={"size_refers_to": "expanded"})) == []


@pytest.mark.parametrize("cfg, expected", [
    (RunConfig("meunet", (160,) * 3, 4, backend="predict"), "meunet train 160^3 -> 240^3 b4"),
    (RunConfig("meunet", (240,) * 3, 4, backend="predict", overrides=(("size_refers_to", "expanded"),)),
     "meunet train 160^3 -> 240^3 b4"),
    (RunConfig("meunet", (160,) * 3, 4, mode="infer", backend="predict"), "meunet infer 160^3 b4"),
    (RunConfig("unet", (128, 160, 96), 2, backend="predict"), "unet train 128x160x96 b2"),
    (RunConfig("nnunet_cascade", (256,) * 3, 2, backend="predict", stage="3d_lowres"),
     "nnunet_cascade [3d_lowres] train 256^3 /2 b2"),
])
def test_labels_name_their_patch_and_stage(cfg, expected):
    assert label(cfg).startswith(expected)


def test_every_stage_of_a_cascade_has_its_own_console_line():
    """`bench run` prints summary_line(label(cfg), record) per configuration: a cascade's lines differ."""
    configs = expand(["cascade"], [(32,) * 3], [1], backend="predict")
    rec = {"status": "ok", "backend": "predict", "pred_peak_allocated_bytes": 2**20}
    lines = [Text.from_markup(summary_line(label(c), rec)).plain for c in configs]  # as the console shows them
    assert [ln.split(" train")[0].strip() for ln in lines] == [
        "cascade [stage1_k1.5]", "cascade [stage1_k1.75]", "cascade [stage2]"]
    assert "32^3 -> 48^3" in lines[0] and "32^3 -> 56^3" in lines[1]


def test_a_time_is_shown_with_its_spread():
    rec = {"status": "ok", "backend": "cpu", "cpu_live_peak_bytes": 2**20, "pred_peak_allocated_bytes": 2**20,
           "step_time_median_s": 0.612, "step_time_iqr_s": 0.018, "repeats": 7}
    assert "0.612 s/step (IQR 0.018 s, 7 steps)" in summary_line("unet train 32^3 b1", rec)


def test_help_screens_show_no_bool_and_say_the_default_architecture():
    for command in ("run", "report", "fit", "list", "baseline"):
        res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "<bool>" not in res.output, command
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "meunet unless --arch" in res.output and "<list[int]>" in res.output  # value options keep their type


def test_baseline_shows_readable_figures():
    res = runner.invoke(app, ["baseline"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert not re.search(r"\d{7,}", res.output)  # no raw byte counts
    assert "GiB" in res.output and "MiB" in res.output and "…" not in res.output  # nothing cut


def test_a_change_that_rounds_to_nothing_reads_plus_zero():
    from bench.options import signed_percent

    assert signed_percent(-0.00004) == "+0.00%" and signed_percent(-0.004, 0) == "+0%"  # never "-0.00%"
    assert signed_percent(0.0125) == "+1.25%" and signed_percent(-0.3, 0) == "-30%" and signed_percent(-0.061, 1) == "-6.1%"
