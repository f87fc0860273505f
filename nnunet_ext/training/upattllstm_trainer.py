"""Training the clot networks (UpAttLLSTM and its ablations) inside nnU-Net, as the paper trains them (section 5.2).

What differs from nnUNetTrainer, and why:
  * no deep supervision: the networks have one output resolution;
  * each batch pairs crops with and without a clot (`ClotPairDataLoader`, nnunet_ext.training.clot_sampling):
    the last half holds a clot voxel anywhere in the crop, not at its centre as nnU-Net's oversampling puts it
    (the attention models' position embeddings learned that shortcut); the first half holds no clot slice;
    validation crops are drawn the same way (with batch 2, one of each: the paper's sampling);
  * AdamW at 1e-3 with poly decay, no decay on norms, embeddings and gains (nnunet_ext.training.clot_optimizer:
    nnU-Net's SGD collapsed the attention), and per-epoch attention diagnostics in the training log (the residual
    gains and the attention entropy, beside nnU-Net's pseudo Dice);
  * augmentation is the paper's: flips along each of the three axes and Gaussian noise, each with probability
    0.4, instead of nnU-Net's rotations, scaling, blur, contrast and gamma (the SpatialDA variants add nnU-Net's
    in-plane rotation and scaling before them);
  * the GradualDrop variant adds gradual modality dropout of PHASE (drop probability 0.5, schedule 'paper'),
    from scratch or as a fine-tune with `-pretrained_weights` (the paper adds 400 epochs).
The network itself comes from the plans (`nnunet_ext_plan_upattllstm`), so one trainer serves all ablations.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_ext.dropout.config import DATASET_JSON_KEY
from nnunet_ext.training.attention_diagnostics import attention_summary
from nnunet_ext.training.clot_optimizer import ClotOptimizerSettings, clot_optimizer
from nnunet_ext.training.clot_sampling import (bbox_holds_foreground, crop_corner_range, draw_clot_free_corner,
                                               draw_corner_holding_centred, foreground_voxels)
from nnunet_ext.training.ext_trainer import nnUNetTrainerExt
from nnunet_ext.training.modality_dropout_trainer import nnUNetTrainerModalityDropout

AUGMENTATION_PROBABILITY = 0.4  # paper: flips and Gaussian noise "each chosen with 40 % probability"
# nnU-Net's spatial augmentation (nnUNetTrainer.get_training_transforms / configure_rotation_dummyDA_...): its
# probabilities, scale range and in-plane rotation for anisotropic patches; the initial patch is sized for them
# with nnU-Net's get_patch_size and scale range
SPATIAL_PROBABILITY = 0.2
SCALING_RANGE = (0.7, 1.4)
INPLANE_ROTATION = (-np.pi, np.pi)
INITIAL_PATCH_SCALING = (0.85, 1.25)
CLOT_FREE_ATTEMPTS = 20
# configuration key of the patch the clot trainers crop; `patch_size` is what nnU-Net's predictor tiles with
# (more slices: the recurrence runs over a whole stack at inference). Absent in older plans: patch_size.
TRAINING_PATCH_KEY = "training_patch_size"
# crops drawn from each image of a batch (Table 4's "Batch's crops"); absent: 1
CROPS_PER_IMAGE_KEY = "crops_per_image"
DEFAULT_DROPPABLE = ("PHASE",)


class ClotPairDataLoader(nnUNetDataLoader):
    """nnU-Net's loader with the clot trainers' crops (nnunet_ext.training.clot_sampling): the last
    `oversample_foreground_percent` of a batch holds a clot anywhere in the crop (not at its centre), the others
    hold none, decided along the slice axis.

    'Holds' is judged on the foreground locations nnU-Net stored at preprocessing (every voxel of a small object,
    a sample of >= 10,000 for large ones). Where every slice window meets a clot, crops are redrawn up to
    CLOT_FREE_ATTEMPTS times until they hold no clot voxel; if none does, the last draw is used and counted in
    `clot_free_misses`. Draws come from a numpy Generator seeded from the process's global numpy state (which
    nnU-Net seeds per data-loading worker), so workers and DDP ranks draw differently.
    """

    clot_free_misses: int = 0

    def __init__(self, *args, crops_per_image: int = 1, slice_axis: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if crops_per_image < 1 or self.batch_size % crops_per_image:
            raise ValueError(f"a batch of {self.batch_size} crops cannot hold {crops_per_image} crops per image")
        if slice_axis not in range(len(self.patch_size)):
            raise ValueError(f"slice_axis must be an axis of the {len(self.patch_size)}D patch, got {slice_axis!r}")
        self.crops_per_image = crops_per_image
        self.slice_axis = slice_axis
        self._rng: Optional[np.random.Generator] = None
        self._rng_pid: Optional[int] = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None or self._rng_pid != os.getpid():  # a forked worker draws its own
            self._rng = np.random.default_rng(np.random.randint(0, 2 ** 31 - 1))
            self._rng_pid = os.getpid()
        return self._rng

    def get_indices(self):
        """batch_size / crops_per_image images, each repeated crops_per_image times and interleaved ([a, b, a, b,
        ...]), so that the clot-free first half and the clot-holding second half both take crops of every image."""
        if self.crops_per_image == 1:
            return super().get_indices()
        images = np.random.choice(self.indices, self.batch_size // self.crops_per_image, replace=True,
                                  p=self.sampling_probabilities)
        return list(images) * self.crops_per_image

    def get_bbox(self, data_shape: np.ndarray, force_fg: bool, class_locations: Union[dict, None],
                 overwrite_class: Union[int, Tuple[int, ...]] = None, verbose: bool = False):
        bounds = crop_corner_range(data_shape, self.patch_size, self.need_to_pad)
        foreground = foreground_voxels(class_locations, self.annotated_classes_key)
        if force_fg and len(foreground):
            voxel = foreground[self.rng.integers(0, len(foreground))][1:]
            # the voxel must lie in the final patch that the spatial augmentation crops around the centre
            lower = draw_corner_holding_centred(voxel, self.patch_size, self.final_patch_size, bounds, self.rng)
            return lower, [a + int(p) for a, p in zip(lower, self.patch_size)]
        if force_fg:  # a case without any clot: nnU-Net's fallback, a random crop
            return super().get_bbox(data_shape, False, class_locations, overwrite_class, verbose)
        lower = draw_clot_free_corner(np.unique(foreground[:, 1 + self.slice_axis]), self.patch_size, bounds,
                                      self.slice_axis, self.rng)
        if lower is not None:
            return lower, [a + int(p) for a, p in zip(lower, self.patch_size)]
        locations = {1: foreground}
        for _ in range(CLOT_FREE_ATTEMPTS):
            lower = [int(self.rng.integers(low, high + 1)) for low, high in zip(*bounds)]
            upper = [a + int(p) for a, p in zip(lower, self.patch_size)]
            if not bbox_holds_foreground(lower, upper, locations):
                return lower, upper
        self.clot_free_misses += 1
        return lower, upper


class AxisFlipTransform(MirrorTransform):
    """Flip along each allowed axis independently with probability `probability` (MirrorTransform: 0.5)."""

    def __init__(self, allowed_axes: Tuple[int, ...], probability: float):
        super().__init__(allowed_axes)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {probability}")
        self.probability = probability

    def get_parameters(self, **data_dict) -> dict:
        return {"axes": [axis for axis in self.allowed_axes if torch.rand(1).item() < self.probability]}


def inplane_spatial_transforms(patch_size: Sequence[int], rotation_for_DA: RandomScalar) -> List[BasicTransform]:
    """nnU-Net's spatial augmentation of an anisotropic patch ("dummy 2D", nnUNetTrainer.get_training_transforms):
    each slice rotated by the same angle and scaled by the same factor in its plane (probability 0.2 each, scale
    0.7-1.4, no elastic deformation), and the final `patch_size` cropped around the centre. Never across slices:
    the clot networks' recurrence runs along them, and a slice is several pixels thick."""
    return [Convert3DTo2DTransform(),
            SpatialTransform(list(patch_size[1:]), patch_center_dist_from_border=0, random_crop=False,
                             p_elastic_deform=0, p_rotation=SPATIAL_PROBABILITY, rotation=rotation_for_DA,
                             p_scaling=SPATIAL_PROBABILITY, scaling=SCALING_RANGE, p_synchronize_scaling_across_axes=1,
                             bg_style_seg_sampling=False, border_mode_seg='constant', padding_value_seg=-1),
            Convert2DTo3DTransform()]


