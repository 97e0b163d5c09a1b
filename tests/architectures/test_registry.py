import re
import subprocess
import sys

import pytest

import architectures
from bench.measure.sample import synthetic_batch

EXPECTED = {"cascade", "cascade_pre", "meunet", "nnunet", "nnunet_cascade", "nnunet_resenc", "unet", "unet3d", "vnet"}


def test_names_lists_every_architecture():
    assert set(architectures.names()) == EXPECTED


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError, match="unknown architecture 'unet4d'; valid: cascade, cascade_pre, meunet"):
        architectures.build("unet4d")


def test_bad_override_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unet: unknown override\(s\) widht; valid: encoder_channels"):
        architectures.build("unet", widht=2)


def test_override_changes_the_network():
    wide = architectures.build("unet", encoder_channels=(32, 64, 128, 256, 256))
    assert wide.encoder[0][0][0].out_channels == 32


@pytest.mark.parametrize(("name", "size", "message"), [
    ("unet", (40, 40, 40), "multiple of 16"),
    ("nnunet", (32, 32, 32), "at least 64"),
    ("meunet", (40, 40, 40), "standard patch|image"),
    ("meunet", (280, 280, 280), r"a multiple of 16 and at least 16 \(the size names the standard patch; --set "
                                r"size_refers_to=expanded"),
])
def test_check_size_says_what_is_allowed(name, size, message):
    with pytest.raises(ValueError, match=message):
        architectures.spec(name).check_size(size)


@pytest.mark.parametrize(("name", "overrides"), [(n, {}) for n in architectures.names()]
                         + [("meunet", {"size_refers_to": "expanded"})])
def test_the_edges_a_refused_size_is_told_pass(name, overrides):
    """An odd edge is refused with "a multiple of N and at least M"; the sizes that line names pass (meU-net's
    size need only be even for `divisor`, but its standard patch must be a multiple of 16: the line says 16)."""
    spec = architectures.spec(name)
    for mode in ("train", "infer"):
        with pytest.raises(ValueError, match=r"each edge must be a multiple of (\d+) and at least (\d+)") as err:
            spec.check_size((17, 17, 17), mode, **overrides)
        n, least = map(int, re.search(r"multiple of (\d+) and at least (\d+)", str(err.value)).groups())
        for edge in (least, least + n):
            spec.check_size((edge,) * 3, mode, **overrides)


def test_an_even_size_meunet_refuses_is_told_as_an_odd_one_is():
    """meU-net's size need only be even for its divisor, but the standard patch it names must be a multiple of 16:
    18 and 17 are refused with the same rule."""
    spec = architectures.spec("meunet")
    for edge in (17, 18):
        with pytest.raises(ValueError, match=r"; each edge must be a multiple of 16 and at least 16 \(the size names"):
            spec.check_size((edge,) * 3)


@pytest.mark.parametrize(("name", "batch", "overrides", "norm"), [
    ("unet", 1, {}, "BatchNorm3d"),  # a 1x1x1 bottleneck at batch 1: one value per channel
    ("unet", 2, {}, None),  # BatchNorm has the batch's two
    ("unet", 2, {"norm": "instance"}, "InstanceNorm3d"),  # InstanceNorm has one voxel, whatever the batch
    ("unet", 1, {"norm": "none"}, None),
    ("meunet", 1, {}, "BatchNorm3d"),  # the standard patch at 16
    ("vnet", 1, {}, None),
    ("vnet", 2, {"norm": "instance"}, "InstanceNorm3d"),
])
def test_check_batch_refuses_what_pytorch_cannot_train(name, batch, overrides, norm):
    """check_batch's verdict at 16^3 is the one PyTorch gives when the network trains on it."""
    spec = architectures.spec(name)
    layout = spec.layout((16, 16, 16), 1, 3, spec.hparams(**overrides))
    model = spec.build(**overrides).train()
    if norm is None:
        spec.check_batch((16, 16, 16), batch, **overrides)
        spec.loss(model, synthetic_batch(layout, batch, 3), lambda out, label: out.float().mean())
        return
    with pytest.raises(ValueError, match=f"batch {batch} leaves its {norm} one value per channel"):
        spec.check_batch((16, 16, 16), batch, **overrides)
    with pytest.raises(ValueError, match="Expected more than 1"):
        spec.loss(model, synthetic_batch(layout, batch, 3), lambda out, label: out.float().mean())
    spec.check_batch((16, 16, 16), batch, mode="infer", **overrides)  # inference normalises with running stats


def test_meunet_expanded_size_may_name_the_paper_patch():
    spec = architectures.spec("meunet")
    spec.check_size((200, 200, 200), size_refers_to="expanded", expansion=1.25)  # paper: 160 * 1.25


def test_nothing_imports_torchvision_or_timm():
    code = ("import sys, architectures, bench.cli, bench.sweep.worker, bench.sweep.executor;"
            "[architectures.build(n) for n in ('nnunet', 'nnunet_resenc')];"
            "bad = [m for m in ('torchvision', 'timm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
