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
`phase_channel`; `--role SWAN=SWI` lets another name play a role. The patch is [slices, H, W] (Table 4:
12 x 256 x 256), clipped to the data's median size; in-plane it stays a multiple of the DWI
patch size P_D, as the attention's patch embedding needs.
"""
import argparse
import json
import os
import sys

from nnunet_ext.networks.clot_networks import CLOT_MODELS, count_parameters
from nnunet_ext.planning.templates import load_template
from nnunet_ext.planning.upattllstm_plans import (  # noqa: F401 (re-exported for existing imports)
    DEFAULT_MODEL, IMPORTED_KWARGS, INFERENCE_TILED, INFERENCE_WHOLE_STACK, ROLE_KWARGS, ROLES, build_network,
    clip_patch, derive_upattllstm_plans, inference_patch, model_arch_kwargs, parse_role_overrides,
    resolve_channel_roles)
from nnunet_ext.training.upattllstm_trainer import CROPS_PER_IMAGE_KEY, TRAINING_PATCH_KEY


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
                        help="size template (nnunet_ext/planning/templates; upattllstm: Table 4, upattllstm_cpu: tiny)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, metavar=("SLICES", "H", "W"),
                        help="patch size [slices, H, W] (clipped to the data)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (template: 2)")
    parser.add_argument("--crops-per-image", type=int, default=None,
                        help="crops drawn from each image of a batch, half around a clot (Table 4: 4; CPU template: 1)")
    parser.add_argument("--qkv-hidden", type=int, default=None,
                        help="hidden width of the Q/K/V MLPs (Linear-GELU-Linear); 0: one Linear(D, D) each")
    parser.add_argument("--inference-slices", default=None,
                        help="slices per prediction window: 'stack' (default: at least the median slice count, one "
                             "recurrent pass per case), 'patch' (the training patch: tiled) or a number")
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
        if args.crops_per_image is not None:
            template["crops_per_image"] = args.crops_per_image
        if args.qkv_hidden is not None:
            template["arch_kwargs"]["qkv_hidden"] = args.qkv_hidden
        if args.inference_slices is not None:
            value = args.inference_slices
            template["inference_slices"] = int(value) if value.isdigit() else value
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
    print(f"{target}: {args.model} on {args.configuration}, patch {configured[TRAINING_PATCH_KEY]}, batch "
          f"{configured['batch_size']} x {configured[CROPS_PER_IMAGE_KEY]} crops, {parameters:,} parameters, "
          f"roles {roles}; prediction windows {configured['patch_size']}")
    print(f"train: nnUNetv2_train {args.dataset} {args.configuration} FOLD -p {derived['plans_name']} "
          f"-tr nnUNetTrainerUpAttLLSTM")


if __name__ == "__main__":
    main()
