"""nnU-Net plans in and out: nnunetv2's planners on a fingerprint, and the network a plans file names."""

import dataclasses
import json
import math
import shutil

import pytest

import architectures
from architectures import nnunet_planner as P
from architectures import nnunet_plans as N
from bench.sweep.expand import expand

CT = P.Fingerprint.from_median((500, 512, 512), (1, 0.78, 0.78), ["CT"], 3)
#: the paper's microCT volumes (1072 x 470 x 470, isotropic 2.95 um, 24 training + validation cases)
MICROCT = P.Fingerprint.from_median((1072, 470, 470), (0.00295,) * 3, 1, 3, cases=24)


@pytest.fixture(scope="module")
def ct_plans():
    """nnunetv2's default and ResEnc XL plans for a CT-like dataset (planned once: seconds each)."""
    return {name: P.plan_files(CT, name) for name in ("default", "resenc_xl")}


@pytest.fixture(scope="module")
def microct_plans():
    return P.plan(MICROCT, "default")


@pytest.fixture
def plans_file(ct_plans, tmp_path):
    plans, dataset = ct_plans["resenc_xl"]
    path = N.save(plans, tmp_path / "plans.json")
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    return path


def _check_plans(plans, network_class, target_gb):
    confs = N.three_d_configurations(plans)
    assert "3d_fullres" in confs
    for name in confs:
        c = N.configuration(plans, name)
        assert c.class_name == network_class
        assert all(p % d == 0 for p, d in zip(c.patch, c.divisors)), (name, c.patch, c.divisors)
        assert c.batch >= 2  # nnU-Net's minimum batch
        # the bottleneck keeps at least nnU-Net's minimum edge (4) on every axis
        assert all(p // d >= 4 for p, d in zip(c.patch, c.divisors))
    assert plans[P.PROVENANCE]["gpu_memory_target_in_gb"] == target_gb


def test_default_and_xl_plans_have_nnunets_network_and_divisible_patches(ct_plans):
    _check_plans(ct_plans["default"][0], "PlainConvUNet", 8)
    _check_plans(ct_plans["resenc_xl"][0], "ResidualEncoderUNet", 40)
    # XL plans for a larger GPU: a larger patch than the default's, at nnU-Net's minimum batch
    xl = N.configuration(ct_plans["resenc_xl"][0], "3d_fullres")
    default = N.configuration(ct_plans["default"][0], "3d_fullres")
    assert math.prod(xl.patch) > math.prod(default.patch)
    # the dataset.json beside the plans: 1 CT channel, 3 labels
    assert ct_plans["default"][1]["channel_names"] == {"0": "CT"} and len(ct_plans["default"][1]["labels"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("planner,target", [("resenc_m", 8), ("resenc_l", 24)])
def test_resenc_m_and_l_presets(planner, target):
    _check_plans(P.plan(CT, planner), "ResidualEncoderUNet", target)


def test_the_cascade_configuration_takes_the_foreground_as_input_channels(ct_plans):
    plans = ct_plans["default"][0]
    assert N.configuration(plans, "3d_cascade_fullres").previous_stage == "3d_lowres"
    spec = N.plans_spec(plans, "3d_cascade_fullres")
    net = spec.build_detached(2, 4)
    assert net.net.encoder.stages[0][0].convs[0].conv.in_channels == 2 + 3  # image + one-hot foreground
    assert [t.role for t in spec.layout(spec.default_sizes[0], 2, 4, {})] == ["image", "label", "prior"]


def test_a_plans_file_round_trips_into_the_network_nnunetv2_builds(plans_file):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = json.loads(plans_file.read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    theirs = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                    1, 3, allow_init=False, deep_supervision=True)
    spec = architectures.spec(N.spec_name(plans_file, "3d_fullres"))
    assert spec.param_count(1, 3) == sum(p.numel() for p in theirs.parameters())
    assert type(spec.build_detached(1, 3)).__name__ == "ResidualEncoderUNet"
    assert spec.default_sizes == (tuple(plans["configurations"]["3d_fullres"]["patch_size"]),)
    assert spec.default_batches == (plans["configurations"]["3d_fullres"]["batch_size"],)
    assert N.data_shape(plans_file) == (1, 3)


def test_the_key_follows_the_plans_content_not_the_path(plans_file, tmp_path):
    moved = tmp_path / "elsewhere" / "plans.json"
    moved.parent.mkdir()
    shutil.copy(plans_file, moved)
    key = {p: expand([N.spec_name(p, "3d_fullres")], backend="predict")[0].key() for p in (plans_file, moved)}
    assert key[plans_file] == key[moved]
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 3
    changed = N.save(plans, tmp_path / "changed.json")
    cfg = expand([N.spec_name(changed, "3d_fullres")], backend="predict")[0]
    assert cfg.batch == 3 and cfg.key() != key[plans_file]
    assert cfg.arch_key.startswith("nnunet-plans:3d_fullres@sha256:") and str(changed) in cfg.arch


def test_a_plans_configuration_is_shown_by_its_file_stem_and_digest_not_its_path(plans_file, tmp_path):
    """One short name from the spec (labels, tables, plots); out of the key, so keys stay what they were."""
    moved = tmp_path / "elsewhere" / "plans.json"
    moved.parent.mkdir()
    shutil.copy(plans_file, moved)
    cfgs = {p: expand([N.spec_name(p, "3d_fullres")], backend="predict")[0] for p in (plans_file, moved)}
    short = f"nnunet-plans:3d_fullres@plans#{N.digest(plans_file)[:6]}"
    assert {c.arch_label for c in cfgs.values()} == {short} == {architectures.spec(N.spec_name(moved, "3d_fullres")).display_name}
    assert all(c.label().startswith(short + " train ") and str(tmp_path) not in c.label() + c.slug()
               and not set(":@#/") & set(c.slug())
               for c in cfgs.values())
    assert dataclasses.replace(cfgs[moved], arch_label="").key() == cfgs[moved].key()
    assert architectures.spec("unet").display_name == "unet"  # a registered name is its own


def test_an_elongated_plans_patch_is_accepted_per_axis(microct_plans):
    c = N.configuration(microct_plans, "3d_fullres")
    assert len(set(c.divisors)) > 1, c.divisors  # nnU-Net pools some axes fewer times
    spec = N.plans_spec(microct_plans, "3d_fullres")
    spec.check_size(c.patch)
    bad = (c.patch[0], c.patch[1], c.patch[2] + 8)
    with pytest.raises(ValueError) as e:
        spec.check_size(bad)
    msg = str(e.value)
    assert "\n" not in msg and f"multiples of {'x'.join(map(str, c.divisors))}" in msg and "per axis" in msg


def test_bad_plans_and_configurations_say_so_in_one_line(tmp_path, ct_plans):
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"spacings": []}))
    cases = [(lambda: N.load_plans(not_json), "not an nnU-Net plans file"),
             (lambda: N.load_plans(other), "not an nnU-Net plans file"),
             (lambda: N.load_plans(tmp_path / "missing.json"), "no such plans file"),
             (lambda: N.configuration(ct_plans["default"][0], "3d_huge"), "they have: 2d, 3d_lowres, 3d_fullres"),
             (lambda: N.configuration(ct_plans["default"][0], "2d"), "is 2D"),
             (lambda: P.Fingerprint.from_median((500, 512), (1, 1), 1, 3), "three spatial dimensions"),
             (lambda: P.Fingerprint.from_median((64,) * 3, (1,) * 3, 1, 1), "at least 2")]
    for call, words in cases:
        with pytest.raises(ValueError) as e:
            call()
        assert words in str(e.value) and "\n" not in str(e.value)


