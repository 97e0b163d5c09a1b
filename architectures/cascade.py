"""``cascade`` and ``cascade_pre``: the paper's two-stage cascade, and its pre-concatenation ablation.

Stage 1: one or more meU-nets on original-resolution patches (paper: two, k = 1.5 and 1.75; Table 3
trains them at 280^3, i.e. a 160^3 standard patch with k = 1.75, batch 4). Stage 2: the backbone
U-net on 160^3 patches, batch 4, that also sees the stage-1 predictions as one-hot maps:

- ``cascade`` (full-level post-concatenation, the paper's method): the one-hot maps are concatenated
  with the decoder's feature maps at the start of all four decoder levels, nearest-downsampled to
  P/8, P/4, P/2 and as is at P;
- ``cascade_pre`` (pre-concatenation, nnU-Net's way; the paper's Table 5 ablation): they are
  concatenated to the image as input channels.

The stages are trained one after the other (one-hot inputs carry no gradient), so the memory of a
cascade's training step is the larger of its stages' steps: each stage is its own spec here, and the
suite measures and reports every stage. Inference runs stage 1 (every model's standard path, argmax,
one-hot) then stage 2.

Inferred (the paper does not say): with two stage-1 models the stage-2 network receives their one-hot
maps side by side, 2 x 3 = 6 channels (``prior_per_model=True``); ``prior_per_model=False`` instead
concatenates one one-hot map of the stage-1 models' averaged softmax (3 channels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import meunet as meunet_mod
from .blocks import Act, Norm
from .spec import ArchSpec, SampleTensor, Shape, Stage, standard_layout
from .unet import CITATION, UNet


def one_hot(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Argmax of logits (B x C x ...) as a one-hot float map (B x C x ...)."""
    return F.one_hot(logits.argmax(1), num_classes).movedim(-1, 1).to(logits.dtype)


class PriorUNet(UNet):
    """Stage 2: the backbone :class:`UNet` fed with one-hot stage-1 predictions.

    Args:
        stage1_models: how many stage-1 networks' predictions it receives.
        prior_per_model: one one-hot map per stage-1 model (True, inferred default) or one in all.
        prior_mode: ``post`` (all four decoder levels) or ``pre`` (input channels).
        other arguments: as :class:`UNet`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        stage1_models: int = 2,
        prior_per_model: bool = True,
        prior_mode: Literal["post", "pre"] = "post",
        encoder_channels: Sequence[int] = (16, 32, 64, 128, 128),
        decoder_channels: Sequence[int] = (64, 32, 16, 16),
        conv_bias: bool = True,
        norm: Norm = "batch",
        act: Act = "relu",
        checkpointing: bool = False,
    ) -> None:
        prior = num_classes * (stage1_models if prior_per_model else 1)
        super().__init__(in_channels, num_classes, encoder_channels, decoder_channels, conv_bias, norm, act,
                         checkpointing=checkpointing, prior_channels=prior, prior_mode=prior_mode)


def prior_layout(size: Shape, in_channels: int, num_classes: int, hp: Mapping[str, Any]) -> list[SampleTensor]:
    """Image, label and the stage-1 one-hot prior, all at the patch's resolution."""
    channels = num_classes * (hp["stage1_models"] if hp["prior_per_model"] else 1)
    return standard_layout(size, in_channels, num_classes, hp) + [SampleTensor("prior", "prior", size, channels=channels)]