def clot_training_transforms(mirror_axes: Optional[Tuple[int, ...]], use_mask_for_norm: Optional[List[bool]] = None,
                             regions=None, ignore_label=None,
                             probability: float = AUGMENTATION_PROBABILITY,
                             patch_size: Optional[Sequence[int]] = None,
                             rotation_for_DA: Optional[RandomScalar] = None) -> BasicTransform:
    """The paper's augmentation: flips (per axis) and Gaussian noise, each with `probability`, after nnU-Net's
    in-plane rotation and scaling where `rotation_for_DA` is given (cropping the final `patch_size`); then
    nnU-Net's own bookkeeping (zero outside the normalisation mask again, as its pipeline does, so that noise does
    not reach the background; label -1 outside the image becomes background)."""
    transforms: List[BasicTransform] = []
    if rotation_for_DA is not None:
        if patch_size is None:
            raise ValueError("the spatial augmentation needs the final patch size")
        transforms.extend(inplane_spatial_transforms(patch_size, rotation_for_DA))
    if mirror_axes:
        transforms.append(AxisFlipTransform(tuple(mirror_axes), probability))
    transforms.append(RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
                                                             synchronize_channels=True),
                                      apply_probability=probability))
    if use_mask_for_norm is not None and any(use_mask_for_norm):
        transforms.append(MaskImageTransform(apply_to_channels=[i for i, m in enumerate(use_mask_for_norm) if m],
                                             channel_idx_in_seg=0, set_outside_to=0))
    transforms.append(RemoveLabelTansform(-1, 0))
    if regions is not None:
        transforms.append(ConvertSegmentationToRegionsTransform(
            regions=list(regions) + [ignore_label] if ignore_label is not None else regions, channel_in_seg=0))
    return ComposeTransforms(transforms)


