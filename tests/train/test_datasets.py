"""Real-data loaders (through nnunetv2's readers) and their errors, on tiny written datasets."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from bench.train.data.datasets import DatasetError, load

CASES = 4


def volumes(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    label = rng.integers(0, 3, (12, 10, 8)).astype(np.uint8)
    return (label * 100 + rng.normal(0, 5, label.shape)).astype(np.float32), label


def write_nnunet(root, ending=".nii.gz", label_fn=None):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "mid-gut": 1, "hind-gut": 2},
            "numTraining": CASES, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(CASES):
        image, label = volumes(i)
        if label_fn:
            label = label_fn(i, label)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "imagesTr" / f"fly_{i:03d}_0000{ending}"))
        if label is not None:
            sitk.WriteImage(sitk.GetImageFromArray(label), str(root / "labelsTr" / f"fly_{i:03d}{ending}"))
    return root


def test_nnunet_raw_dataset(tmp_path):
    ds = load(write_nnunet(tmp_path / "Dataset001_Fly"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (2, 1, 1)
    assert ds.labels == {"background": 0, "mid-gut": 1, "hind-gut": 2} and ds.num_classes == 3
    v = ds.train[0]
    assert v.image.shape == (1, 12, 10, 8) and v.label.shape == (12, 10, 8)
    np.testing.assert_array_equal(v.label, volumes(0)[1])
    assert abs(float(v.image.mean())) < 1e-4  # z-score normalised


def test_tiff_folder(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for i in range(CASES):
        image, label = volumes(i)
        tifffile.imwrite(tmp_path / "images" / f"v{i}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"v{i}.tif", label)
    ds = load(tmp_path)
    assert len(ds.train) + len(ds.val) + len(ds.test) == CASES
    np.testing.assert_array_equal(ds.train[1].label, volumes(1)[1])


@pytest.mark.parametrize("label_fn, message", [
    (lambda i, lb: None if i == 2 else lb, "missing label"),
    (lambda i, lb: lb[:, :, :7] if i == 1 else lb, "differ"),
    (lambda i, lb: np.where(lb == 2, 5, lb).astype(np.uint8) if i == 3 else lb, r"label values \[5\]"),
])
def test_nnunet_errors_name_the_case(tmp_path, label_fn, message):
    with pytest.raises(DatasetError, match=message):
        load(write_nnunet(tmp_path / "D", label_fn=label_fn))


def test_bad_paths(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="neither"):
        load(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no labels/"):
        load(tmp_path)


def test_a_file_that_is_not_an_image_is_one_line_naming_it(tmp_path):
    root = write_nnunet(tmp_path / "D")
    bad = root / "imagesTr" / "fly_001_0000.nii.gz"
    bad.write_text("this is not a NIfTI file")
    with pytest.raises(DatasetError, match=r"cannot read .*fly_001_0000.nii.gz as an image") as info:
        load(root)
    assert "\n" not in str(info.value)
