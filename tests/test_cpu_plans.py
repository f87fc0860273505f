"""CPU plans derived from nnU-Net plans build a real, small network."""
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_ext_plans.cpu_plans import derive_cpu_plans, load_template

CONV = {
    "n_conv_per_stage": [2, 2, 2, 2, 2], "n_conv_per_stage_decoder": [2, 2, 2, 2], "conv_bias": True,
    "conv_op": "torch.nn.modules.conv.Conv3d", "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
}
PLANS = {
    "plans_name": "nnUNetPlans",
    "configurations": {
        "3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [128, 128, 128],
            "median_image_size_in_voxels": [150, 160, 140], "spacing": [1.0, 1.0, 1.0],
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
                                "kernel_sizes": [[3, 3, 3]] * 5, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4, **CONV},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}},
        "2d": {"data_identifier": "nnUNetPlans_2d"},
    },
}


def _network(configuration):
    architecture = configuration["architecture"]
    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture["_kw_requires_import"], 3, 2, deep_supervision=True)


def test_cpu_template_shrinks_patch_batch_and_features():
    derived = derive_cpu_plans(PLANS, load_template("cpu"))
    assert derived["plans_name"] == "nnUNetPlans_CPU" and list(derived["configurations"]) == ["3d_fullres"]
    small = derived["configurations"]["3d_fullres"]
    assert small["patch_size"] == [40, 48, 40] and small["batch_size"] == 2
    assert small["data_identifier"] == "nnUNetPlans_3d_fullres"  # reuses the preprocessed data
    arch = small["architecture"]["arch_kwargs"]
    assert arch["n_stages"] == 4 and arch["features_per_stage"] == [8, 16, 32, 64]
    assert arch["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert arch["n_conv_per_stage"] == [2] * 4 and arch["n_conv_per_stage_decoder"] == [2] * 3
    assert PLANS["configurations"]["3d_fullres"]["patch_size"] == [128, 128, 128]  # source untouched


def test_derived_network_runs_on_its_patch_and_is_much_smaller():
    derived = derive_cpu_plans(PLANS, load_template("cpu"))["configurations"]["3d_fullres"]
    small, full = _network(derived), _network(PLANS["configurations"]["3d_fullres"])
    small_params = sum(p.numel() for p in small.parameters())
    full_params = sum(p.numel() for p in full.parameters())
    assert small_params * 20 < full_params
    with torch.no_grad():
        outputs = small(torch.zeros(1, 3, *derived["patch_size"]))
    assert outputs[0].shape == (1, 2, *derived["patch_size"])


def test_patch_is_clipped_to_the_images_and_kept_divisible():
    plans = {**PLANS, "configurations": {"3d_fullres": {**PLANS["configurations"]["3d_fullres"],
                                                        "median_image_size_in_voxels": [30, 37, 33]}}}
    small = derive_cpu_plans(plans, load_template("cpu"))["configurations"]["3d_fullres"]
    strides = small["architecture"]["arch_kwargs"]["strides"]
    divisor = [1, 1, 1]
    for stride in strides:
        divisor = [d * s for d, s in zip(divisor, stride)]
    assert all(p % d == 0 for p, d in zip(small["patch_size"], divisor))
    assert small["patch_size"][0] <= 32


def test_unknown_configuration_and_template_are_named():
    with pytest.raises(ValueError, match="3d_lowres"):
        derive_cpu_plans(PLANS, {**load_template("cpu"), "configurations": ["3d_lowres"]})
    with pytest.raises(ValueError, match="unknown plans template 'gpu9'"):
        load_template("gpu9")
