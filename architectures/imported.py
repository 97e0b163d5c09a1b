"""Networks the suite has never seen: any factory or ``nn.Module`` class by import path.

``bench run --arch my_pkg.nets:build`` wraps ``build(in_channels, num_classes, **overrides)`` (or a class
taking the same) in a :class:`FactorySpec`: the sample is one image patch and its label, the loss the
suite's criterion on the output (deep-supervision lists as for the built-in networks), inference the
forward. The factory's keyword arguments are the overrides (``--set width=32``). What the suite cannot
know is declared: ``--set divisor=16`` (the input divisibility, taken by the suite, not passed on), or a
whole :class:`~architectures.spec.ArchSpec` by path (``--arch my_pkg.nets:SPEC``). An undeclared
divisibility is found by probing: a forward on fake tensors (no memory, no compute) at one edge per
candidate power of two, each edge an odd multiple of it, so that the smallest candidate whose edge
runs, with logits at the input's size, is the divisibility (``divisor_note`` says what was found).

Everything that can go wrong with a user's network before measuring is one ``ValueError`` naming the
problem: the module does not import, the attribute does not exist, the factory needs arguments that
were not given (listed from its signature), it returns something that is not an ``nn.Module``, its
output's spatial size differs from the label's.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .spec import ArchSpec, Shape

#: the override through which a user declares the input divisibility (taken by the suite, not the factory)
DIVISOR = "divisor"
#: candidate divisibilities a probe tries, smallest first
CANDIDATES = (1, 2, 4, 8, 16, 32, 64)
#: a factory's name for the number of output classes: segmem's, or MONAI's
CLASS_ARGS = ("num_classes", "out_channels")

_probes: dict[tuple[str, str], tuple[int, str]] = {}
_outputs: dict[tuple[str, str, Shape], Shape | str] = {}


def probe_edge(d: int) -> int:
    """An edge whose only power-of-two factor is ``d`` (an odd multiple of it), at least 128 voxels, so
    that a network needing more divisibility than ``d`` fails at it and one needing ``d`` does not fail
    for being too small."""
    return d * (2 * -(-64 // d) + 1)


def _key(overrides: Mapping[str, Any]) -> str:
    return repr(sorted(overrides.items()))


@dataclass(frozen=True)
class FactorySpec(ArchSpec):
    """An :class:`ArchSpec` around a factory the suite knows only by its signature.

    Attributes (beyond :class:`ArchSpec`'s):
        class_arg: the factory's argument for the number of classes (``num_classes``, or MONAI's
            ``out_channels``).
        fixed: arguments the suite sets and hides from the overrides (MONAI: ``spatial_dims=3``).
        defaults: the suite's values for arguments the factory requires (MONAI's DynUNet ``strides``).
        declared_divisor: the divisibility as a function of the hyper-parameters; None: ``--set divisor``
            or probed.
        size_rule: a further rule on sizes, returning what is wrong or None (UNETR: its ``img_size``).
        check_output: check, by a fake forward at each run's size, that the logits have the label's size.
    """

    class_arg: str = "num_classes"
    fixed: tuple[tuple[str, Any], ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    declared_divisor: Callable[[Mapping[str, Any]], int] | None = None
    size_rule: Callable[[Shape, Mapping[str, Any]], str | None] | None = None
    check_output: bool = True

    # ----- the factory's signature ----------------------------------------------------------------
    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.builder)

    def _takes_any(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in self._signature().parameters.values())

    def parameters(self) -> dict[str, inspect.Parameter]:
        hidden = {"self", "in_channels", self.class_arg, *dict(self.fixed)}
        defaults = dict(self.defaults)
        params = {}
        for k, p in self._signature().parameters.items():
            if k in hidden or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[k] = p.replace(default=defaults[k]) if k in defaults else p
        if self.declared_divisor is None:
            params[DIVISOR] = inspect.Parameter(DIVISOR, inspect.Parameter.KEYWORD_ONLY, default=None)
        return params

    def hparams(self, **overrides: Any) -> dict[str, Any]:
        params = self.parameters()
        missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in overrides]
        if missing:
            raise ValueError(
                f"{self.name} needs argument(s) that were not given: {', '.join(missing)} (its signature: "
                f"{self._signature()}); give them with " + " ".join(f"--set {k}=..." for k in missing))
        if not self._takes_any():
            return super().hparams(**overrides)
        hp = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        hp.update(overrides)
        return hp

    def build(self, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> nn.Module:
        hp = self.hparams(**overrides)
        hp.pop(DIVISOR, None)
        try:
            model = self.builder(in_channels=in_channels, **{self.class_arg: num_classes}, **dict(self.fixed), **hp)
        except (TypeError, AssertionError, ValueError) as exc:
            raise ValueError(f"{self.name}: cannot build with {overrides}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ValueError(f"{self.name} returned a {type(model).__name__}, not an nn.Module: a factory must return "
                             "the network")
        return model

    # ----- sizes ----------------------------------------------------------------------------------
    def divisor_for(self, **overrides: Any) -> int:
        declared = overrides.get(DIVISOR)
        if declared is not None:
            if not isinstance(declared, int) or isinstance(declared, bool) or declared < 1:
                raise ValueError(f"{self.name}: --set divisor must be a positive integer; got {declared!r}")
            return declared
        if self.declared_divisor is not None:
            return int(self.declared_divisor(self.hparams(**overrides)))
        return self._probe(overrides)[0]

    def divisor_note(self, **overrides: Any) -> str:
        if overrides.get(DIVISOR) is not None or self.declared_divisor is not None:
            return ""
        return self._probe(overrides)[1]

    def _probe(self, overrides: Mapping[str, Any]) -> tuple[int, str]:
        key = (self.name, _key(overrides))
        if key not in _probes:
            _probes[key] = self._run_probe(overrides)
        return _probes[key]

    def _run_probe(self, overrides: Mapping[str, Any]) -> tuple[int, str]:
        failed = []
        for d in CANDIDATES:
            edge = probe_edge(d)
            out = self.output_shape((edge,) * 3, **overrides)
            if out == (edge,) * 3:
                tried = (f"; {', '.join(str(e) for e, _ in failed)} failed: {failed[-1][1][:120]}" if failed else "")
                return d, (f"{self.name}: input divisibility not declared; probed by fake-tensor forwards: {d} "
                           f"(edge {edge} ran{tried}). Declare it with --set divisor={d}")
            failed.append((edge, out if isinstance(out, str) else self._mismatch((edge,) * 3, out)))
        edge, why = failed[-1]
        raise ValueError(f"{self.name}: no input size ran in fake-tensor forwards at edges "
                         f"{', '.join(str(e) for e, _ in failed)} (at {edge}: {why}); declare the divisibility "
                         "with --set divisor=N")

    def _mismatch(self, size: Shape, out: Shape) -> str:
        fmt = "x".join
        return (f"the output's spatial size {fmt(map(str, out))} does not match the label's {fmt(map(str, size))}: "
                "the suite's loss needs logits at the label's size")

    def output_shape(self, size: Shape, **overrides: Any) -> Shape | str:
        """The logits' spatial shape for one 1-channel image of ``size`` (a forward on fake tensors), or
        the forward's error in one line. Build errors (``ValueError``) are raised."""
        key = (self.name, _key(overrides), tuple(size))
        if key in _outputs:
            return _outputs[key]
        from torch._subclasses.fake_tensor import FakeTensorMode

        quiet = logging.getLogger("torch._subclasses.fake_tensor")  # it logs every failing op at ERROR level
        with FakeTensorMode(), _level(quiet, logging.CRITICAL):
            model = self.build_model(1, 3, **overrides).eval()
            try:
                with torch.no_grad():
                    out = self.infer(model, torch.empty(1, 1, *size))
                result: Shape | str = (tuple(out.shape[2:]) if isinstance(out, torch.Tensor) else
                                       f"the forward returned a {type(out).__name__}, not a tensor of logits")
            except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is what the probe learns
                result = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        _outputs[key] = result
        return result

    def check_size(self, size: Shape, mode: str = "train", **overrides: Any) -> None:
        super().check_size(size, mode, **overrides)
        rule = self.size_rule(size, self.hparams(**overrides)) if self.size_rule else None
        if rule:
            raise ValueError(f"{self.name}: size {'x'.join(map(str, size))} not allowed: {rule}")
        if self.check_output:
            out = self.output_shape(size, **overrides)
            if isinstance(out, str):
                raise ValueError(f"{self.name}: the forward fails at size {'x'.join(map(str, size))}: {out}")
            if out != tuple(size):
                raise ValueError(f"{self.name}: {self._mismatch(size, out)}")


