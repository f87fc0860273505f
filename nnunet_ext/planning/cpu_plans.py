"""CPU plans: a small configuration derived from nnU-Net's own plans, saved under its own plans name.

The derived plans keep nnU-Net's `data_identifier`, so they reuse the data `nnUNetv2_plan_and_preprocess`
already wrote, and the stock CLIs take them with `-p`:
    nnUNetv2_train DATASET 3d_fullres 0 -p nnUNetPlans_CPU -tr ... -device cpu
The network topology for the smaller patch comes from nnU-Net's own planner function, so strides, kernel
sizes and the patch's divisibility follow the same rules as nnU-Net's plans. The command line is
`nnunet_ext_plan_cpu` (plans/cpu_plans.py).
"""
from copy import deepcopy
from typing import Dict, Optional, Sequence

from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

MIN_FEATURE_MAP_EDGE = 4  # nnU-Net's UNet_featuremap_min_edge_length


def _repeat_first(values: Sequence[int], length: int) -> list:
    return [int(values[0])] * length


def shrink_configuration(configuration: Dict, patch_size: Sequence[int], batch_size: int, base_features: int,
                         max_features: int) -> Dict:
    """A copy of one plans configuration with a smaller patch, batch and network."""
    if batch_size < 1 or base_features < 1 or max_features < base_features:
        raise ValueError(f"need batch_size >= 1 and 1 <= base_features <= max_features, got {batch_size}, "
                         f"{base_features}, {max_features}")
    spacing = configuration["spacing"]
    if len(patch_size) != len(spacing):
        raise ValueError(f"patch size {list(patch_size)} has {len(patch_size)} axes; the configuration has "
                         f"{len(spacing)}")
    # a patch larger than the images only adds padding
    median = configuration.get("median_image_size_in_voxels", patch_size)
    wanted = [min(int(p), max(MIN_FEATURE_MAP_EDGE * 2, int(m))) for p, m in zip(patch_size, median)]
    _, strides, kernels, patch, _ = get_pool_and_conv_props(spacing, wanted, MIN_FEATURE_MAP_EDGE, 999999)
    n_stages = len(strides)

    small = deepcopy(configuration)
    small["patch_size"] = [int(p) for p in patch]
    small["batch_size"] = int(batch_size)
    arch = small["architecture"]["arch_kwargs"]
    arch.update({
        "n_stages": n_stages,
        "features_per_stage": [min(max_features, base_features * 2 ** i) for i in range(n_stages)],
        "kernel_sizes": [list(k) for k in kernels],
        "strides": [list(s) for s in strides],
    })
    for key in ("n_conv_per_stage", "n_blocks_per_stage"):  # PlainConvUNet / ResidualEncoderUNet
        if key in arch:
            arch[key] = _repeat_first(arch[key], n_stages)
    if "n_conv_per_stage_decoder" in arch:
        arch["n_conv_per_stage_decoder"] = _repeat_first(arch["n_conv_per_stage_decoder"], n_stages - 1)
    return small


def derive_cpu_plans(plans: Dict, template: Dict, plans_name: Optional[str] = None) -> Dict:
    """Plans holding only the template's configurations, shrunk, under a new plans name."""
    missing = [c for c in template["configurations"] if c not in plans["configurations"]]
    if missing:
        raise ValueError(f"configuration(s) {', '.join(missing)} not in plans {plans.get('plans_name')!r} "
                         f"(it has {', '.join(plans['configurations'])})")
    derived = deepcopy(plans)
    derived["plans_name"] = plans_name or template["plans_name"]
    derived["configurations"] = {}
    for name in template["configurations"]:
        configuration = plans["configurations"][name]
        if "inherits_from" in configuration:
            raise ValueError(f"configuration {name!r} inherits from another; derive from a full configuration")
        derived["configurations"][name] = shrink_configuration(
            configuration, template["patch_size"], template["batch_size"], template["base_features"],
            template["max_features"])
    return derived
