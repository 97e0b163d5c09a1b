"""A run configuration: one architecture (stage) x size x batch x mode x device x precision x options.

Frozen and hashable; :meth:`RunConfig.key` is a stable digest of the fields that define *what* is
measured (not how often), so the results store can tell which configurations are done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class RunConfig:
    arch: str
    size: Shape
    batch: int
    mode: str = "train"
    device: str = "cpu"  # cuda | cpu | predict
    precision: str = "fp32"
    stage: str = ""  # a cascade's stage; "" is the whole architecture
    overrides: tuple[tuple[str, Any], ...] = ()
    channels_last: bool = False
    repeats: int = field(default=3, compare=False)
    # a Dice run: train on ``data`` within the budget, evaluate on its test volumes (see bench.evaluate)
    dice: bool = False
    data: str = "phantom"
    train_minutes: float | None = None
    train_iterations: int | None = None
    weighting: str = "centre"

    DICE_FIELDS = ("dice", "data", "train_minutes", "train_iterations", "weighting")

    def key(self) -> str:
        d = asdict(self)
        d.pop("repeats")
        if not self.dice:  # memory-only runs keep the keys they had before Dice existed
            for k in self.DICE_FIELDS:
                d.pop(k)
        blob = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        d = json.loads(text)
        d["size"] = tuple(d["size"])
        d["overrides"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in d["overrides"])
        return cls(**d)

    def label(self) -> str:
        stage = f"[{self.stage}]" if self.stage else ""
        opts = ",".join(f"{k}={v}" for k, v in self.overrides)
        dice = f" +dice[{self.data}]" if self.dice else ""
        return (f"{self.arch}{stage} {self.mode} {'x'.join(map(str, self.size))} b{self.batch} "
                f"{self.precision} {self.device}{' ' + opts if opts else ''}{dice}")
