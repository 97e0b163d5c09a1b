"""What a record is: every column of ``results.jsonl``, its type, unit and meaning, in one place.

A record is one configuration's result, one JSON object per line of the results store. The builders
(:mod:`bench.sweep.worker`, :mod:`bench.sweep.executor`, :mod:`bench.measure`, :mod:`bench.train.dice_run`)
write their columns under the names defined here, and the readers (:mod:`bench.results`, the CLI) read
them by the same names: a column is renamed here or nowhere. The README's column table is generated
from this module (``python -m bench.record``) and a test keeps the two equal.

Every number's unit is in its name (``_bytes``, ``_s``, ``_per_s``); measured and predicted figures sit
side by side in one record, so that every reader can show the prediction's error without a join.
Imports nothing heavy (no torch): the sweep engine builds failed records without building a network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sweep.config import RunConfig

GROUPS = {
    "configuration": "what was run; the key is a digest of these",
    "run": "how the run went",
    "environment": "where it ran (so that results of different machines mix honestly)",
    "CUDA measurement": "measured on a CUDA GPU (backend cuda)",
    "CPU measurement": "measured on the CPU (backend cpu); CPU figures are not GPU figures",
    "time": "step times and what follows from them (backends cuda and cpu)",
    "prediction": "GPU-free prediction of the CUDA step (every backend)",
    "Dice": "a Dice run (--dice): training, whole-volume inference and scoring",
}


@dataclass(frozen=True)
class Column:
    name: str  # a template such as ``dice_{cls}`` where the column is one of a family
    type: str  # int, float, str, bool, json (a JSON text inside the record)
    unit: str
    group: str
    meaning: str

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[a-z0-9_]+", re.escape(self.name)) + "$")


SCHEMA: dict[str, Column] = {}


def _col(name: str, type_: str, unit: str, group: str, meaning: str) -> str:
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")
    if name in SCHEMA:
        raise ValueError(f"column {name!r} defined twice")
    SCHEMA[name] = Column(name, type_, unit, group, meaning)
    return name


# ----- configuration ------------------------------------------------------------------------------
G = "configuration"
KEY = _col("key", "str", "", G, "stable digest of the configuration (what is measured, not how often)")
ARCH = _col("arch", "str", "", G, "architecture name (`bench list`)")
ARCH_KEY = _col("arch_key", "str", "", G, "what the key holds for the architecture when arch holds a file's path: "
                "an nnU-Net plans configuration (`--plans`) is arch nnunet-plans:<configuration>@<plans file>, "
                "keyed as nnunet-plans:<configuration>@sha256:<the file's content digest>")
ARCH_LABEL = _col("arch_label", "str", "", G, "what the console, report tables and plots call the architecture when "
                  "arch holds a file's path (ArchSpec.display_name): nnunet-plans:<configuration>@<plans file's "
                  "stem>#<first 6 hex of its digest>; empty where it is arch")
STAGE = _col("stage", "str", "", G, "a cascade's separately trained stage; empty for the whole architecture")
MODE = _col("mode", "str", "", G, "train (forward, loss, backward, optimizer step) or infer (the inference path)")
BACKEND = _col("backend", "str", "", G, "cuda or cpu (measured, and predicted), predict (predicted only)")
PRECISION = _col("precision", "str", "", G, "fp32, or autocast bf16 / fp16 (fp16 with a grad scaler)")
BATCH = _col("batch", "int", "samples", G, "samples per step")
SIZE = _col("size", "str", "voxels", G, "the run's size DxHxW; what it names is in size_meaning")
RECIPE = _col("recipe", "str", "", G, "how the step trains (the architecture's recipe with any --set recipe.KEY changes): "
              "optimizer(lr, m = momentum, nesterov, wd = weight decay) + loss (ce_dice: the paper's CE + soft Dice; "
              "dc_ce: nnU-Net's DC_and_CE_loss) + ds (deep supervision) + clipN (grad-norm clipping) + cudnn_bench")
COMPILED = _col("compiled", "bool", "", G, "whether the figures assume torch.compile of the network (segmem's steps "
                "are eager: false)")
CUDNN_BENCHMARK = _col("cudnn_benchmark", "bool", "", G, "torch.backends.cudnn.benchmark on the CUDA backend "
                       "(bench validate runs both)")
OPTIONS = _col("options", "json", "", G, "architecture overrides (`--set`), as a JSON object")
ALLOC_CONF = _col("alloc_conf", "str", "", G, "the CUDA caching allocator's options (`--alloc-conf`, PYTORCH_CUDA_ALLOC_CONF "
                  "syntax) the step ran and was predicted under; empty: PyTorch's defaults")
IN_CHANNELS = _col("in_channels", "int", "channels", G, "input channels of the network (`--in-channels`; 1 by default)")
NUM_CLASSES = _col("num_classes", "int", "classes", G, "output classes of the network (`--classes`; 3 by default)")
CHANNELS_LAST = _col("channels_last", "bool", "", G, "model and images in channels_last_3d")
DICE = _col("dice", "bool", "", G, "a Dice run: the network was also trained and scored")
DATA = _col("data", "str", "", G, "Dice runs: the data option (phantom, phantom:DxHxW or a path)")
TRAIN_BUDGET = _col("train_budget", "str", "", G, "Dice runs: the training budget per stage")
INFER_WEIGHTING = _col("infer_weighting", "str", "", G, "Dice runs: the sliding-window vote (centre, gaussian, uniform)")
SEED = _col("seed", "int", "", G, "Dice runs: the seed of initialisation and patch sampling")
INFERER = _col("inferer", "str", "", G, "Dice runs: whose whole-volume sliding window (segmem, or MONAI's "
               "sliding_window_inference)")
SIZE_MEANING = _col("size_meaning", "str", "", G, "what the size names (e.g. meU-net's standard or expanded patch)")
INPUT_SHAPE = _col("input_shape", "str", "voxels", G, "the first input tensor's spatial shape")
INPUT_SHAPES = _col("input_shapes", "json", "voxels", G, "every image tensor of a sample by name, e.g. both meU-net patches")
PARAMS = _col("params", "int", "parameters", G, "trainable parameters of what the step trains (or runs)")
VOXELS_PER_STEP = _col("voxels_per_step", "int", "voxels", G,
                       "input voxels of all image tensors of a step's batch (meU-net: standard and expanded patch)")
LABELLED_VOXELS_PER_STEP = _col("labelled_voxels_per_step", "int", "voxels", G,
                                "voxels a step segments at full resolution: batch x the standard patch (what a user "
                                "compares across architectures; a cascade stage: batch x its full-resolution patch)")
PATCH = _col("patch", "str", "voxels", G,
             "the patch in words, every image tensor named: 160^3 for U-net, 160^3 -> 240^3 for meU-net (standard -> "
             "expanded)")

# ----- run ----------------------------------------------------------------------------------------
G = "run"
STATUS = _col("status", "str", "", G, "ok, oom (out of memory: a result), predicted_oom (not run: predicted not to fit "
              "gpu_budget_bytes), error, timeout, preempted (the cluster took the job back)")
ERROR = _col("error", "str", "", G, "why a run is not ok, in one line")
STDERR_TAIL = _col("stderr_tail", "str", "", G, "the end of a failed worker's stderr")
OOM_REQUESTED = _col("oom_requested_bytes", "int", "bytes", G, "the allocation an out-of-memory error names")
TIMESTAMP = _col("timestamp", "str", "UTC", G, "when the record was made (ISO 8601)")
TIMEOUT = _col("timeout_s", "float", "s", G, "the configuration's time limit")
WORKER_TIME = _col("worker_time_s", "float", "s", G, "the worker's whole run (prediction, measurement, Dice)")
DEVICE_NAME = _col("device_name", "str", "", G, "the GPU's name, cpu, or the prediction's model")
GPU_BUDGET = _col("gpu_budget_bytes", "int", "bytes", G,
                  "the GPU memory a predicted_oom configuration was predicted against (--gpu-memory)")
NODE = _col("node", "str", "", G, "the host the configuration ran on")
JOB_ID = _col("job_id", "str", "", G, "the SLURM job (array_task) that ran it; empty for local runs")
CUDA_DEVICES = _col("cuda_visible_devices", "str", "", G, "CUDA_VISIBLE_DEVICES of the worker (the GPU a --jobs slot pins)")
MEASURED_AS = _col("measured_as", "str", "", G,
                   "the key of the configuration whose measurement this record took, where that one runs the same step "
                   "(the same network, batch and settings: a cascade's stage 1 is its meU-net; bench validate measures "
                   "each step once); no worker ran for this record, so it has no worker time")
GPU_SHARED = _col("gpu_shared", "bool", "", G,
                  "another measurement ran on the same GPU during this one (bench validate --share-gpu): the memory "
                  "figures are this process's own (its allocator's), the step times and NVML figures, which the other "
                  "disturbed, are left empty; with cudnn.benchmark, cuDNN timed its candidates beside the other")

# ----- environment --------------------------------------------------------------------------------
G = "environment"
CODE_VERSION = _col("code_version", "str", "", G, "segmem's version and git commit (+dirty); resume re-runs other versions")
GIT_COMMIT = _col("git_commit", "str", "", G, "git commit of the checkout that made the record")
ENV_TORCH = _col("env_torch", "str", "", G, "torch version")
ENV_PYTHON = _col("env_python", "str", "", G, "Python version")
ENV_OS = _col("env_os", "str", "", G, "operating system")
ENV_CPU = _col("env_cpu", "str", "", G, "processor")
ENV_CPU_COUNT = _col("env_cpu_count", "int", "threads", G, "torch's intra-op threads")
ENV_CUDA = _col("env_cuda", "str", "", G, "CUDA version torch was built with")
ENV_CUDNN = _col("env_cudnn", "int", "", G, "cuDNN version (CUDA runs)")
ENV_DRIVER = _col("env_driver", "str", "", G, "NVIDIA driver version (CUDA runs, from NVML)")
ENV_GPU_NAME = _col("env_gpu_name", "str", "", G, "GPU name (CUDA runs)")
ENV_GPU_MEMORY = _col("env_gpu_memory_bytes", "int", "bytes", G, "GPU memory (CUDA runs)")

# ----- CUDA measurement ---------------------------------------------------------------------------
G = "CUDA measurement"
PEAK_ALLOCATED = _col("peak_allocated_bytes", "int", "bytes", G,
                      "torch.cuda.max_memory_allocated over the measured step (after a warm-up step)")
PEAK_RESERVED = _col("peak_reserved_bytes", "int", "bytes", G, "torch.cuda.max_memory_reserved over the measured step")
NVML_PEAK = _col("nvml_peak_bytes", "int", "bytes", G,
                 "the process's device memory (NVML) sampled during the step: context, workspaces and cache included")
CUDA_CONTEXT = _col("cuda_context_bytes", "int", "bytes", G, "the process's device memory right after CUDA initialised")
CUDA_SNAPSHOT_PATH = _col("cuda_snapshot_path", "str", "", G, "the recorded step's torch.cuda.memory._snapshot() "
                          "pickle (--snapshot DIR on CUDA; bench replay reads it)")
CUDA_PHASES = _col("cuda_phase_times_s", "json", "s", G,
                   "where the measuring worker's time went, seconds per phase (CUDA_PHASE_NAMES): imports (a worker "
                   "started ahead of its turn: from its process's start to the end of its imports, torch's and "
                   "segmem's, not the time it then waited for its configuration; recorded since 2026-11-27, to its "
                   "configuration until the H100's sixth run), ahead (its CPU-side "
                   "parts made while the GPU measured the configuration before: not the GPU's time), env (the environment "
                   "capture, CUDA's first calls), setup (the configuration's columns and the rest before the "
                   "measurement, a prediction made there left out), init (context, first allocation, NVML), build "
                   "(network, optimizer, batch), warmup (the first step: cuDNN's benchmark, kernels loaded), "
                   "memory_step (the measured step), snapshot (the recorded history written), timed_steps, finish "
                   "(the times summarised); setup and finish recorded since 2026-11-26")
#: the phases of cuda_phase_times_s before the configuration's turn (outside its worker_time_s): a worker started
#: ahead imports, then makes the configuration's CPU-side parts
IMPORTS_PHASE, AHEAD_PHASE = "imports", "ahead"
BEFORE_TURN_PHASES = (IMPORTS_PHASE, AHEAD_PHASE)
#: the phases of cuda_phase_times_s, in order
CUDA_PHASE_NAMES = (*BEFORE_TURN_PHASES, "env", "setup", "init", "build", "warmup", "memory_step", "snapshot", "timed_steps",
                    "finish")

# ----- CPU measurement ----------------------------------------------------------------------------
G = "CPU measurement"
CPU_LIVE_PEAK = _col("cpu_live_peak_bytes", "int", "bytes", G,
                     "peak of live tensor bytes over the measured step (tracked); what pred_peak_live_bytes predicts")
CPU_RSS_INCREASE = _col("cpu_rss_peak_increase_bytes", "int", "bytes", G, "the process's peak RSS increase")

# ----- time ---------------------------------------------------------------------------------------
G = "time"
STEP_TIME_MEDIAN = _col("step_time_median_s", "float", "s", G, "median step time (CUDA events, or wall clock on the CPU)")
STEP_TIME_MIN = _col("step_time_min_s", "float", "s", G, "fastest step")
STEP_TIME_MAX = _col("step_time_max_s", "float", "s", G, "slowest step")
STEP_TIME_IQR = _col("step_time_iqr_s", "float", "s", G, "interquartile range of the step times")
STEP_TIME_SPREAD = _col("step_time_spread", "float", "", G,
                        "step_time_iqr_s / step_time_median_s: how far a step time can be trusted")
REPEATS = _col("repeats", "int", "steps", G, "timed steps after the warm-up (CPU: repeated until the spread is small)")
WARMUP_STEPS = _col("warmup_steps", "int", "steps", G,
                    "untimed steps run first (CPU: until two successive steps agree within 10%)")
THROUGHPUT_VOXELS = _col("throughput_voxels_per_s", "float", "voxels/s", G,
                         "labelled_voxels_per_step / median step time: full-resolution voxels segmented per second "
                         "(the throughput to compare)")
THROUGHPUT_INPUT_VOXELS = _col("throughput_input_voxels_per_s", "float", "voxels/s", G,
                               "voxels_per_step / median step time: input voxels read per second")
THROUGHPUT_SAMPLES = _col("throughput_samples_per_s", "float", "samples/s", G, "batch / median step time")
ACHIEVED_FLOPS = _col("achieved_flops_per_s", "float", "FLOP/s", G, "flops_per_step / median step time")
PEAK_FLOPS = _col("peak_flops_per_s", "float", "FLOP/s", G, "the device's datasheet peak at the precision (known GPUs)")
FLOPS_FRACTION = _col("achieved_flops_fraction", "float", "", G, "achieved over peak FLOP rate")

# ----- prediction ---------------------------------------------------------------------------------
G = "prediction"
PRED_ALLOCATED = _col("pred_peak_allocated_bytes", "int", "bytes", G, "predicted max_memory_allocated (caching-allocator model)")
PRED_RESERVED = _col("pred_peak_reserved_bytes", "int", "bytes", G, "predicted max_memory_reserved (caching-allocator model)")
PRED_LIVE = _col("pred_peak_live_bytes", "int", "bytes", G, "predicted peak of live tensor bytes, without allocator rounding")
PRED_CATEGORY = _col("pred_{category}_bytes", "int", "bytes", G,
                     "live bytes at the predicted peak by category: parameter, gradient, optimizer, input, activation, "
                     "temporary")
PRED_EVENTS = _col("pred_events", "int", "events", G, "storage allocations and frees traced")
PRED_TIME = _col("pred_time_s", "float", "s", G, "time the prediction took")
FLOPS_PER_STEP = _col("flops_per_step", "int", "FLOP", G, "torch.utils.flop_counter over one step")
PRED_WORK = _col("pred_work", "json", "", G,
                 "the step's operators as roofline work: [class, dtype, forward, FLOP, bytes, operators] buckets "
                 "(bench.measure.roofline), so that any GPU's time can be predicted from the record")
PRED_GPU = _col("pred_gpu", "str", "", G, "the catalogue GPU the step time is predicted for (--gpu, or the live CUDA device)")
PRED_STEP_TIME = _col("pred_step_time_s", "float", "s", G, "predicted step time on pred_gpu (per-operator roofline)")
PRED_THROUGHPUT_SAMPLES = _col("pred_throughput_samples_per_s", "float", "samples/s", G, "batch / pred_step_time_s")
PRED_THROUGHPUT_VOXELS = _col("pred_throughput_voxels_per_s", "float", "voxels/s", G, "voxels_per_step / pred_step_time_s")
PRED_TIME_NOTE = _col("pred_time_note", "str", "", G,
                      "why a dtype is predicted at another rate (e.g. bf16 on a V100 runs at its fp32 rate)")
MEMTRACKER_PEAK = _col("memtracker_peak_bytes", "int", "bytes", G,
                       "torch's MemTracker on the same traced step (empty where it cannot track a step)")
MEMTRACKER_NOTE = _col("memtracker_note", "str", "", G, "why memtracker_peak_bytes is empty")
MEMTRACKER_TIME = _col("memtracker_time_s", "float", "s", G, "time MemTracker took")
SNAPSHOT_PATH = _col("snapshot_path", "str", "", G, "the predicted step's PyTorch memory snapshot pickle "
                     "(bench run --snapshot DIR; bench run then draws its timeline plot beside it as .png)")
SNAPSHOT_TIME = _col("snapshot_time_s", "float", "s", G, "time building and writing the snapshot took (in the worker; "
                     "its plot is drawn after the sweep)")
PRED_DEVICE_ALLOCATED = _col("pred_device_allocated_bytes", "int", "bytes", G,
                             "predicted max_memory_allocated with cuDNN's convolution workspaces (bench.measure.device; "
                             "pred_peak_allocated_bytes leaves them out)")
PRED_DEVICE_RESERVED = _col("pred_device_reserved_bytes", "int", "bytes", G,
                            "predicted max_memory_reserved with cuDNN's convolution workspaces (which change how the "
                            "cache is laid out, so it can come out below pred_peak_reserved_bytes)")
PRED_WORKSPACE = _col("pred_cudnn_workspace_bytes", "int", "bytes", G,
                      "the largest cuDNN convolution workspace of the step (benchmark on: the largest candidate tried)")
PRED_CONTEXT = _col("pred_cuda_context_bytes", "int", "bytes", G,
                    "predicted CUDA context: bare context of the GPU family and CUDA version, plus the kernels a "
                    "training step loads (sources in bench.measure.device)")
PRED_NVIDIA_SMI = _col("pred_nvidia_smi_bytes", "int", "bytes", G,
                       "predicted device memory of the process as nvidia-smi shows it: pred_device_reserved_bytes + "
                       "pred_cuda_context_bytes (what nvml_peak_bytes measures); above pred_capacity_bytes exactly where "
                       "the step does not fit there (oom, predicted_oom: what it needs)")
PRED_CAPACITY = _col("pred_capacity_bytes", "int", "bytes", G,
                     "the GPU memory the prediction ran against (--gpu-memory): the allocator model may reserve it "
                     "less the context, frees its cache and retries past it, then records oom")

# ----- Dice ---------------------------------------------------------------------------------------
G = "Dice"
DICE_STATUS = _col("dice_status", "str", "", G, "ok, oom or error (the memory figures stay valid either way)")
DICE_ERROR = _col("dice_error", "str", "", G, "why there is no Dice")
DATASET = _col("dataset", "str", "", G, "the dataset's name")
TRAIN_VOLUMES = _col("train_volumes", "int", "volumes", G, "training volumes")
VAL_VOLUMES = _col("val_volumes", "int", "volumes", G, "validation volumes")
TEST_VOLUMES = _col("test_volumes", "int", "volumes", G, "test volumes")
TRAIN_ITERATIONS = _col("train_iterations", "int", "iterations", G, "iterations trained, all stages")
TRAIN_TIME = _col("train_time_s", "float", "s", G, "training time, all stages")
TRAIN_STOPPED = _col("train_stopped", "str", "", G, "why each stage stopped, and its best iteration")
VAL_DICE = _col("val_dice_mean_fg", "float", "", G, "best validation Dice, mean over foreground classes")
DICE_CLASS = _col("dice_{cls}", "float", "", G, "test Dice of a class, mean over test volumes: 2TP / (2TP + FP + FN)")
DICE_MEAN_FG = _col("dice_mean_fg", "float", "", G, "test Dice, mean over foreground classes")
DICE_PER_VOLUME = _col("dice_per_volume", "json", "", G, "test Dice per volume and class")
THRESHOLD_DICE_CLASS = _col("threshold_dice_{cls}", "float", "", G,
                            "Dice of the best single intensity interval per class (fitted on the training volumes)")
THRESHOLD_DICE_MEAN_FG = _col("threshold_dice_mean_fg", "float", "", G, "the threshold baseline's mean foreground Dice")
INFER_VOLUME_SHAPE = _col("infer_volume_shape", "str", "voxels", G, "a test volume's shape")
INFER_TILE = _col("infer_tile", "str", "voxels", G, "the sliding-window tile")
INFER_VOLUME_TIME = _col("infer_volume_time_s", "float", "s", G, "whole-volume inference time, median over test volumes")
INFER_VOLUME_PEAK_ALLOCATED = _col("infer_volume_peak_allocated_bytes", "int", "bytes", G,
                                   "whole-volume inference: max_memory_allocated (CUDA)")
INFER_VOLUME_CPU_LIVE_PEAK = _col("infer_volume_cpu_live_peak_bytes", "int", "bytes", G,
                                  "whole-volume inference: tracked live-tensor peak (CPU)")
del G

#: the status of a configuration that ran to its result; ``oom`` is a result too (it does not fit)
OK, OOM, ERROR_STATUS, TIMEOUT_STATUS = "ok", "oom", "error", "timeout"
#: not run: its predicted peak did not fit ``--gpu-memory`` (a result of the prediction; ``--no-skip`` measures it)
PREDICTED_OOM = "predicted_oom"
#: a cluster job taken back before it finished (SLURM pre-emption)
PREEMPTED = "preempted"
#: statuses that say the run itself failed (``bench run`` exits 1 when one appears; ``--retry-failed`` re-runs them)
FAILED = (ERROR_STATUS, TIMEOUT_STATUS, PREEMPTED)
#: statuses that are a result (what a sweep set out to learn)
DONE = (OK, OOM, PREDICTED_OOM)
#: the figures a measurement cannot call its own when another ran on its GPU at the same time (:func:`shared`): its
#: times, and what NVML reports (the device's use where it cannot tell processes apart, as in most containers)
NOT_OWN_WHEN_SHARED = (NVML_PEAK, CUDA_CONTEXT, STEP_TIME_MEDIAN, STEP_TIME_MIN, STEP_TIME_MAX, STEP_TIME_IQR,
                       STEP_TIME_SPREAD, THROUGHPUT_VOXELS, THROUGHPUT_INPUT_VOXELS, THROUGHPUT_SAMPLES, ACHIEVED_FLOPS,
                       FLOPS_FRACTION)
#: the configuration columns of a record, in order (a failed record has all of them)
CONFIG_COLUMNS = tuple(c.name for c in SCHEMA.values() if c.group == "configuration")


def pred_category(category: str) -> str:
    return PRED_CATEGORY.format(category=category)


def dice_class(cls: str) -> str:
    return DICE_CLASS.format(cls=cls)


def threshold_dice_class(cls: str) -> str:
    return THRESHOLD_DICE_CLASS.format(cls=cls)


def class_columns(columns: Any) -> list[str]:
    """The per-class test Dice columns among ``columns`` (``dice_mid_gut``, not ``dice_mean_fg``), in their order
    there: a Dice run records them in its dataset's label order (mid-gut, then hind-gut), which its log lines use."""
    fixed = set(SCHEMA)
    rx = SCHEMA[DICE_CLASS].regex
    return [c for c in columns if rx.match(c) and c not in fixed]