class Cascade(nn.Module):
    """The whole two-stage cascade, for inference (training goes stage by stage, see the specs).

    Args:
        expansions: the stage-1 meU-nets' k (paper: 1.5, 1.75).
        prior_mode: ``post`` (paper) or ``pre`` (ablation).
        prior_per_model: see :class:`PriorUNet`.
        stage1_checkpointing / stage2_checkpointing: gradient checkpointing per stage (meU-net's
            default on; the stage-2 U-net's off).
        stage1_checkpoint_scope: what the stage-1 meU-nets checkpoint (:class:`architectures.meunet.MeUNet`'s
            ``checkpoint_scope``: all, encoder, expanded).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        expansions: Sequence[float] = (1.5, 1.75),
        prior_mode: Literal["post", "pre"] = "post",
        prior_per_model: bool = True,
        stage1_checkpointing: bool = True,
        stage2_checkpointing: bool = False,
        stage1_checkpoint_scope: Literal["all", "encoder", "expanded"] = "all",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.prior_per_model = prior_per_model
        self.stage1 = nn.ModuleList(
            meunet_mod.MeUNet(in_channels, num_classes, expansion=k, checkpointing=stage1_checkpointing,
                              checkpoint_scope=stage1_checkpoint_scope)
            for k in expansions
        )
        self.stage2 = PriorUNet(in_channels, num_classes, len(self.stage1), prior_per_model, prior_mode,
                                checkpointing=stage2_checkpointing)

    def stage1_prior(self, x: torch.Tensor) -> torch.Tensor:
        logits = [m(x) for m in self.stage1]
        if self.prior_per_model:
            return torch.cat([one_hot(lg, self.num_classes) for lg in logits], dim=1)
        return one_hot(torch.stack([lg.softmax(1) for lg in logits]).mean(0), self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(x, self.stage1_prior(x))


def _stages(mode: str):
    def stages(hp: Mapping[str, Any]) -> tuple[Stage, ...]:
        ks = tuple(hp["expansions"])
        scope = {} if hp["stage1_checkpoint_scope"] == "all" else {"checkpoint_scope": hp["stage1_checkpoint_scope"]}
        s1 = tuple(
            Stage(f"stage1_k{k:g}", meunet_mod.SPEC,
                  {"expansion": k, "checkpointing": hp["stage1_checkpointing"], **scope}, module=f"stage1.{i}")
            for i, k in enumerate(ks)
        )
        s2 = Stage("stage2", STAGE2_SPECS[mode], {"stage1_models": len(ks), "prior_per_model": hp["prior_per_model"],
                                                  "prior_mode": mode, "checkpointing": hp["stage2_checkpointing"]},
                   module="stage2")
        return s1 + (s2,)

    return stages


def _cascade_builder(mode: str):
    def build(
        in_channels: int = 1,
        num_classes: int = 3,
        expansions: Sequence[float] = (1.5, 1.75),
        prior_per_model: bool = True,
        stage1_checkpointing: bool = True,
        stage2_checkpointing: bool = False,
        stage1_checkpoint_scope: Literal["all", "encoder", "expanded"] = "all",
    ) -> Cascade:
        return Cascade(in_channels, num_classes, expansions, mode, prior_per_model, stage1_checkpointing,
                       stage2_checkpointing, stage1_checkpoint_scope)

    build.__doc__ = Cascade.__doc__
    return build


def _stage2_spec(mode: str) -> ArchSpec:
    return ArchSpec(
        name=f"cascade{'' if mode == 'post' else '_pre'}.stage2",
        summary=f"stage 2 of the cascade: backbone U-net, {mode}-concatenated one-hot priors",
        citation=CITATION,
        builder=PriorUNet,
        divisor=16,
        min_size=16,
        default_sizes=((160, 160, 160),),
        default_batches=(4,),
        cpu_sizes=((32, 32, 32),),
        checkpointing="checkpointing",
        layout=prior_layout,
    )


STAGE2_SPECS = {"post": _stage2_spec("post"), "pre": _stage2_spec("pre")}


def _cascade_spec(mode: str) -> ArchSpec:
    return ArchSpec(
        name="cascade" if mode == "post" else "cascade_pre",
        summary=(
            "two-stage cascade: 2 meU-nets (k=1.5, 1.75) then U-net with "
            + ("full-level post-concatenation" if mode == "post" else "pre-concatenation (ablation)")
        ),
        citation=CITATION,
        builder=_cascade_builder(mode),
        divisor=16,
        min_size=16,
        default_sizes=((160, 160, 160),),
        default_batches=(4,),
        cpu_sizes=((32, 32, 32),),
        default_precision="fp16",
        checkpointing="stage1_checkpointing",
        size_meaning="standard patch of every stage (stage-1 meU-nets expand it by their k)",
        stages=_stages(mode),
        prior=lambda model, image: model.stage1_prior(image),
    )


SPECS = (_cascade_spec("post"), _cascade_spec("pre"))
