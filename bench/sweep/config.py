"""A run configuration: one architecture (stage) x size x batch x mode x backend x precision x options.

Frozen and hashable; :meth:`RunConfig.key` is a stable digest of the fields that define *what* is
measured (not how often, nor under which time limit), so the results store can tell which
configurations are done. Imports no torch: the sweep engine handles configurations without building
networks.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..options import Backend, Inferer, Mode, Precision, Weighting, choice, format_size, human_bytes

if TYPE_CHECKING:
    from architectures import Shape


@dataclass(frozen=True)
class RunConfig:
    arch: str
    size: Shape
    batch: int
    mode: str = Mode.TRAIN.value
    backend: str = Backend.CPU.value
    precision: str = Precision.FP32.value
    stage: str = ""  # a cascade's stage; "" is the whole architecture
    overrides: tuple[tuple[str, Any], ...] = ()
    channels_last: bool = False
    repeats: int = field(default=3, compare=False)
    # a Dice run: train on ``data`` within the budget, evaluate on its test volumes (see bench.train.dice_run)
    dice: bool = False
    data: str = "phantom"
    train_minutes: float | None = None
    train_iterations: int | None = None
    weighting: str = Weighting.CENTRE.value
    seed: int = 0  # a Dice run's initialisation and patch sampling
    # the user's data shape: input channels and output classes of the network
    in_channels: int = 1
    num_classes: int = 3
    inferer: str = Inferer.SEGMEM.value  # a Dice run's whole-volume sliding window
    cudnn_benchmark: bool = False  # torch.backends.cudnn.benchmark on the CUDA backend
    #: where to write the step's memory snapshots (prediction, and on CUDA the recorded one); not in the key
    snapshot_dir: str = field(default="", compare=False)
    gpu: str = ""  # the catalogue GPU to predict the step time for ("": none, or the live CUDA device)
    #: the caching allocator's options (``PYTORCH_CUDA_ALLOC_CONF`` syntax): the worker runs under them, and the
    #: prediction's allocator model follows them, so a figure names the settings it was made with
    alloc_conf: str = ""
    #: the GPU memory (bytes) a prediction runs against (--gpu-memory with --backend predict); 0: unlimited
    gpu_memory: int = 0
    #: the architecture as the key names it when ``arch`` holds a file path (ArchSpec.key_name: an nnU-Net
    #: plans configuration keys by the plans file's content digest, so that moving the file keeps the key)
    arch_key: str = ""
    #: changes to the architecture's training recipe (``--set recipe.KEY=VALUE``, keys without ``recipe.``);
    #: in the key only when given, so that configurations on the spec's own recipe keep their keys
    recipe: tuple[tuple[str, Any], ...] = ()
    #: the architecture as labels show it (ArchSpec.display_name) when that is not ``arch``; not in the key
    arch_label: str = field(default="", compare=False)

    DICE_FIELDS = ("dice", "data", "train_minutes", "train_iterations", "weighting", "seed", "inferer")
    #: fields added after records existed: left out of the key at these values, so that old keys stay valid
    KEY_DEFAULTS = {"in_channels": 1, "num_classes": 3, "inferer": Inferer.SEGMEM.value, "alloc_conf": ""}

    def __post_init__(self) -> None:
        # plain strings (not enum members) so that keys and JSON are the same however a config was made
        for name, kind in (("mode", Mode), ("backend", Backend), ("precision", Precision), ("weighting", Weighting),
                           ("inferer", Inferer)):
            object.__setattr__(self, name, choice(kind, getattr(self, name), name).value)

    @property
    def backend_kind(self) -> Backend:
        return Backend(self.backend)

    def key(self) -> str:
        d = asdict(self)
        d.pop("repeats")
        d.pop("snapshot_dir")
        d.pop("arch_label")
        if not self.cudnn_benchmark:  # keys from before the option existed stay
            d.pop("cudnn_benchmark")
        # keys are frozen: the backend was called "device" when the first records were written
        d["device"] = d.pop("backend")
        if not self.dice:  # memory-only runs keep the keys they had before Dice existed
            for k in self.DICE_FIELDS:
                d.pop(k)
        for k, default in self.KEY_DEFAULTS.items():
            if d.get(k, default) == default:
                d.pop(k, None)
        if not self.gpu:  # and runs without --gpu the keys they had before it existed
            d.pop("gpu")
        if not self.gpu_memory:  # and predictions without a capacity theirs
            d.pop("gpu_memory")
        if d.pop("arch_key"):
            d["arch"] = self.arch_key
        if not self.recipe:  # and runs on the spec's own recipe the keys they had before recipes existed
            d.pop("recipe")
        blob = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def recipe_dict(self) -> dict[str, Any]:
        return dict(self.recipe)

    def options_json(self) -> str:
        return json.dumps(dict(self.overrides), sort_keys=True, default=list)

    def train_budget(self) -> str:
        """A Dice run's budget per stage, as written in records and on the console."""
        parts = [f"{self.train_minutes:g} min" if self.train_minutes else "",
                 f"{self.train_iterations} iterations" if self.train_iterations else ""]
        return " or ".join(p for p in parts if p) + " per stage"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        d = json.loads(text)
        d["size"] = tuple(d["size"])
        d["overrides"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in d["overrides"])
        d["recipe"] = tuple((k, v) for k, v in d.get("recipe", ()))
        return cls(**d)

    def label(self, patch: str | None = None) -> str:
        """One line naming the configuration, its stage included (plain text: print it with markup off).
        ``patch`` names the patch in words (:meth:`ArchSpec.patch_label`, e.g. ``160^3 -> 240^3``; the
        engine cannot build it without the specs): :func:`bench.sweep.expand.label` passes it."""
        stage = f" [{self.stage}]" if self.stage else ""
        opts = ",".join([f"{k}={v}" for k, v in self.overrides] + [f"recipe.{k}={v}" for k, v in self.recipe])
        dice = f" +dice({self.data})" if self.dice else ""
        shape = "" if self.data_shape_is_default else f" {self.in_channels}ch {self.num_classes}cls"
        bench = " cudnn.benchmark" if self.cudnn_benchmark else ""
        alloc = f" alloc({self.alloc_conf})" if self.alloc_conf else ""
        cap = f" at {human_bytes(self.gpu_memory)}" if self.gpu_memory else ""
        layout = " channels_last" if self.channels_last else ""
        return (f"{self.arch_label or self.arch}{stage} {self.mode} {patch or format_size(self.size)} b{self.batch}{shape} "
                f"{self.precision}{layout} {self.backend}{' ' + opts if opts else ''}{bench}{cap}{alloc}{dice}")

    @property
    def data_shape_is_default(self) -> bool:
        return (self.in_channels, self.num_classes) == (self.KEY_DEFAULTS["in_channels"], self.KEY_DEFAULTS["num_classes"])

    def slug(self) -> str:
        """A file name for this configuration's artefacts (snapshots): readable, and unique by the key."""
        stage = f"-{self.stage}" if self.stage else ""
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", self.arch_label or self.arch)  # no ':', '@', '#', '/' in file names
        return (f"{name}{stage}-{self.mode}-{format_size(self.size)}-b{self.batch}-{self.precision}"
                f"{'-cudnnbench' if self.cudnn_benchmark else ''}-{self.key()[:8]}")
