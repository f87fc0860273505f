"""`nnunet_ext_plan_cpu`: derive a small configuration from nnU-Net's own plans, saved under its own plans name.

The derived plans keep nnU-Net's `data_identifier`, so they reuse the data `nnUNetv2_plan_and_preprocess`
already wrote, and the stock CLIs take them with `-p`:
    nnUNetv2_train DATASET 3d_fullres 0 -p nnUNetPlans_CPU -tr ... -device cpu
The network topology for the smaller patch comes from nnU-Net's own planner function, so strides, kernel
sizes and the patch's divisibility follow the same rules as nnU-Net's plans.
"""
import argparse
import json
import os
import sys

from nnunet_ext.planning.cpu_plans import (MIN_FEATURE_MAP_EDGE, derive_cpu_plans,  # noqa: F401 (re-exported)
                                           shrink_configuration)
from nnunet_ext.planning.templates import TEMPLATE_DIR, load_template  # noqa: F401 (re-exported)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-p", "--source-plans", default="nnUNetPlans", help="plans to derive from")
    parser.add_argument("-o", "--plans-name", default=None, help="name of the derived plans (template's default)")
    parser.add_argument("-t", "--template", default="cpu", help="template in nnunet_ext/planning/templates")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="patch size override")
    parser.add_argument("--batch", type=int, default=None, help="batch size override")
    parser.add_argument("--features", type=int, nargs=2, default=None, metavar=("BASE", "MAX"),
                        help="features of the first stage and the cap")
    args = parser.parse_args(argv)

    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        template = load_template(args.template)
        if args.patch:
            template["patch_size"] = args.patch
        if args.batch:
            template["batch_size"] = args.batch
        if args.features:
            template["base_features"], template["max_features"] = args.features
        folder = os.path.join(nnUNet_preprocessed, maybe_convert_to_dataset_name(args.dataset))
        source = os.path.join(folder, f"{args.source_plans}.json")
        if not os.path.isfile(source):
            raise ValueError(f"{source} not found; run nnUNetv2_plan_and_preprocess first")
        with open(source) as f:
            derived = derive_cpu_plans(json.load(f), template, args.plans_name)
    except (ValueError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    target = os.path.join(folder, f"{derived['plans_name']}.json")
    with open(target + ".tmp", "w") as f:
        json.dump(derived, f, indent=2)
    os.replace(target + ".tmp", target)
    for name, configuration in derived["configurations"].items():
        arch = configuration["architecture"]["arch_kwargs"]
        print(f"{target}: {name} patch {configuration['patch_size']}, batch {configuration['batch_size']}, "
              f"features {arch['features_per_stage']}")


if __name__ == "__main__":
    main()
