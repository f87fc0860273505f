"""The probes that located UpAttLLSTM's validation collapse (a learned clot size / width,
benchmarks/results/pilots/up_spatial_da): benchmarks/clot_crop_outcomes.py's crops resampled in-plane, noise levels
and outcome counts, and benchmarks/clot_shapes.py's clot lengths and widths."""
import os

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def probes(benchmark_module):
    return benchmark_module("clot_crop_outcomes")


def test_zoom_in_plane_shrinks_with_padding_and_enlarges_with_a_centre_crop(probes):
    volume = torch.zeros(1, 1, 2, 8, 8)
    volume[0, 0, 1, 2:6, 2:6] = 1.0  # a 4 x 4 square (rows and columns 2..5) on slice 1
    # x0.5: output pixel i samples input 2i + 0.5, the mean of pixels 2i and 2i + 1: the square becomes the 2 x 2
    # at 1..2 of a 4 x 4, padded by 2 on each side back to 8 x 8
    expected = torch.zeros(8, 8)
    expected[3:5, 3:5] = 1.0
    shrunk = probes.zoom_in_plane(volume, 0.5)
    assert shrunk.shape == volume.shape
    assert torch.equal(shrunk[0, 0, 1], expected) and torch.equal(shrunk[0, 0, 0], torch.zeros(8, 8))
    # x2: output pixel j samples input j / 2 - 0.25; rows 4..11 of 16 are kept: 0.75 at the square's edges
    edge = torch.tensor([0.75, 1, 1, 1, 1, 1, 1, 0.75])
    enlarged = probes.zoom_in_plane(volume, 2.0)
    assert torch.allclose(enlarged[0, 0, 1], torch.outer(edge, edge))
    assert torch.equal(enlarged[0, 0, 0], torch.zeros(8, 8))
    assert probes.zoom_in_plane(volume, 1.0) is volume


def test_channel_noise_levels_recover_white_noise_and_ignore_an_absent_channel(probes):
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(4, 3, 8, 32, 32)
    images[:, 0] = 0.3 * torch.randn(4, 8, 32, 32, generator=generator)
    # a smooth ramp plus noise of 0.6: the ramp adds 0.01 per pixel to the neighbour differences, little against 0.6
    images[:, 1] = torch.arange(32) * 0.01 + 0.6 * torch.randn(4, 8, 32, 32, generator=generator)
    levels = probes.channel_noise_levels(images)  # channel 2: all zero, like a missing PHASE
    assert levels[0].item() == pytest.approx(0.3, rel=0.05)
    assert levels[1].item() == pytest.approx(0.6, rel=0.05)
    assert levels[2].item() == 0.0


class _Threshold(torch.nn.Module):
    """Calls a voxel clot where channel 0 exceeds 0.5 (two-class logits)."""

    def forward(self, x):
        return torch.stack([0.5 - x[:, 0], x[:, 0] - 0.5], dim=1)


def test_crop_outcomes_count_by_hand_and_a_zoom_changes_what_is_found(probes):
    data = torch.zeros(2, 1, 1, 8, 8)
    data[1, 0, 0, 2:4, 2:4] = 1.0   # crop 1: a bright 2 x 2 ...
    target = torch.zeros(2, 1, 1, 8, 8)
    target[1, 0, 0, 2:5, 2:4] = 1   # ... where the clot is 3 x 2: 4 found, 2 missed
    data[0, 0, 0, 7, 7] = 1.0       # crop 0 (no clot): one false positive voxel
    batches = iter([{"data": data, "target": target}] * 3)
    counts = probes.crop_outcomes(_Threshold(), batches, 3, seed=0)
    assert counts == {"clot": [3, 12, 0, 6], "clot_free": [3, 0, 3, 0]}
    assert probes.pooled_dice(counts) == pytest.approx(2 * 12 / (2 * 12 + 6 + 3))
    # x2 (pixel j samples j / 2 - 0.25, rows 4..11 kept): the bright square becomes 4 x 4 at crop rows / columns
    # 0..3 (values 0.75, 1, 1, 0.75), the clot 6 x 4 at rows 0..5, columns 0..3 (label > 0.5); the false positive
    # at (7, 7) lands at 14..15, off the crop
    zoomed = probes.crop_outcomes(_Threshold(), iter([{"data": data, "target": target}]), 1, seed=0, zoom=2.0)
    assert zoomed == {"clot": [1, 16, 0, 8], "clot_free": [1, 0, 0, 0]}
    # per case: the batches' keys name each crop's case; the totals are the same with or without
    per_case = {}
    keyed = iter([{"data": data, "target": target, "keys": ["case_x", "case_y"]},
                  {"data": data, "target": target, "keys": ["case_y", "case_y"]}])
    assert probes.crop_outcomes(_Threshold(), keyed, 2, seed=0, per_case=per_case) == {
        "clot": [2, 8, 0, 4], "clot_free": [2, 0, 2, 0]}
    assert per_case == {"case_x": {"clot": [0, 0, 0, 0], "clot_free": [1, 0, 1, 0]},
                        "case_y": {"clot": [2, 8, 0, 4], "clot_free": [1, 0, 1, 0]}}


