"""`nnunet_ext_plan_upattllstm`: plans that make the stock nnU-Net commands train and predict our clot networks.

    nnunet_ext_plan_upattllstm -d 502                      # -> nnUNetPlans_UpAttLLSTM.json
    nnUNetv2_train 502 3d_fullres 0 -p nnUNetPlans_UpAttLLSTM -tr nnUNetTrainerUpAttLLSTM
    nnUNetv2_predict -i IN -o OUT -d 502 -c 3d_fullres -f 0 -p nnUNetPlans_UpAttLLSTM -tr nnUNetTrainerUpAttLLSTM

The plans are derived from nnU-Net's own (`-p`, default nnUNetPlans) under a new plans name and keep the
configuration's `data_identifier`, so the data `nnUNetv2_plan_and_preprocess` wrote is reused as is. They name
the network by dotted path (`architecture.network_class_name`, e.g.
nnunet_ext.networks.clot_networks.UpAttLLSTM) with its sizes in `arch_kwargs`; `--model` picks one of the
Table 6 ablations (plans name nnUNetPlans_<model> unless -o is given). The input channels playing DWI, SWAN
and PHASE are found by their dataset.json names and written as `dwi_channel`, `swan_channel`,
`phase_channel`; `--role SWAN=SWI` lets another name play a role. The patch is [slices, H, W] (Table 4 /
methods.md: 12 x 256 x 256), clipped to the data's median size; in-plane it stays a multiple of the DWI
patch size P_D, as the attention's patch embedding needs.
"""
import argparse
import inspect
import json
import math
import os
import sys
from copy import deepcopy
from typing import Dict, List, Mapping, Optional, Sequence

from nnunet_ext.dropout.config import channel_names_from_dataset_json
from nnunet_ext.networks.clot_networks import ATTENTION_MODELS, CLOT_MODELS, count_parameters, model_class_path
from nnunet_ext_plans.cpu_plans import load_template

ROLES = ("DWI", "SWAN", "PHASE")
ROLE_KWARGS = {"DWI": "dwi_channel", "SWAN": "swan_channel", "PHASE": "phase_channel"}
IMPORTED_KWARGS = ("norm_op",)  # arch_kwargs that nnU-Net imports by dotted path (_kw_requires_import)
DEFAULT_MODEL = "UpAttLLSTM"


def parse_role_overrides(items: Sequence[str]) -> Dict[str, str]:
    """['SWAN=SWI', ...] -> {'SWAN': 'SWI'}; a role named twice or an unknown role is an error."""
    overrides: Dict[str, str] = {}
    for item in items:
        role, sep, name = item.partition("=")
        role, name = role.strip().upper(), name.strip()
        if not sep or not name:
            raise ValueError(f"role override {item!r} is not ROLE=CHANNEL_NAME (e.g. SWAN=SWI)")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} in {item!r}; roles are {', '.join(ROLES)}")
        if role in overrides:
            raise ValueError(f"role {role} is given twice ({overrides[role]!r} and {name!r})")
        overrides[role] = name
    return overrides


def resolve_channel_roles(channel_names: Sequence[str], overrides: Optional[Mapping[str, str]] = None
                          ) -> Dict[str, int]:
    """Channel index of every role, by dataset.json name: {'dwi_channel': 0, 'swan_channel': 1, ...}."""
    names = list(channel_names)
    chosen = {role: (overrides or {}).get(role, role) for role in ROLES}
    indices = {}
    for role, name in chosen.items():
        if name not in names:
            raise ValueError(f"no channel named {name!r} for the {role} role; dataset.json has {', '.join(names)}. "
                             f"Name the channel that plays it with --role {role}=NAME")
        if names.count(name) > 1:
            raise ValueError(f"channel name {name!r} appears {names.count(name)} times in dataset.json "
                             f"({', '.join(names)}); names cannot select channels")
        indices[role] = names.index(name)
    if len(set(indices.values())) != len(indices):
        raise ValueError(f"one channel plays several roles: {chosen}")
    return {ROLE_KWARGS[role]: index for role, index in indices.items()}


