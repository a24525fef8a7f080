"""Training datasets: crops whose intrinsics and targets agree with the pose; detector images."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pose6d_ros.core.camera import project
from pose6d_ros.data.datasets import CropDataset, DetectionDataset


def test_crop_targets_agree_with_crop_intrinsics(synth_dir, objects):
    ds = CropDataset(synth_dir, objects, size=64, augment=False)
    assert len(ds) >= 10
    for k in range(len(ds)):
        item = ds[k]
        full = item["mask_full"] > 0
        assert not ((item["mask_visib"] > 0) & ~full).any()
        v, u = torch.nonzero(full, as_tuple=True)
        X = item["xyz"][:, v, u].T.double()
        uv = project(X @ item["R"].double().T + item["t"].double(), item["K"].double())
        # Targets are warped with nearest neighbours: each crop pixel shows a full-image
        # pixel at most half a full-image pixel away.
        x0, _, x1, _ = item["box"].tolist()
        tol = 0.5 * 64 / (x1 - x0) + 0.51
        assert (uv - torch.stack([u, v], 1)).abs().max() <= tol
        norm = item["xyz_norm"][:, full]
        assert norm.abs().max() <= 1.05
        c, s = item["center"], item["scale"]
        np.testing.assert_allclose(norm.T * s + c, item["xyz"][:, full].T, atol=1e-6)
        assert (item["xyz_norm"][:, ~full] == 0).all()


def test_crop_jitter_and_augmentation_keep_targets_consistent(synth_dir, objects):
    plain = CropDataset(synth_dir, objects, size=64, augment=False)
    aug = CropDataset(synth_dir, objects, size=64, augment=True, occlude=1.0)
    torch.manual_seed(0)
    a, b = plain[0], aug[0]
    assert not torch.equal(a["image"], b["image"])
    assert not torch.equal(a["box"], b["box"])
    assert b["mask_visib"].sum() < b["mask_full"].sum()
    assert not ((b["mask_visib"] > 0) & (b["mask_full"] == 0)).any()
    batch = next(iter(DataLoader(aug, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["K"].shape == (4, 3, 3)


def test_detection_targets(synth_dir, objects):
    ds = DetectionDataset(synth_dir, objects, augment=False)
    assert len(ds) == 6
    for k in range(len(ds)):
        image, target = ds[k]
        assert image.shape == (3, 240, 320) and image.min() >= 0 and image.max() <= 1
        n = len(target["labels"])
        assert target["boxes"].shape == (n, 4) and target["masks"].shape == (n, 240, 320)
        assert ((target["labels"] >= 1) & (target["labels"] <= len(objects))).all()
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            v, u = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [u.min(), v.min(), u.max() + 1, v.max() + 1]


def test_detection_crops_at_test_time_scale(synth_dir, objects):
    whole = DetectionDataset(synth_dir, objects, augment=False)
    # No jitter and a crop larger than the image: the whole image at scale 1, zero-padded.
    padded = DetectionDataset(synth_dir, objects, augment=False, crop_size=352, min_size=240,
                              max_size=320)
    image, target = padded[0]
    ref_image, ref = whole[0]
    assert image.shape == (3, 352, 352)
    assert torch.equal(image[:, :240, :320], ref_image) and image[:, 240:].eq(0).all()
    assert torch.equal(target["boxes"], ref["boxes"])
    assert torch.equal(target["masks"][:, :240, :320], ref["masks"])

    crops = DetectionDataset(synth_dir, objects, crop_size=96, min_size=240, max_size=320,
                             scale_jitter=0.25, min_pixels=20)
    found = 0
    for k in range(len(crops)):
        image, target = crops[k]
        assert image.shape == (3, 96, 96)
        n = len(target["labels"])
        found += n
        assert target["masks"].shape == (n, 96, 96) and target["boxes"].shape == (n, 4)
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            assert mask.sum() >= 20
            v, u = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [u.min(), v.min(), u.max() + 1, v.max() + 1]
    assert found > 0
    with pytest.raises(ValueError, match="scale_jitter"):
        DetectionDataset(synth_dir, objects, crop_size=96, scale_jitter=1.0)


def test_several_dataset_folders_train_as_one(synth_dir, objects, tmp_path):
    other = tmp_path / "other" / "train"
    other.mkdir(parents=True)
    (other / "000000").symlink_to(synth_dir / "train" / "000000")
    crops = [len(CropDataset(d, objects, size=32)) for d in (synth_dir, other.parent)]
    assert len(CropDataset([synth_dir, str(other.parent)], objects, size=32)) == sum(crops)
    images = [len(DetectionDataset(d, objects)) for d in (synth_dir, other.parent)]
    assert len(DetectionDataset([synth_dir, other.parent], objects)) == sum(images)
    # The same folder twice is one folder.
    assert len(DetectionDataset([synth_dir, synth_dir], objects)) == images[0]
    assert len(CropDataset([synth_dir, synth_dir], objects, size=32)) == crops[0]
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        DetectionDataset([synth_dir, tmp_path], objects)
