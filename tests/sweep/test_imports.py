"""The parent of a sweep never loads the measurement or prediction stack; the engine loads no torch."""

import subprocess
import sys

ENGINE = "bench.options, bench.record, bench.version, bench.sweep.config, bench.sweep.executor, bench.sweep.store, " \
         "bench.sweep.wire, bench.sweep.slurm, bench.parallel"


def test_the_sweep_engine_imports_no_torch():
    code = f"import sys, {ENGINE}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_run_launches_workers_without_the_measurement_stack(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from bench.cli import app;"
        f"r = CliRunner().invoke(app, ['run', '--arch', 'unet', '--size', '32', '--batch', '1', '--backend', 'predict',"
        f" '--out', {str(tmp_path)!r}]); assert r.exit_code == 0, r.output;"
        "loaded = [m for m in sys.modules if m.startswith(('bench.measure', 'bench.train', 'bench.sweep.worker'))];"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 1


def test_a_worker_builds_a_training_step_without_importing_on_its_turn():
    """What a measuring worker does on its GPU turn loads no module: the optimizer's lazy import of torch's compiler
    stack (800 modules, seconds) is made in its work ahead of the turn (``worker.prepare_ahead``)."""
    code = (
        "import sys; import bench.sweep.worker as W; from bench.sweep.config import RunConfig;"
        "from bench.measure.step import StepRunner;"
        "cfg = RunConfig('unet', (32, 32, 32), 2, 'train', 'cpu');"
        "_, spec, ov = W.resolve(cfg); prepared = W.prepare_ahead(cfg); before = set(sys.modules);"
        "StepRunner(spec, ov, cfg.size, cfg.batch, 'train', cfg.precision, prepared=prepared);"
        "new = sorted(set(sys.modules) - before); assert len(new) < 20, (len(new), new[:5])"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