def test_a_fingerprint_json_and_a_raw_folder_plan_like_the_command_line(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    import numpy as np

    raw = tmp_path / "Dataset001_x"
    (raw / "imagesTr").mkdir(parents=True)
    for i, shape in enumerate([(40, 64, 48), (44, 60, 48), (40, 64, 52)]):
        img = sitk.GetImageFromArray(np.zeros(shape, np.uint8))  # numpy order z, y, x
        img.SetSpacing((0.8, 0.8, 2.5))  # SimpleITK order x, y, z
        sitk.WriteImage(img, str(raw / "imagesTr" / f"c{i}_0000.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1},
                                                   "numTraining": 3, "file_ending": ".nii.gz"}))
    fp = P.Fingerprint.from_raw(raw)
    assert fp.median_shape == (40, 64, 48) and fp.median_spacing == pytest.approx((2.5, 0.8, 0.8))
    assert fp.channel_names == ("MRI",) and fp.labels == ("background", "a")
    # the same fingerprint written as nnU-Net's dataset_fingerprint.json, dataset.json beside it
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fp.fingerprint_json()))
    shutil.copy(raw / "dataset.json", pre / "dataset.json")
    again = P.Fingerprint.from_json(pre / "dataset_fingerprint.json")
    assert (again.shapes, again.spacings, again.labels) == (fp.shapes, fp.spacings, fp.labels)