def clip_patch(patch: Sequence[int], median_size: Sequence[float], slice_axis: int, multiple: int) -> List[int]:
    """[slices, H, W] -> a patch in nnU-Net's axis order, no larger than the data needs: slices at most the median
    slice count, in-plane sizes at most the median rounded up to `multiple` (and at least one `multiple`)."""
    if len(patch) != 3 or any(int(p) < 1 for p in patch):
        raise ValueError(f"patch must be three positive sizes [slices, H, W], got {list(patch)}")
    if len(median_size) != 3:
        raise ValueError(f"the configuration is not 3D (median size {list(median_size)}); derive from 3d_fullres")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {slice_axis}")
    in_plane_axes = [a for a in range(3) if a != slice_axis]
    clipped = [0, 0, 0]
    clipped[slice_axis] = max(1, min(int(patch[0]), int(round(median_size[slice_axis]))))
    for wanted, axis in zip(patch[1:], in_plane_axes):
        needed = max(multiple, int(math.ceil(median_size[axis] / multiple)) * multiple)
        if int(wanted) % multiple:
            raise ValueError(f"in-plane patch size {wanted} is not a multiple of the DWI patch size {multiple}")
        clipped[axis] = min(int(wanted), needed)
    return clipped


def model_arch_kwargs(model: str, sizes: Mapping, roles: Mapping[str, int], slice_shape: Sequence[int],
                      slice_axis: int) -> Dict:
    """The sizes `model`'s constructor takes, plus roles, slice axis and (for attention models) slice shape."""
    if model not in CLOT_MODELS:
        raise ValueError(f"unknown clot model {model!r}; expected one of {', '.join(CLOT_MODELS)}")
    accepted = inspect.signature(CLOT_MODELS[model].__init__).parameters
    kwargs = {key: value for key, value in sizes.items() if key in accepted}
    if "hidden_channels" in accepted and "hidden_channels" not in sizes:
        # ConvLSTM ablations get the Logic LSTM's state size, so that only the cell differs
        kwargs["hidden_channels"] = int(sizes.get("conv_channels", 4)) + int(sizes.get("logic_channels", 32))
    kwargs.update(roles)
    kwargs["slice_axis"] = slice_axis
    if model in ATTENTION_MODELS:
        kwargs["slice_shape"] = [int(s) for s in slice_shape]
    return kwargs


def derive_upattllstm_plans(plans: Dict, dataset_json: Mapping, template: Mapping, model: str = DEFAULT_MODEL,
                            configuration: str = "3d_fullres", plans_name: Optional[str] = None,
                            role_overrides: Optional[Mapping[str, str]] = None, slice_axis: int = 0) -> Dict:
    """Plans holding one configuration, `configuration` of `plans` with our network, patch and batch size."""
    if configuration not in plans["configurations"]:
        raise ValueError(f"configuration {configuration!r} not in plans {plans.get('plans_name')!r} "
                         f"(it has {', '.join(plans['configurations'])})")
    source = plans["configurations"][configuration]
    if "inherits_from" in source:
        raise ValueError(f"configuration {configuration!r} inherits from another; derive from a full configuration")
    batch_size = int(template["batch_size"])
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    roles = resolve_channel_roles(channel_names_from_dataset_json(dataset_json), role_overrides)
    sizes = dict(template["arch_kwargs"])
    multiple = int(sizes.get("dwi_patch", 32)) if model in ATTENTION_MODELS else 1
    patch = clip_patch(template["patch_size"], source.get("median_image_size_in_voxels", [1e9] * 3), slice_axis,
                       multiple)
    slice_shape = [p for axis, p in enumerate(patch) if axis != slice_axis]
    arch_kwargs = model_arch_kwargs(model, sizes, roles, slice_shape, slice_axis)

    derived = deepcopy(plans)
    derived["plans_name"] = plans_name or f"nnUNetPlans_{model}"
    configured = deepcopy(source)  # keeps data_identifier, spacing, normalisation: the preprocessed data is reused
    configured["patch_size"] = patch
    configured["batch_size"] = batch_size
    # Dice over the whole batch, as nnU-Net does for 2d: half of every batch is a clot-free crop, and per-sample
    # soft Dice scores such a crop predicted empty as ~1, which rewards never predicting a clot
    configured["batch_dice"] = bool(template.get("batch_dice", source.get("batch_dice", False)))
    configured["architecture"] = {
        "network_class_name": model_class_path(model),
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": [key for key in IMPORTED_KWARGS if key in arch_kwargs],
    }
    derived["configurations"] = {configuration: configured}
    names = channel_names_from_dataset_json(dataset_json)
    derived["nnunet_ext"] = {"model": model, "source_plans": plans.get("plans_name"),
                             "channel_roles": {role: names[roles[ROLE_KWARGS[role]]] for role in ROLES}}
    return derived