@pytest.fixture(scope="module")
def shapes(benchmark_module):
    return benchmark_module("clot_shapes")


def test_slice_shape_measures_a_block_a_pixel_and_a_diagonal_by_hand(shapes):
    block = np.zeros((8, 8), bool)
    block[2:4, 1:6] = True  # 2 rows x 5 columns: variance along (5^2 - 1) / 12 = 2, across (2^2 - 1) / 12
    assert shapes.slice_shape(block) == pytest.approx({"pixels": 10, "length": 5.0, "width": 2.0, "across_sd": 0.5})
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    assert shapes.slice_shape(single) == pytest.approx({"pixels": 1, "length": 1.0, "width": 1.0, "across_sd": 0.0})
    diagonal = np.eye(3, dtype=bool)  # covariance [[2/3, 2/3], [2/3, 2/3]]: eigenvalues 4/3 and 0
    assert shapes.slice_shape(diagonal) == pytest.approx(
        {"pixels": 3, "length": 17 ** 0.5, "width": 3 / 17 ** 0.5, "across_sd": 0.0})
    with pytest.raises(ValueError, match="no pixel"):
        shapes.slice_shape(np.zeros((3, 3), bool))


def test_dataset_shapes_reads_each_training_clot_slice_with_the_split_roles(shapes, tmp_path):
    import json
    import nibabel as nib
    label = np.zeros((6, 6, 3), np.uint8)  # (rows, columns, slices)
    label[1:4, 2, 0] = 1  # slice 0: a 3-pixel line
    label[0:2, 0:2, 2] = 1  # slice 2: a 2 x 2 block; slice 1 holds nothing
    for folder, case in (("labelsTr", "clot_A_000"), ("labelsTr", "clot_A_001"), ("labelsTs", "clot_A_002")):
        os.makedirs(tmp_path / folder, exist_ok=True)
        nib.save(nib.Nifti1Image(label if case != "clot_A_001" else np.zeros_like(label), np.eye(4)),
                 str(tmp_path / folder / f"{case}.nii.gz"))
    splits = tmp_path / "splits_final.json"
    splits.write_text(json.dumps([{"train": ["clot_A_001"], "val": ["clot_A_000"]}]))
    found = shapes.dataset_shapes(str(tmp_path), shapes.split_roles(str(splits), 0))
    assert {case: entry["role"] for case, entry in found.items()} == {  # the test label is not read
        "clot_A_000": "validation", "clot_A_001": "training"}
    assert found["clot_A_001"]["slices"] == []
    line, block = found["clot_A_000"]["slices"]
    assert (line["slice"], line["pixels"], line["length"], line["width"]) == pytest.approx((0, 3, 3.0, 1.0))
    assert (block["slice"], block["pixels"], block["length"], block["width"]) == pytest.approx((2, 4, 2.0, 2.0))
    assert shapes.dataset_shapes(str(tmp_path))["clot_A_000"]["role"] == "training"  # no split given
    with pytest.raises(ValueError, match="no fold 1"):
        shapes.split_roles(str(splits), 1)
    with pytest.raises(FileNotFoundError, match="no labelsTr"):
        shapes.dataset_shapes(str(tmp_path / "labelsTs"))
