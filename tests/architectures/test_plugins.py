"""Installed packages ship architectures through the ``segmem.architectures`` entry-point group: the
example package under ``plugin_example/`` is "installed" here by putting it and its distribution
metadata (entry points read from its own pyproject.toml) on sys.path."""

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import architectures
from bench.api import predict
from bench.cli import app

EXAMPLE = Path(__file__).parent / "plugin_example"


def install(site: Path, entry_points: dict[str, str], name: str = "segmem-plugin-example") -> None:
    """What pip leaves behind for the registry to find: a .dist-info with METADATA and entry_points.txt."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text(f"[{architectures.ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def fresh_registry():
    architectures._registry.cache_clear()
    yield
    architectures._registry.cache_clear()


def test_the_example_package_is_discovered_by_bench_list(tmp_path, monkeypatch, fresh_registry):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    install(tmp_path, project["entry-points"][architectures.ENTRY_POINT_GROUP])
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    res = CliRunner().invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "plugin_tiny" in line)
    assert "2" in row.split("│")[3]  # its declared divisibility
    assert "plugin_tiny" in architectures.names()
    rec = predict("plugin_tiny", size=16, batch=1)
    assert rec["arch"] == "plugin_tiny" and rec["pred_peak_allocated_bytes"] > 0


def test_a_broken_entry_point_is_a_warning_not_a_crash(tmp_path, monkeypatch, fresh_registry):
    install(tmp_path, {"broken": "no_such_module_xyz:SPEC"}, name="broken-plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="entry point broken = no_such_module_xyz:SPEC of broken-plugin does not load"):
        names = architectures.names()
    assert "unet" in names