def build_network(plans: Dict, dataset_json: Mapping, configuration: str = "3d_fullres"):
    """The network nnU-Net will build from these plans (same code path as its trainer and predictor)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    label_manager = manager.get_label_manager(dict(dataset_json))
    return get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                  config.network_arch_init_kwargs_req_import,
                                  len(channel_names_from_dataset_json(dataset_json)),
                                  label_manager.num_segmentation_heads, deep_supervision=False)


SIZE_OPTIONS = {  # CLI option -> arch_kwargs key
    "attention_dim": "attention_dim", "dwi_patch": "dwi_patch", "susceptibility_patch": "susceptibility_patch",
    "up_features": "up_features", "conv_channels": "conv_channels", "logic_channels": "logic_channels",
    "pool_scales": "pool_scales", "kernel_size": "kernel_size", "hidden_channels": "hidden_channels",
    "second_pass": "second_pass", "upsample_mode": "upsample_mode",
}
NORM_OPS = {"batch": "torch.nn.BatchNorm2d", "instance": "torch.nn.InstanceNorm2d"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-p", "--source-plans", default="nnUNetPlans", help="plans to derive from")
    parser.add_argument("-o", "--plans-name", default=None, help="name of the derived plans (nnUNetPlans_<model>)")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="3D configuration to derive from")
    parser.add_argument("--model", choices=list(CLOT_MODELS), default=DEFAULT_MODEL)
    parser.add_argument("-t", "--template", default="upattllstm",
                        help="size template in plans/templates (upattllstm: Table 4; upattllstm_cpu: tiny)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, metavar=("SLICES", "H", "W"),
                        help="patch size [slices, H, W] (clipped to the data)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (template: 2)")
    parser.add_argument("--slice-axis", type=int, default=0, choices=(0, 1, 2),
                        help="patch axis the recurrence runs over (nnU-Net order; 0 = its coarsest axis)")
    parser.add_argument("--role", action="append", default=[], metavar="ROLE=NAME",
                        help="let the channel NAME play ROLE (DWI, SWAN, PHASE), e.g. --role SWAN=SWI")
    for option, key in SIZE_OPTIONS.items():
        kind = str if key in ("second_pass", "upsample_mode") else int
        parser.add_argument(f"--{option.replace('_', '-')}", type=kind, default=None, help=f"arch_kwargs {key}")
    parser.add_argument("--llstm-reading", choices=("A", "B"), default=None,
                        help="Eq. (14): B (default) feeds [x, h] to the kxk conv part, A only [x, h^C]")
    parser.add_argument("--norm", choices=list(NORM_OPS), default=None, help="Up block normalisation")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        template = load_template(args.template)
        if args.patch:
            template["patch_size"] = args.patch
        if args.batch is not None:
            template["batch_size"] = args.batch
        for option, key in SIZE_OPTIONS.items():
            if getattr(args, option) is not None:
                template["arch_kwargs"][key] = getattr(args, option)
        if args.llstm_reading:
            template["arch_kwargs"]["conv_part_sees_logic_state"] = args.llstm_reading == "B"
        if args.norm:
            template["arch_kwargs"]["norm_op"] = NORM_OPS[args.norm]
        if not nnUNet_preprocessed:
            raise ValueError("nnUNet_preprocessed is not set")
        folder = os.path.join(nnUNet_preprocessed, maybe_convert_to_dataset_name(args.dataset))
        source = os.path.join(folder, f"{args.source_plans}.json")
        if not os.path.isfile(source):
            raise ValueError(f"{source} not found; run nnUNetv2_plan_and_preprocess first")
        with open(source) as f:
            plans = json.load(f)
        with open(os.path.join(folder, "dataset.json")) as f:
            dataset_json = json.load(f)
        derived = derive_upattllstm_plans(plans, dataset_json, template, args.model, args.configuration,
                                          args.plans_name, parse_role_overrides(args.role), args.slice_axis)
        parameters = count_parameters(build_network(derived, dataset_json, args.configuration))
    except (ValueError, RuntimeError, TypeError) as error:
        sys.exit(f"error: {error}")
    target = os.path.join(folder, f"{derived['plans_name']}.json")
    with open(target + ".tmp", "w") as f:
        json.dump(derived, f, indent=2)
    os.replace(target + ".tmp", target)
    configured = derived["configurations"][args.configuration]
    roles = ", ".join(f"{role}={name}" for role, name in derived["nnunet_ext"]["channel_roles"].items())
    print(f"{target}: {args.model} on {args.configuration}, patch {configured['patch_size']}, batch "
          f"{configured['batch_size']}, {parameters:,} parameters, roles {roles}")
    print(f"train: nnUNetv2_train {args.dataset} {args.configuration} FOLD -p {derived['plans_name']} "
          f"-tr nnUNetTrainerUpAttLLSTM")


if __name__ == "__main__":
    main()