@contextlib.contextmanager
def _level(logger: logging.Logger, level: int) -> Iterator[None]:
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else f"{getattr(obj, '__qualname__', obj)} (by import path)"


def factory_spec(name: str, builder: Callable[..., nn.Module], **fields: Any) -> FactorySpec:
    """A :class:`FactorySpec` for ``builder`` with the generic defaults (128^3 batch 2 on CUDA and for
    prediction, 64^3 batch 1 on the CPU: multiples of every candidate divisibility)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        raise ValueError(f"{name}: cannot read the signature of {builder!r}; give a function or an nn.Module class") from None
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    class_arg = fields.pop("class_arg", None) or next((a for a in CLASS_ARGS if a in params), CLASS_ARGS[0])
    if not takes_any and ("in_channels" not in params or class_arg not in params):
        raise ValueError(f"{name} must take in_channels and num_classes (the suite sets them); its signature is "
                         f"{inspect.signature(builder)}")
    base: dict[str, Any] = dict(summary=_summary(builder), citation=f"{name} (by import path)", divisor=1,
                                default_sizes=((128, 128, 128),), default_batches=(2,), cpu_sizes=((64, 64, 64),),
                                cpu_batches=(1,), min_size=8, class_arg=class_arg)
    base.update(fields)
    return FactorySpec(name=name, builder=builder, **base)


def from_path(path: str) -> ArchSpec:
    """The spec of ``module:attribute``: an :class:`ArchSpec` itself, or a factory / class wrapped in a
    :class:`FactorySpec`. The working directory is importable, as it is for ``python -m``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{path!r}: an import path is module:attribute, e.g. my_pkg.nets:build")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may fail in any way; say how
        raise ValueError(f"{path}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                             and getattr(v, "__module__", None) == module.__name__)
            raise ValueError(f"{path}: module {module_name} has no attribute {attr!r}; it defines: "
                             f"{', '.join(defined) or 'no functions or classes'}")
        obj = getattr(obj, part)
    if isinstance(obj, ArchSpec):
        return obj
    if not callable(obj):
        raise ValueError(f"{path} is of type {type(obj).__name__}, not a factory function, an nn.Module class or an ArchSpec")
    return factory_spec(path, obj)