def column(name: str) -> Column | None:
    """The schema entry of a column name (a family's template for ``dice_mid_gut``), or None."""
    if name in SCHEMA:
        return SCHEMA[name]
    return next((c for c in SCHEMA.values() if "{" in c.name and c.regex.match(name)), None)


def predicted_on_device(record: Any, reserved: bool = False) -> Any:
    """The predicted peak allocated (or reserved) bytes as ``torch.cuda.max_memory_*`` count them: with cuDNN's
    workspaces (``pred_device_*``), or the allocator model's alone for a record made before those columns.
    ``record``: a record (dict or pandas row), or a DataFrame of them (then a Series, row by row the same)."""
    device, allocator = (PRED_DEVICE_RESERVED, PRED_RESERVED) if reserved else (PRED_DEVICE_ALLOCATED, PRED_ALLOCATED)
    v, a = record.get(device), record.get(allocator)
    if hasattr(v, "where"):  # a DataFrame's column: the device figure where there is one
        return v.where(v.notna(), a) if a is not None else v
    if v is None and hasattr(a, "where"):
        return a
    return a if v is None or v != v else v  # v != v: NaN (a pandas row)


def shared(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` of a measurement during which another ran on its GPU: marked so (``gpu_shared``), the figures
    that are not its own (:data:`NOT_OWN_WHEN_SHARED`) emptied. The allocator's peaks stay: they are the process's."""
    record[GPU_SHARED] = True
    for name in NOT_OWN_WHEN_SHARED:
        if name in record:
            record[name] = None
    return record


def prediction_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The columns of ``record`` that its prediction made (the schema's "prediction" group)."""
    return {k: v for k, v in record.items() if (col := column(k)) is not None and col.group == "prediction"}


def undeclared(record: dict[str, Any]) -> list[str]:
    """Columns of ``record`` that this schema does not declare (a test keeps this empty)."""
    return sorted(k for k in record if column(k) is None)


def config_columns(cfg: RunConfig) -> dict[str, Any]:
    """The configuration columns that follow from a configuration alone (no network is built): what
    every record has, a failed one included."""
    from .options import format_size

    return {
        KEY: cfg.key(), ARCH: cfg.arch, STAGE: cfg.stage, MODE: cfg.mode, BACKEND: cfg.backend,
        PRECISION: cfg.precision, BATCH: cfg.batch, SIZE: format_size(cfg.size), OPTIONS: cfg.options_json(),
        IN_CHANNELS: cfg.in_channels, NUM_CLASSES: cfg.num_classes,
        CHANNELS_LAST: cfg.channels_last, CUDNN_BENCHMARK: cfg.cudnn_benchmark, DICE: cfg.dice,
        ALLOC_CONF: cfg.alloc_conf,
        DATA: cfg.data if cfg.dice else None,
        TRAIN_BUDGET: cfg.train_budget() if cfg.dice else None,
        INFER_WEIGHTING: cfg.weighting if cfg.dice else None, SEED: cfg.seed if cfg.dice else None,
        INFERER: cfg.inferer if cfg.dice else None,
        ARCH_KEY: cfg.arch_key or None, ARCH_LABEL: cfg.arch_label or None,
    }


def markdown() -> str:
    """The column table of the README (generated; ``python -m bench.record`` prints it)."""
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    for group, about in GROUPS.items():
        lines.append(f"| **{group}** | | | {about} |")
        for c in SCHEMA.values():
            if c.group == group:
                lines.append(f"| `{c.name}` | {c.type} | {c.unit} | {c.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - prints the README's table
    print(markdown())
