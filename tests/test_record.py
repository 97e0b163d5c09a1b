"""The record schema is the one home of every column: the README's table is generated from it, and
every record the suite writes uses only columns it declares."""

from pathlib import Path

from bench import record
from bench.sweep.config import RunConfig
from bench.sweep.executor import failed

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_column_table_is_generated_from_the_schema():
    text = README.read_text()
    table = text.split("<!-- columns:start -->\n", 1)[1].split("\n<!-- columns:end -->", 1)[0]
    assert table == record.markdown(), "regenerate it: python -m bench.record"


def test_every_column_has_a_unit_in_its_name_where_it_has_a_unit():
    for c in record.SCHEMA.values():
        if c.unit == "bytes":
            assert c.name.endswith("_bytes"), c.name
        if c.unit == "s":
            assert c.name.endswith("_s"), c.name
        assert c.meaning and c.type in {"int", "float", "str", "bool", "json"}, c.name


def test_families_match_their_members_only():
    assert record.column("dice_mid_gut").name == "dice_{cls}"
    assert record.column("pred_activation_bytes").name == "pred_{category}_bytes"
    assert record.column("dice_mean_fg").name == "dice_mean_fg"
    assert record.column("no_such_column") is None
    assert record.class_columns(["dice_mid_gut", "dice_mean_fg", "dice_status", "dice", "dice_hind_gut"]) == [
        "dice_mid_gut", "dice_hind_gut"]  # the record's order: the dataset's labels


def test_a_failed_record_keeps_its_whole_configuration():
    cfg = RunConfig("meunet", (32, 48, 64), 2, "infer", "cpu", "bf16", "", (("expansion", 1.25),),
                    dice=False)
    rec = failed(cfg, "error", "boom")
    assert not record.undeclared(rec)
    assert {c for c in record.CONFIG_COLUMNS if record.config_columns(cfg).get(c) is not None} <= set(rec)
    assert (rec["size"], rec["batch"], rec["mode"], rec["precision"], rec["options"]) == (
        "32x48x64", 2, "infer", "bf16", '{"expansion": 1.25}')