class UpAttLLSTMTraining:
    """Mixin with everything the clot trainers change in nnUNetTrainer (see the module docstring); put it first
    in the bases, before an nnUNetTrainer subclass."""

    clot_oversample = 0.5
    # nnU-Net's in-plane rotation and scaling before the paper's flips and noise (nnUNetTrainerUpAttLLSTMSpatialDA)
    spatial_augmentation = False

    optimizer_settings = ClotOptimizerSettings()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.oversample_foreground_percent = self.clot_oversample
        self.initial_lr = self.optimizer_settings.learning_rate
        self.weight_decay = self.optimizer_settings.weight_decay
        self.probe_batch: Optional[torch.Tensor] = None  # the epoch's first validation batch

    def configure_optimizers(self):
        return clot_optimizer(self.network, self.num_epochs, self.optimizer_settings)

    def collect_settings(self) -> Dict:
        return {**super().collect_settings(),
                "clot_sampling": {"oversample_foreground_percent": self.clot_oversample,
                                  "with_clot": "a clot voxel anywhere in the crop (corner drawn uniformly)",
                                  "others": "no clot slice in the crop's slice window (else redrawn without a clot "
                                            "voxel)",
                                  "validation": "drawn as training crops", "slice_axis": self.slice_axis,
                                  "crops_per_image": self.crops_per_image,
                                  "training_patch_size": self.training_patch_size},
                "optimizer": self.optimizer_settings.as_dict(),
                "augmentation": self.augmentation_settings()}

    def augmentation_settings(self) -> Dict:
        # the paper's recipe records what it recorded before the spatial variant existed, so that its trainings
        # still resume with --c (the settings file must match)
        settings = {"flip_probability_per_axis": AUGMENTATION_PROBABILITY,
                    "gaussian_noise_probability": AUGMENTATION_PROBABILITY}
        if self.spatial_augmentation:
            settings["inplane_spatial"] = {"rotation_probability": SPATIAL_PROBABILITY,
                                           "rotation_radians": list(INPLANE_ROTATION),
                                           "scaling_probability": SPATIAL_PROBABILITY, "scaling": list(SCALING_RANGE)}
        return settings

    @property
    def training_patch_size(self) -> List[int]:
        configuration = self.configuration_manager.configuration
        return list(configuration.get(TRAINING_PATCH_KEY, configuration["patch_size"]))

    @property
    def slice_axis(self) -> int:
        """The recurrence axis of the patch (plans' arch_kwargs; nnU-Net's plain networks: axis 0)."""
        return int(self.configuration_manager.network_arch_init_kwargs.get("slice_axis", 0))

    @property
    def crops_per_image(self) -> int:
        return int(self.configuration_manager.configuration.get(CROPS_PER_IMAGE_KEY, 1))

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        patch_size = self.training_patch_size
        mirror_axes = tuple(range(len(patch_size)))
        self.inference_allowed_mirroring_axes = mirror_axes
        if not self.spatial_augmentation:  # the paper's: no rotation or scaling, the loader crops the final patch
            return None, False, list(patch_size), mirror_axes
        if self.slice_axis != 0:
            raise ValueError(f"{self.__class__.__name__}: the in-plane spatial augmentation needs the slices on the "
                             f"patch's first axis, got slice_axis {self.slice_axis}")
        # nnU-Net's own sizing of the loaded patch for an in-plane rotation (it undersizes some angles: the corners
        # it misses are zero-padded, as in nnU-Net); slices as they are
        initial_patch_size = [int(patch_size[0])] + [int(v) for v in get_patch_size(
            patch_size, INPLANE_ROTATION, INPLANE_ROTATION, INPLANE_ROTATION, INITIAL_PATCH_SCALING)[1:]]
        return INPLANE_ROTATION, True, initial_patch_size, mirror_axes

    @staticmethod
    def get_training_transforms(patch_size: Union[np.ndarray, Tuple[int]], rotation_for_DA: RandomScalar,
                                deep_supervision_scales: Union[List, Tuple, None], mirror_axes: Tuple[int, ...],
                                do_dummy_2d_data_aug: bool, use_mask_for_norm: List[bool] = None,
                                is_cascaded: bool = False, foreground_labels=None, regions=None,
                                ignore_label: int = None) -> BasicTransform:
        if is_cascaded or deep_supervision_scales is not None:
            raise ValueError("the clot trainers support neither cascades nor deep supervision")
        if rotation_for_DA is not None and not do_dummy_2d_data_aug:
            raise ValueError("the clot trainers rotate in the slice plane only (do_dummy_2d_data_aug)")
        return clot_training_transforms(mirror_axes, use_mask_for_norm, regions, ignore_label,
                                        patch_size=patch_size, rotation_for_DA=rotation_for_DA)

    def get_dataloaders(self):
        # nnUNetTrainer.get_dataloaders has no hook for the loader class, so this is its body with
        # ClotPairDataLoader for training (no deep supervision, no cascade, no rotation: see above), and the
        # training patch for both loaders
        patch_size = self.training_patch_size
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        labels = self.label_manager
        regions = labels.foreground_regions if labels.has_regions else None
        train_transforms = self.get_training_transforms(
            patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
            is_cascaded=self.is_cascaded, foreground_labels=labels.foreground_labels, regions=regions,
            ignore_label=labels.ignore_label)
        validation_transforms = self.get_validation_transforms(None, is_cascaded=self.is_cascaded,
                                                               foreground_labels=labels.foreground_labels,
                                                               regions=regions, ignore_label=labels.ignore_label)
        dataset_train, dataset_validation = self.get_tr_and_val_datasets()
        crops = self.crops_per_image
        # validation crops are drawn as training crops are (clot anywhere in the crop): with nnU-Net's centred
        # crops the pseudo Dice rewarded the centre shortcut that the sliding window at inference does not offer
        loaders = [ClotPairDataLoader(dataset, batch, initial_patch_size if train else patch_size, patch_size, labels,
                                      oversample_foreground_percent=self.oversample_foreground_percent,
                                      sampling_probabilities=None, pad_sides=None, transforms=transforms,
                                      probabilistic_oversampling=self.probabilistic_oversampling,
                                      crops_per_image=crops_per_image, slice_axis=self.slice_axis)
                   for dataset, batch, transforms, crops_per_image, train in (
                       (dataset_train, self.batch_size * crops, train_transforms, crops, True),
                       (dataset_validation, self.batch_size, validation_transforms, 1, False))]
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            augmenters = [SingleThreadedAugmenter(loader, None) for loader in loaders]
        else:
            augmenters = [NonDetMultiThreadedAugmenter(data_loader=loader, transform=None, num_processes=n,
                                                       num_cached=max(cached, n // 2), seeds=None,
                                                       pin_memory=self.device.type == 'cuda', wait_time=0.002)
                          for loader, n, cached in ((loaders[0], processes, 6),
                                                    (loaders[1], max(1, processes // 2), 3))]
        for augmenter in augmenters:
            next(augmenter)  # start the workers, as nnU-Net does
        return augmenters[0], augmenters[1]

    def validation_step(self, batch: dict) -> dict:
        if self.probe_batch is None:
            self.probe_batch = batch["data"]
        return super().validation_step(batch)

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        if self.probe_batch is not None:
            line = attention_summary(self.network, self.probe_batch.to(self.device))
            self.probe_batch = None
            if line:  # the attention models only; nnU-Net logs the pseudo Dice of the same epoch beside it
                self.print_to_log_file(line)

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        loader = getattr(self.dataloader_train, "data_loader", None)  # single-process loading only
        if isinstance(loader, ClotPairDataLoader) and loader.clot_free_misses:
            self.print_to_log_file(f"clot sampling: {loader.clot_free_misses} crop(s) meant to be clot-free "
                                   f"held a clot so far")


class nnUNetTrainerUpAttLLSTM(UpAttLLSTMTraining, nnUNetTrainerExt):
    """The clot networks with the paper's sampling and augmentation, plus our budget knobs and settings file."""


class nnUNetTrainerUpAttLLSTMGradualDrop(UpAttLLSTMTraining, nnUNetTrainerModalityDropout):
    """As nnUNetTrainerUpAttLLSTM, with gradual modality dropout of PHASE (unless dataset.json or
    NNUNET_EXT_DROPPABLE_CHANNELS names other channels)."""

    drop_probability = 0.5
    dropout_schedule = "paper"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        if DATASET_JSON_KEY not in dataset_json:
            dataset_json = {**dataset_json, DATASET_JSON_KEY: list(DEFAULT_DROPPABLE)}
        super().__init__(plans, configuration, fold, dataset_json, device)


class nnUNetTrainerUpAttLLSTMSpatialDA(nnUNetTrainerUpAttLLSTM):
    """nnUNetTrainerUpAttLLSTM with nnU-Net's in-plane rotation and scaling before the paper's flips and noise."""

    spatial_augmentation = True


class nnUNetTrainerUpAttLLSTMSpatialDAGradualDrop(nnUNetTrainerUpAttLLSTMGradualDrop):
    """nnUNetTrainerUpAttLLSTMGradualDrop with nnU-Net's in-plane rotation and scaling."""

    spatial_augmentation = True
