"""An installed package's architecture: its own :class:`ArchSpec` declares what the suite cannot know
(divisibility, default sizes, its citation), so nothing is probed."""

from torch import nn

from architectures import ArchSpec


class TinySeg(nn.Module):
    """One stride-2 level: inputs must be even."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 4):
        super().__init__()
        self.down = nn.Conv3d(in_channels, width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose3d(width, num_classes, 2, stride=2)

    def forward(self, x):
        return self.up(self.down(x).relu())


SPEC = ArchSpec(
    name="plugin_tiny",
    summary="a one-level network shipped by an installed package (example)",
    citation="segmem's entry-point example (tests/architectures/plugin_example)",
    builder=TinySeg,
    divisor=2,
    default_sizes=((64, 64, 64),),
    default_batches=(2,),
    cpu_sizes=((16, 16, 16),),
)
