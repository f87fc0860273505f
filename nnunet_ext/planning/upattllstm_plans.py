"""Plans that make the stock nnU-Net commands train and predict our clot networks (UpAttLLSTM and its ablations).

The plans are derived from nnU-Net's own under a new plans name and keep the configuration's `data_identifier`,
so the data `nnUNetv2_plan_and_preprocess` wrote is reused as is. They name the network by dotted path
(`architecture.network_class_name`, e.g. nnunet_ext.networks.clot_networks.UpAttLLSTM) with its sizes in
`arch_kwargs`. The input channels playing DWI, SWAN and PHASE are found by their dataset.json names and written
as `dwi_channel`, `swan_channel`, `phase_channel`. The patch is [slices, H, W] (Table 4:
12 x 256 x 256), clipped to the data's median size; in-plane it stays a multiple of the DWI patch size P_D, as
the attention's patch embedding needs. The command line is `nnunet_ext_plan_upattllstm` (plans/upattllstm_plans.py).
"""
import inspect
import math
from copy import deepcopy
from typing import Dict, List, Mapping, Optional, Sequence, Union

from nnunet_ext.dropout.config import channel_names_from_dataset_json
from nnunet_ext.networks.clot_networks import ATTENTION_MODELS, CLOT_MODELS, model_class_path
from nnunet_ext.training.upattllstm_trainer import CROPS_PER_IMAGE_KEY, TRAINING_PATCH_KEY

ROLES = ("DWI", "SWAN", "PHASE")
ROLE_KWARGS = {"DWI": "dwi_channel", "SWAN": "swan_channel", "PHASE": "phase_channel"}
IMPORTED_KWARGS = ("norm_op",)  # arch_kwargs that nnU-Net imports by dotted path (_kw_requires_import)
DEFAULT_MODEL = "UpAttLLSTM"
INFERENCE_WHOLE_STACK, INFERENCE_TILED = "stack", "patch"


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


def inference_patch(training_patch: Sequence[int], stack_slices: float, slice_axis: int,
                    slices: Union[str, int] = INFERENCE_WHOLE_STACK) -> List[int]:
    """The patch nnU-Net's sliding window predicts with: the training patch with more slices along the recurrence
    axis. 'stack': `stack_slices` (the median case's slice count, rounded up), so that a typical case is one
    recurrent pass instead of tiles of a few slices that overlap by half (and pay the per-slice front end twice).
    A shorter case is zero-padded by nnU-Net's predictor, so the recurrence also runs over a few empty slices (as it
    does in training for crops that reach beyond the image); a longer one gets two overlapping windows. 'patch':
    the training patch (tiled prediction); an integer: that many slices. Never fewer than the training patch's."""
    patch = [int(p) for p in training_patch]
    if slices == INFERENCE_WHOLE_STACK:
        wanted = int(math.ceil(float(stack_slices)))
    elif slices == INFERENCE_TILED:
        wanted = patch[slice_axis]
    elif isinstance(slices, int) and not isinstance(slices, bool) and slices >= 1:
        wanted = slices
    else:
        raise ValueError(f"inference_slices must be '{INFERENCE_WHOLE_STACK}', '{INFERENCE_TILED}' or a positive "
                         f"number of slices, got {slices!r}")
    patch[slice_axis] = max(patch[slice_axis], wanted)
    return patch


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


SUSCEPTIBILITY_CHANNELS = 2  # SWAN and PHASE: the attention's keys and values


def check_token_capacity(sizes: Mapping) -> None:
    """A susceptibility token embeds a P_S x P_S patch of 2 channels into D values: with D < 2 P_S^2 the
    embedding must squeeze the patch (the CPU template had D = 8 for 32 values), so the attention cannot carry a
    small clot's pixels. Refused for the attention models."""
    dim, patch = int(sizes.get("attention_dim", 32)), int(sizes.get("susceptibility_patch", 4))
    needed = patch * patch * SUSCEPTIBILITY_CHANNELS
    if dim < needed:
        raise ValueError(f"attention_dim D = {dim} is smaller than a susceptibility token's {patch} x {patch} x "
                         f"{SUSCEPTIBILITY_CHANNELS} = {needed} values (susceptibility_patch P_S = {patch}): "
                         f"raise D or lower P_S")


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
    crops = template.get("crops_per_image", 1)
    if not isinstance(crops, int) or isinstance(crops, bool) or crops < 1:
        raise ValueError(f"crops_per_image must be a whole number >= 1, got {crops!r}")
    roles = resolve_channel_roles(channel_names_from_dataset_json(dataset_json), role_overrides)
    sizes = dict(template["arch_kwargs"])
    if model in ATTENTION_MODELS:
        check_token_capacity(sizes)
    multiple = int(sizes.get("dwi_patch", 32)) if model in ATTENTION_MODELS else 1
    patch = clip_patch(template["patch_size"], source.get("median_image_size_in_voxels", [1e9] * 3), slice_axis,
                       multiple)
    slice_shape = [p for axis, p in enumerate(patch) if axis != slice_axis]
    arch_kwargs = model_arch_kwargs(model, sizes, roles, slice_shape, slice_axis)
    inference = inference_patch(patch, source.get("median_image_size_in_voxels", patch)[slice_axis], slice_axis,
                                template.get("inference_slices", INFERENCE_WHOLE_STACK))

    derived = deepcopy(plans)
    derived["plans_name"] = plans_name or f"nnUNetPlans_{model}"
    configured = deepcopy(source)  # keeps data_identifier, spacing, normalisation: the preprocessed data is reused
    # nnU-Net's predictor tiles with `patch_size`; the trainer crops `training_patch_size` (same in-plane size, so
    # the attention's position embedding is the one trained; more slices, which the recurrence runs over in one pass)
    configured["patch_size"] = inference
    configured[TRAINING_PATCH_KEY] = patch
    configured["batch_size"] = batch_size
    configured[CROPS_PER_IMAGE_KEY] = crops
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
