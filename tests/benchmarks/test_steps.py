"""pytest-benchmark: one training step and one inference per architecture at a small size, on the
available device, with measured and predicted peak memory in ``extra_info``.

``nox -s bench`` saves them (``--benchmark-autosave``); ``bench compare --from-pytest-benchmark A B``
fails on memory growth between two saved runs. CI runs them once as tests (``--benchmark-disable``): each step
runs and its output is checked; there nnU-Net's cascade stages skip the memory figures, which only a saved run keeps
(``tests/measure/test_predict.py`` checks the same figures of the same networks), the networks that
``tests/architectures/test_baselines.py`` trains on the CPU (nnU-Net's, ResEnc, the 3D U-Net, V-Net) are left to it,
and a step that another case runs too (a cascade's stage 1 is the meU-net) is run once.
"""

import pytest
import torch

import architectures
from bench.measure import cpu
from bench.measure.predict import predict
from bench.measure.step import StepRunner
from bench.sweep.config import RunConfig
from bench.sweep.worker import measured_step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: architectures whose CPU training step and inference tests/architectures/test_baselines.py runs and checks further
#: (the weights move, the output's shape; its SMALL): a test run of these benchmarks on the CPU leaves them to it (33 s
#: of CPU time on CI's 2 cores for nnU-Net's and ResEnc's training steps, 41 s for the 3D U-Net's and V-Net's at
#: 32^3, which it steps at 16^3); a benchmark run (nox -s bench) runs them
TRAINED_BY_TEST_BASELINES = {"nnunet", "nnunet_resenc", "unet3d", "vnet"}


def _cases():
    stages = [(name, spec, stage) for name in architectures.names() for spec in [architectures.spec(name)]
              for stage in spec.train_stages()]
    # which case first runs each step (bench validate's same_step: a cascade's stage 1 is the meU-net itself, built by
    # the same spec with the same arguments), whole architectures before the cascades' stages
    seen: dict[str, str] = {}
    first: dict[tuple[str, str], str] = {}
    for name, spec, stage in sorted(stages, key=lambda c: bool(c[2].name)):
        label = f"{name}-{stage.name}" if stage.name else name
        for mode in ("train", "infer"):
            step = measured_step(RunConfig(name, spec.cpu_sizes[0], 1, mode, "cpu", stage=stage.name))
            first[label, mode] = seen.setdefault(step, label)
    for name, spec, stage in stages:
        label = f"{name}-{stage.name}" if stage.name else name
        # nnU-Net's networks (64^3 to 128^3 on the CPU): over 20 s of CPU time per training step test
        heavy = name.startswith("nnunet")
        yield pytest.param(stage.spec, stage.overrides, spec.cpu_sizes[0], heavy,
                           {mode: first[label, mode] for mode in ("train", "infer")}, label, id=label,
                           marks=[pytest.mark.slow] if heavy else [])


def _with_memory_figures(extra_info: dict, factory) -> StepRunner:
    """The runner, its step's measured peak memory put in ``extra_info``: on CUDA the allocator's peak of a second
    step; on the CPU the tracked live peak (no timing steps: the benchmark times the steps)."""
    if DEVICE == "cuda":
        runner = factory()
        runner.step()
        torch.cuda.reset_peak_memory_stats()
        runner.step()
        extra_info["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    else:
        meas, runner = cpu.measure(factory, repeats=0, timed=False)
        extra_info["cpu_live_peak_bytes"] = meas["cpu_live_peak_bytes"]
    return runner


@pytest.mark.parametrize(("spec", "overrides", "size", "heavy", "first", "label"), list(_cases()))
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_step(benchmark, spec, overrides, size, heavy, first, label, mode):
    if mode == "infer" and spec.name.count("."):
        pytest.skip("a stage's inference is measured as its cascade's")
    if benchmark.disabled and DEVICE == "cpu" and spec.name in TRAINED_BY_TEST_BASELINES:
        pytest.skip("a test run on the CPU: tests/architectures/test_baselines.py steps it")
    if benchmark.disabled and first[mode] != label:  # (a benchmark run times every name)
        pytest.skip(f"a test run: the same step as {first[mode]}'s")
    if max(size) > 64 and DEVICE == "cpu":
        size = tuple(s // 2 for s in size) if spec.min_size <= max(size) // 2 else size
    factory = lambda: StepRunner(spec, overrides, size, 1, mode, device=DEVICE)  # noqa: E731
    if benchmark.disabled and heavy and DEVICE == "cpu":  # a test run: the step alone
        runner = factory()
    else:
        runner = _with_memory_figures(benchmark.extra_info, factory)
        pred = predict(spec, overrides, size, 1, mode, with_memtracker=False, with_flops=False)
        benchmark.extra_info["pred_peak_allocated_bytes"] = pred["pred_peak_allocated_bytes"]
    out = benchmark(runner.step)
    assert torch.isfinite(out).all()
