"""How the clot networks are trained: crops without the centre shortcut, AdamW's parameter groups, templates that do
not squeeze the attention tokens, the way back to full resolution without the Up block, the Up block's norm in
train and eval mode, and the attention diagnostics."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from torch import nn

from nnunet_ext.networks.attention_blocks import TokenUnpatchify, UpBlock, normalised_entropy
from nnunet_ext.networks.clot_networks import CLOT_MODELS, AttLLSTM, LLSTM, UpAttLLSTM
from nnunet_ext.planning.templates import available_templates, load_template
from nnunet_ext.planning.upattllstm_plans import check_token_capacity
from nnunet_ext.training.attention_diagnostics import attention_summary, mean_attention_entropy
from nnunet_ext.training.clot_optimizer import clot_optimizer, parameter_groups
from nnunet_ext.training.clot_sampling import (centred_crop_offset, clot_free_slice_starts, crop_corner_range,
                                               draw_clot_free_corner,
                                               draw_corner_holding)
from nnunet_ext.training.upattllstm_trainer import (INPLANE_ROTATION, ClotPairDataLoader, UpAttLLSTMTraining,
                                                    clot_training_transforms, nnUNetTrainerUpAttLLSTM,
                                                    nnUNetTrainerUpAttLLSTMSpatialDAGradualDrop)

ROLES = dict(dwi_channel=0, swan_channel=1, phase_channel=2)


# ---------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("shape, patch, pad, lower, upper", [
    ((20, 60, 60), (8, 32, 32), (0, 0, 0), [0, 0, 0], [12, 28, 28]),
    ((6, 60, 60), (8, 32, 32), (0, 0, 0), [-1, 0, 0], [-1, 28, 28]),   # 2 slices short: padded 1 + 1
    ((7, 60, 60), (8, 32, 32), (0, 0, 0), [-1, 0, 0], [0, 28, 28]),    # 1 short: -1 // 2 = -1 in nnU-Net too
    ((20, 60, 60), (8, 32, 32), (0, 4, 5), [0, -2, -3], [12, 30, 31]),
])
def test_crop_corner_range_is_nnunets(shape, patch, pad, lower, upper):
    assert crop_corner_range(shape, patch, pad) == (lower, upper)


def test_a_clot_voxel_lands_anywhere_in_the_crop_not_at_its_centre():
    rng = np.random.default_rng(0)
    bounds = crop_corner_range((20, 60, 60), (8, 32, 32), (0, 0, 0))
    offsets = np.array([np.subtract((10, 30, 30), draw_corner_holding((10, 30, 30), (8, 32, 32), bounds, rng))
                        for _ in range(4000)])
    assert offsets.min(axis=0).tolist() == [0, 2, 2]  # in-plane the corner cannot go below 0: offset <= 30
    assert offsets.max(axis=0).tolist() == [7, 30, 30]
    # uniform: every offset of the 29 allowed in-plane is drawn, about equally (4000 / 29 = 138 each)
    counts = np.bincount(offsets[:, 1] - 2)
    assert len(counts) == 29 and counts.min() > 80 and counts.max() < 200
    # a voxel near the border: only the corners that hold it (and that nnU-Net allows)
    near = {tuple(draw_corner_holding((0, 3, 58), (8, 32, 32), bounds, rng)) for _ in range(500)}
    assert {c[1] for c in near} == {0, 1, 2, 3} and {c[2] for c in near} == {27, 28} and {c[0] for c in near} == {0}


def test_clot_free_slice_windows_by_hand():
    # clot on slices 5 and 6, windows of 4 slices starting at 0..12: those that hold 5 or 6 start at 2..6
    assert clot_free_slice_starts([5, 6], 4, 0, 12).tolist() == [0, 1, 7, 8, 9, 10, 11, 12]
    assert clot_free_slice_starts([], 4, -1, 2).tolist() == [-1, 0, 1, 2]
    assert clot_free_slice_starts([0, 8], 8, 0, 2).tolist() == []  # every window meets a clot slice
    assert clot_free_slice_starts([0, 9], 8, 0, 2).tolist() == [1]  # slices 1-8
    rng = np.random.default_rng(1)
    corners = [draw_clot_free_corner([5, 6], (4, 16, 16), ([0, 0, 0], [12, 4, 4]), 0, rng) for _ in range(300)]
    assert {c[0] for c in corners} == {0, 1, 7, 8, 9, 10, 11, 12}
    assert {c[1] for c in corners} == set(range(5)) and {c[2] for c in corners} == set(range(5))
    assert draw_clot_free_corner([0, 8], (8, 16, 16), ([0, 0, 0], [2, 4, 4]), 0, rng) is None


class _Case:
    """The two methods of nnU-Net's dataset the loader uses: one case 20 x 40 x 40, a 2 x 2-pixel clot on
    slices 8-9 at rows 30-31, columns 10-11."""

    def __init__(self):
        self.identifiers = ["case"]
        self.seg = np.zeros((1, 20, 40, 40), np.int16)
        self.seg[0, 8:10, 30:32, 10:12] = 1
        self.data = np.random.default_rng(0).normal(size=(3, 20, 40, 40)).astype(np.float32)

    def load_case(self, identifier):
        return self.data, self.seg, None, {"class_locations": {1: np.argwhere(self.seg == 1)}}


def _clot_positions(loader: ClotPairDataLoader, in_plane: slice = slice(None), batches: int = 200) -> np.ndarray:
    """The top-left voxel of the clot in each batch's clot crop (its `in_plane` window), checking that every
    clot-free crop holds no clot voxel and every clot crop holds one."""
    positions = []
    for _ in range(batches):
        target = np.asarray(loader.generate_train_batch()["target"])[:, 0, :, in_plane, in_plane]
        assert not (target[0] == 1).any()
        clot = np.argwhere(target[1] == 1)
        assert len(clot) > 0
        positions.append(clot.min(axis=0))
    return np.array(positions)


def test_loader_spreads_the_clot_over_the_crop_and_keeps_clot_slices_out_of_the_others():
    np.random.seed(0)
    labels = LabelManager({"background": 0, "clot": 1}, regions_class_order=None)
    loader = ClotPairDataLoader(_Case(), 2, (6, 16, 16), (6, 16, 16), labels, oversample_foreground_percent=0.5)
    positions = _clot_positions(loader)
    # the clot's top-left pixel within the 16 x 16 crop: every position a crop inside the image allows, not a
    # constant offset (nnU-Net centres the chosen voxel: 7 or 8 every time). Rows 30-31 of 40: corners 15..24, so
    # rows 6..15 of the crop; columns 10-11: corners 0..11, so columns 0..10 (corner 11 keeps only column 11)
    assert set(positions[:, 1].tolist()) == set(range(6, 16))
    assert set(positions[:, 2].tolist()) == set(range(0, 11))
    assert loader.clot_free_misses == 0


def test_loader_clot_free_crops_avoid_the_clot_slices():
    np.random.seed(1)
    labels = LabelManager({"background": 0, "clot": 1}, regions_class_order=None)
    dataset = _Case()
    loader = ClotPairDataLoader(dataset, 2, (6, 16, 16), (6, 16, 16), labels, oversample_foreground_percent=0.5)
    for _ in range(50):
        lower, upper = loader.get_bbox(np.array([20, 40, 40]), False, {1: np.argwhere(dataset.seg == 1)})
        assert upper[0] <= 8 or lower[0] >= 10  # the slice window holds neither slice 8 nor 9
    with pytest.raises(ValueError, match="slice_axis must be an axis of the 3D patch, got 3"):
        ClotPairDataLoader(dataset, 2, (6, 16, 16), (6, 16, 16), labels, slice_axis=3)


@pytest.mark.parametrize("loaded, final, offset", [(37, 32, 2), (36, 31, 3), (36, 32, 2), (32, 32, 0)])
def test_centred_crop_offset_is_where_the_spatial_transform_crops(loaded, final, offset):
    # (36, 31): floor(36 / 2) - floor(31 / 2) = 3, not (36 - 31) // 2 = 2
    assert centred_crop_offset([4, loaded, loaded], [4, final, final]) == [0, offset, offset]
    image = torch.arange(loaded, dtype=torch.float32).view(1, 1, 1, loaded).expand(1, 4, loaded, loaded).clone()
    cropped = SpatialTransform([4, final, final], patch_center_dist_from_border=0, random_crop=False,
                               p_elastic_deform=0, p_rotation=0, p_scaling=0)(image=image)["image"]
    assert cropped[0, 0, 0, 0].item() == offset  # the first column kept is column `offset`
    with pytest.raises(ValueError, match=r"the final patch \[4, 40\] is larger than the loaded patch \[4, 37\]"):
        centred_crop_offset([4, 37], [4, 40])


def test_with_a_larger_loaded_patch_the_clot_lies_anywhere_in_the_centred_final_patch():
    np.random.seed(0)
    labels = LabelManager({"background": 0, "clot": 1}, regions_class_order=None)
    # loaded 24 x 24 in-plane for a final 16 x 16 (offset 4): the clot must land in the final patch, anywhere
    loader = ClotPairDataLoader(_Case(), 2, (6, 24, 24), (6, 16, 16), labels, oversample_foreground_percent=0.5)
    positions = _clot_positions(loader, slice(4, 20))
    # final corners may now reach the image border (nnU-Net pads the loaded patch by half the difference):
    # rows 30-31 of 40 sit at rows 6..15 of the final patch, columns 10-11 at columns 0..10, as without padding
    assert set(positions[:, 1].tolist()) == set(range(6, 16))
    assert set(positions[:, 2].tolist()) == set(range(0, 11))


def test_the_inplane_spatial_augmentation_rotates_and_scales_within_each_slice_only():
    torch.manual_seed(0)
    np.random.seed(0)
    # slice k holds 100 k + (20 to 60, varying in-plane): a resampling across slices would mix the hundreds. The
    # loaded 64 x 64 holds any rotation of the final 32 x 32 scaled by up to 1.4 (32 * 1.4 * sqrt(2) = 63.4), so no
    # value is blended with the zero padding
    rows = torch.linspace(20, 60, 64).view(1, 64, 1)
    image = torch.stack([100 * k + rows.expand(1, 64, 64) for k in range(1, 5)], dim=1).view(1, 4, 64, 64)
    transform = clot_training_transforms(None, probability=0, patch_size=[4, 32, 32],
                                         rotation_for_DA=INPLANE_ROTATION)
    changed = 0
    for _ in range(40):
        out = transform(image=image.clone(), segmentation=torch.zeros(1, 4, 64, 64))["image"]
        assert out.shape == (1, 4, 32, 32)
        assert [set((out[0, k] // 100).unique().tolist()) for k in range(4)] == [{1.0}, {2.0}, {3.0}, {4.0}]
        changed += not torch.equal(out, image[:, :, 16:48, 16:48])
    assert 8 <= changed <= 25  # rotation or scaling, each with probability 0.2: 1 - 0.8 ** 2 = 36 % of 40 = 14.4


def test_the_settings_file_names_the_spatial_augmentation_only_where_it_is_on():
    # the paper's recipe keeps the settings it had before the variant existed: its trainings resume with --c
    paper = UpAttLLSTMTraining.augmentation_settings(nnUNetTrainerUpAttLLSTM)
    assert paper == {"flip_probability_per_axis": 0.4, "gaussian_noise_probability": 0.4}
    spatial = UpAttLLSTMTraining.augmentation_settings(nnUNetTrainerUpAttLLSTMSpatialDAGradualDrop)
    assert spatial["inplane_spatial"] == {"rotation_probability": 0.2, "rotation_radians": [-np.pi, np.pi],
                                          "scaling_probability": 0.2, "scaling": [0.7, 1.4]}


# ---------------------------------------------------------------------------------------------- optimizer

def _attllstm(**sizes):
    kwargs = dict(slice_shape=[16, 16], attention_dim=8, dwi_patch=8, susceptibility_patch=2, mlp_ratio=2.0,
                  conv_channels=2, logic_channels=8, pool_scales=4, attention_upsampling="learned")
    return AttLLSTM(3, 2, **ROLES, **{**kwargs, **sizes})


def test_no_weight_decay_on_norms_gains_biases_and_embeddings():
    network = _attllstm()
    decayed, not_decayed = parameter_groups(network, 0.01)
    names = {id(p): n for n, p in network.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    kept_names = {names[id(p)] for p in not_decayed["params"]}
    assert decayed_names.isdisjoint(kept_names) and decayed_names | kept_names == set(names.values())
    for name in ("front_end.attention.attention_gain", "front_end.attention.mlp_gain",
                 "front_end.attention.query_embedding.position", "front_end.attention.context_embedding.class_token",
                 "front_end.attention.output_norm.weight", "front_end.attention.output_norm.bias",
                 "decoder.head.bias"):
        assert name in kept_names, name
    for name in ("front_end.attention.context_embedding.projection.weight", "front_end.attention.key_projection.weight",
                 "front_end.unpatchify.projection.weight", "decoder.head.weight"):
        assert name in decayed_names, name
    assert (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.01, 0.0)


def test_adamw_decays_only_the_decayed_group():
    """With zero gradients Adam's update is 0, so one step changes a parameter by the decoupled decay alone:
    w <- w * (1 - lr * weight_decay) = w * (1 - 1e-3 * 1e-2) in the decayed group, unchanged in the other."""
    network = _attllstm()
    optimizer, scheduler = clot_optimizer(network, num_epochs=10)
    weight = network.decoder.head.weight.detach().clone()
    position = network.front_end.attention.context_embedding.position.detach().clone()
    for p in network.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(network.decoder.head.weight, weight * (1 - 1e-5), rtol=0, atol=1e-9)
    assert torch.equal(network.front_end.attention.context_embedding.position, position)
    scheduler.step(5)  # poly: 1e-3 * (1 - 5 / 10) ** 0.9 in both groups
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3 * 0.5 ** 0.9] * 2)


# ---------------------------------------------------------------------------------------------- templates

@pytest.mark.parametrize("name", [t for t in available_templates() if t.startswith("upattllstm")])
def test_every_clot_template_holds_a_susceptibility_patch_in_a_token(name):
    sizes = load_template(name)["arch_kwargs"]
    assert sizes["attention_dim"] >= sizes["susceptibility_patch"] ** 2 * 2
    assert sizes["attention_upsampling"] == "learned" and sizes["norm_op"] == "torch.nn.InstanceNorm2d"
    check_token_capacity(sizes)


@pytest.mark.parametrize("name,share", [("upattllstm", 12 / 44), ("upattllstm_paper_size", 12 / 140),
                                        ("upattllstm_cpu", 6 / 14)])
def test_the_up_block_s_full_resolution_skip_path_is_the_smaller_part_of_what_it_fuses(name, share):
    """With 12 skip features against D = 8 the CPU template's fused input was 60 % full-resolution SWAN/PHASE
    (the paper's: 27 %); 6 was chosen by a validation-split pilot (pilots/up_skip_features)."""
    sizes = load_template(name)["arch_kwargs"]
    assert sizes["skip_features"] / (sizes["attention_dim"] + sizes["skip_features"]) == pytest.approx(share)
    assert share < 0.5


def test_a_squeezed_token_is_refused():
    with pytest.raises(ValueError, match=r"attention_dim D = 8 is smaller than .* 4 x 4 x 2 = 32 values"):
        check_token_capacity({"attention_dim": 8, "susceptibility_patch": 4})


def test_unpatchify_gives_every_pixel_of_a_patch_its_own_value():
    """A token [a, b, c, d] mapped (by hand-set weights) to its 2 x 2 pixels [[a, b], [c, d]]: nearest upsampling
    could only give one value per 2 x 2 block."""
    block = TokenUnpatchify(nn.ConvTranspose2d, 4, 2)
    with torch.no_grad():
        block.projection.weight.zero_()
        block.projection.bias.zero_()
        for k in range(4):
            block.projection.weight[k, 0, k // 2, k % 2] = 1.0
    tokens = torch.arange(16.0).reshape(1, 4, 2, 2)  # channel k, token (i, j) = 4 k + 2 i + j
    out = block(tokens, [4, 4])[0, 0]
    assert out.tolist() == [[0.0, 4.0, 1.0, 5.0], [8.0, 12.0, 9.0, 13.0],
                            [2.0, 6.0, 3.0, 7.0], [10.0, 14.0, 11.0, 15.0]]
    with pytest.raises(ValueError, match="gives \\[4, 4\\], not the image size \\[6, 6\\]"):
        block(tokens, [6, 6])


def test_learned_upsampling_is_for_the_models_without_the_up_block():
    with pytest.raises(ValueError, match="'learned' is for the models without the Up block"):
        CLOT_MODELS["UpAttLLSTM"](3, 2, **ROLES, slice_shape=[16, 16], attention_dim=8, dwi_patch=8,
                                  susceptibility_patch=2, upsample_mode="learned")


# ---------------------------------------------------------------------------------------------- Up block norm

def _two_crop_features():
    """Per-slice inputs of a batch of 2 crops x 4 slices: a clot crop (a bright blob in the attention features,
    a dark spot in SWAN) and a clot-free crop."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 8, 4, 4, generator=generator) * 0.1
    images = torch.randn(8, 2, 16, 16, generator=generator) * 0.1
    features[:4, :, 1:3, 1:3] += 3.0
    images[:4, 0, 6:9, 6:9] -= 2.0
    return features, images


def test_batch_norm_up_block_changes_its_output_between_train_and_eval_mode_instance_norm_does_not():
    """Why the Up block normalises with InstanceNorm: with BatchNorm it normalises a training batch of two crops
    (one with a clot, one without) by that batch's statistics and a validation batch by running averages of other
    batches, so the same crops give other features (and logits) in eval mode. InstanceNorm normalises each slice by
    its own statistics: the same output in both modes. (This was a suspect of UpAttLLSTM's validation collapse;
    the collapse outlived it: over-fitting, benchmarks/results/pilots/up_skip_dropout/.)"""
    features, images = _two_crop_features()
    torch.manual_seed(0)
    for norm, differs in ((nn.BatchNorm2d, True), (nn.InstanceNorm2d, False)):
        block = UpBlock(nn.Conv2d, 8, 2, 6, norm_op=norm, norm_op_kwargs={"affine": True})
        block.train()
        for scale in (0.2, 1.0, 5.0):  # running statistics from batches unlike this one
            block(features * scale, images * scale)
        trained = block(features, images)
        evaluated = block.eval()(features, images)
        gap = float((trained - evaluated).abs().mean().detach())
        assert (gap > 0.1) if differs else (gap < 1e-5), (norm.__name__, gap)


def test_up_block_skip_dropout_drops_whole_feature_maps_in_training_only():
    torch.manual_seed(0)
    block = UpBlock(nn.Conv2d, 8, 2, 6, skip_features=12, skip_dropout=0.5, norm_op=nn.InstanceNorm2d)
    images = torch.randn(4, 2, 16, 16)
    evaluated = block.eval().skip(images)
    trained = block.train().skip(images)
    dropped = (trained == 0).flatten(2).all(-1)                     # [sample, feature map]
    assert not (evaluated == 0).flatten(2).all(-1).any()           # no map is zero without dropout
    # a map is dropped whole, or kept and scaled by 1 / (1 - p) = 2 (ReLU after the dropout keeps the factor)
    assert torch.equal(trained[~dropped], 2 * evaluated[~dropped])
    assert 0 < int(dropped.sum()) < 48 and dropped.any(1).all()    # each sample lost some of its 12 maps
    assert torch.equal(block.eval().skip(images), evaluated)       # eval mode: nothing dropped
    with pytest.raises(ValueError, match="skip_dropout must be in \\[0, 1\\), got 1.0"):
        UpBlock(nn.Conv2d, 8, 2, 6, skip_dropout=1.0)


def test_up_skip_dropout_reaches_the_up_block_of_upattllstm_only():
    sizes = dict(**ROLES, slice_shape=(16, 16), attention_dim=8, dwi_patch=8, susceptibility_patch=2,
                 up_features=4, conv_channels=2, logic_channels=8, pool_scales=4)
    with_dropout = UpAttLLSTM(3, 2, **sizes, up_skip_dropout=0.3)
    dropouts = [m for m in with_dropout.modules() if isinstance(m, nn.Dropout2d)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.3
    assert not any(isinstance(m, nn.Dropout2d) for m in UpAttLLSTM(3, 2, **sizes).modules())


# ---------------------------------------------------------------------------------------------- diagnostics

def test_normalised_entropy_by_hand():
    weights = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    assert normalised_entropy(weights).tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_attention_summary_reads_the_gains_and_the_entropy():
    network = _attllstm().eval()
    data = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        network.front_end.attention.key_projection.weight.zero_()  # equal logits: uniform attention
        network.front_end.attention.key_projection.bias.zero_()
        network.front_end.attention.attention_gain.fill_(1.5)
    assert mean_attention_entropy(network, data) == pytest.approx(1.0)
    assert attention_summary(network, data) == "attention: alpha 1.500, beta 1.000, entropy 1.000 of max"
    llstm = LLSTM(3, 2, **ROLES, front_features=4, conv_channels=2, logic_channels=8, pool_scales=4)
    assert attention_summary(llstm, data) == "" and mean_attention_entropy(llstm, data) is None
