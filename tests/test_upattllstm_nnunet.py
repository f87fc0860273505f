"""UpAttLLSTM in nnU-Net: plans derived from nnU-Net's own, the clot trainers, and the stock nnUNetv2_train /
nnUNetv2_predict end to end on a tiny clot cohort on CPU."""
import glob
import json
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
from nnunet_ext.networks.clot_networks import count_parameters
from nnunet_ext.training.upattllstm_trainer import (AxisFlipTransform, ClotPairDataLoader, bbox_holds_foreground,
                                                    nnUNetTrainerUpAttLLSTM, nnUNetTrainerUpAttLLSTMGradualDrop)
from nnunet_ext.training.variants import trainer_variant
from nnunet_ext_plans import upattllstm_plans
from nnunet_ext_plans.cpu_plans import load_template
from nnunet_ext_plans.upattllstm_plans import (build_network, clip_patch, derive_upattllstm_plans, inference_patch,
                                               parse_role_overrides, resolve_channel_roles)

from conftest import NnunetWorkspace

DATASET = "502"
DATASET_NAME = "Dataset502_SyntheticClot"
PLANS = "nnUNetPlans_UpAttLLSTM"
TRAINER = "nnUNetTrainerUpAttLLSTM_1epochs_3it_1valit"
FINE_TUNE = "nnUNetTrainerUpAttLLSTMGradualDrop_400epochs"
VALIDATION_CASE = "clot_B_000"


@pytest.fixture(scope="module")
def clot_run(tmp_path_factory):
    """Tiny clot cohort -> stock plan_and_preprocess -> our plans (CPU template) -> stock nnUNetv2_train."""
    workspace = NnunetWorkspace(str(tmp_path_factory.mktemp("clot_nnunet")))
    spec = ClotCohortSpec(train_per_center=3, test_per_center=1, size=32, seed=0)
    workspace.raw_dataset = write_clot_cohort(spec, workspace.paths["nnUNet_raw"], progress=False)
    workspace.run(["nnUNetv2_plan_and_preprocess", "-d", DATASET, "-c", "3d_fullres", "-np", "2"],
                  {"nnUNet_n_proc_DA": "2"})  # the planner calls torch.set_num_threads(n_proc_DA)
    preprocessed = os.path.join(workspace.paths["nnUNet_preprocessed"], DATASET_NAME)
    # one validation case instead of nnU-Net's 5-fold split (2 cases here): the end-of-training validation
    # predicts every validation case with test-time mirroring, the slowest part of a CPU test run
    cases = sorted(json.load(open(os.path.join(workspace.raw_dataset, "case_centers.json"))))
    training = [case for case in cases if not case.endswith("_003") and case != VALIDATION_CASE]
    with open(os.path.join(preprocessed, "splits_final.json"), "w") as f:
        json.dump([{"train": training, "val": [VALIDATION_CASE]}], f)
    planned = workspace.run(["nnunet_ext_plan_upattllstm", "-d", DATASET, "-t", "upattllstm_cpu"])
    results = os.path.join(workspace.paths["nnUNet_results"], DATASET_NAME)
    trained = workspace.run(["nnUNetv2_train", DATASET, "3d_fullres", "0", "-p", PLANS, "-tr", TRAINER,
                             "-device", "cpu"])
    return {"workspace": workspace, "planned": planned.stdout, "trained": trained.stdout,
            "preprocessed": preprocessed,
            "fold": os.path.join(results, f"{TRAINER}__{PLANS}__3d_fullres", "fold_0"), "results": results}


# ---------------------------------------------------------------------------------------------- end to end

def test_derived_plans_name_our_network_and_reuse_the_preprocessed_data(clot_run):
    folder = clot_run["preprocessed"]
    ours = json.load(open(os.path.join(folder, f"{PLANS}.json")))
    stock = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    configuration = ours["configurations"]["3d_fullres"]
    assert ours["plans_name"] == PLANS and list(ours["configurations"]) == ["3d_fullres"]
    assert configuration["data_identifier"] == stock["configurations"]["3d_fullres"]["data_identifier"]
    assert configuration["training_patch_size"] == [8, 32, 32] and configuration["batch_size"] == 2
    # prediction windows: the whole stack along the recurrence axis (the median slice count), same in-plane size
    median = stock["configurations"]["3d_fullres"]["median_image_size_in_voxels"]
    assert configuration["patch_size"] == [max(8, int(np.ceil(median[0]))), 32, 32]
    assert configuration["crops_per_image"] == 1
    architecture = configuration["architecture"]
    assert architecture["network_class_name"] == "nnunet_ext.networks.clot_networks.UpAttLLSTM"
    kwargs = architecture["arch_kwargs"]
    assert (kwargs["dwi_channel"], kwargs["swan_channel"], kwargs["phase_channel"]) == (0, 1, 2)
    assert kwargs["slice_shape"] == [32, 32] and kwargs["slice_axis"] == 0
    assert architecture["_kw_requires_import"] == ["norm_op"]
    assert "UpAttLLSTM on 3d_fullres, patch [8, 32, 32], batch 2 x 1 crops" in clot_run["planned"]


def test_stock_training_ran_the_clot_trainer(clot_run):
    fold = clot_run["fold"]
    checkpoint = torch.load(os.path.join(fold, "checkpoint_final.pth"), weights_only=False, map_location="cpu")
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 1
    assert "front_end.up_block.fuse.conv.weight" in checkpoint["network_weights"]
    assert "recurrence.cell.logic_part.weight" in checkpoint["network_weights"]
    debug = json.load(open(os.path.join(fold, "debug.json")))
    assert debug["enable_deep_supervision"] == "False" and debug["oversample_foreground_percent"] == "0.5"
    settings = json.load(open(os.path.join(fold, "nnunet_ext_settings.json")))["settings"]
    assert settings["num_epochs"] == 1 and settings["num_iterations_per_epoch"] == 3
    assert settings["augmentation"] == {"flip_probability_per_axis": 0.4, "gaussian_noise_probability": 0.4}
    assert settings["optimizer"]["name"] == "AdamW" and settings["optimizer"]["learning_rate"] == 1e-3
    assert settings["clot_sampling"]["validation"] == "drawn as training crops"
    # the optimizer nnU-Net saved is ours, two groups (decayed, not decayed), at the poly schedule's first lr
    groups = checkpoint["optimizer_state"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [1e-2, 0.0] and groups[0]["lr"] == pytest.approx(1e-3)
    # the per-epoch attention diagnostics, logged beside nnU-Net's pseudo Dice
    log = open(sorted(glob.glob(os.path.join(fold, "training_log_*.txt")))[-1]).read()
    diagnostics = re.findall(r"attention: alpha (\S+), beta (\S+), entropy (\S+) of max", log)
    assert len(diagnostics) == 1 and "Pseudo dice" in log
    assert 0.0 < float(diagnostics[0][2]) <= 1.0
    assert os.listdir(os.path.join(fold, "validation")) and \
        json.load(open(os.path.join(fold, "validation", "summary.json")))["metric_per_case"][0]["reference_file"] \
        .endswith(f"{VALIDATION_CASE}.nii.gz")


def test_stock_predict_writes_a_clot_mask_per_test_case(clot_run, tmp_path):
    workspace = clot_run["workspace"]
    images = os.path.join(workspace.raw_dataset, "imagesTs")
    workspace.run(["nnUNetv2_predict", "-i", images, "-o", str(tmp_path), "-d", DATASET, "-c", "3d_fullres",
                   "-f", "0", "-p", PLANS, "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1",
                   "-nps", "1"])
    for case in ("clot_A_003", "clot_B_003", "clot_C_003"):
        prediction = sitk.ReadImage(str(tmp_path / f"{case}.nii.gz"))
        reference = sitk.ReadImage(os.path.join(workspace.raw_dataset, "labelsTs", f"{case}.nii.gz"))
        assert prediction.GetSize() == reference.GetSize() and prediction.GetSpacing() == reference.GetSpacing()
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1}


def test_gradual_drop_fine_tune_loads_the_trained_model_and_drops_phase(clot_run, tmp_path, monkeypatch):
    """What `nnUNetv2_train ... -tr nnUNetTrainerUpAttLLSTMGradualDrop_400epochs -pretrained_weights CKPT` does
    (initialize, load_pretrained_weights, train), in process to keep the test short."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    monkeypatch.setenv("nnUNet_preprocessed", clot_run["workspace"].paths["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.delenv("NNUNET_EXT_DROPPABLE_CHANNELS", raising=False)
    plans = json.load(open(os.path.join(clot_run["preprocessed"], f"{PLANS}.json")))
    dataset_json = json.load(open(os.path.join(clot_run["preprocessed"], "dataset.json")))
    del dataset_json["droppable_channels"]  # the trainer's default: PHASE
    trainer = trainer_variant(FINE_TUNE)(plans={**plans, "continue_training": False},
                                              configuration="3d_fullres", fold=0, dataset_json=dataset_json,
                                              device=torch.device("cpu"))
    assert trainer.modality_dropout.droppable_names == ("PHASE",) and trainer.num_epochs == 400
    trainer.initialize()
    checkpoint = os.path.join(clot_run["fold"], "checkpoint_final.pth")
    load_pretrained_weights(trainer.network, checkpoint)
    trained = torch.load(checkpoint, weights_only=False, map_location="cpu")["network_weights"]
    assert all(torch.equal(value, trained[key]) for key, value in trainer.network.state_dict().items())
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(2)]
    assert all(np.isfinite(o["loss"]) for o in outputs) and trainer._samples_seen == 4
    assert trainer._dropped_per_channel[:2].sum() == 0  # only PHASE (channel 2) can be dropped


def test_plans_for_an_ablation_and_a_missing_role(clot_run, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", clot_run["workspace"].paths["nnUNet_preprocessed"])
    upattllstm_plans.main(["-d", DATASET, "-t", "upattllstm_cpu", "--model", "AttCLSTM"])
    ablation = json.load(open(os.path.join(clot_run["preprocessed"], "nnUNetPlans_AttCLSTM.json")))
    architecture = ablation["configurations"]["3d_fullres"]["architecture"]
    assert architecture["network_class_name"].endswith(".AttCLSTM")
    assert architecture["arch_kwargs"]["hidden_channels"] == 12 and "up_features" not in architecture["arch_kwargs"]
    with pytest.raises(SystemExit, match="no channel named 'QSM' for the PHASE role; dataset.json has DWI, SWAN, "
                                         "PHASE"):
        upattllstm_plans.main(["-d", DATASET, "-t", "upattllstm_cpu", "--role", "PHASE=QSM", "-o", "unused"])
    assert not os.path.exists(os.path.join(clot_run["preprocessed"], "unused.json"))


# ---------------------------------------------------------------------------------------------- plans tool

STOCK_PLANS = {
    "plans_name": "nnUNetPlans",
    "configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [40, 128, 128],
                       "median_image_size_in_voxels": [40, 71, 80], "spacing": [2.0, 0.9, 0.9],
                       "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": {},
                                        "_kw_requires_import": []}},
        "2d": {"data_identifier": "nnUNetPlans_2d"},
    },
}
DATASET_JSON = {"channel_names": {"0": "DWI", "1": "SWAN", "2": "PHASE"}, "labels": {"background": 0, "clot": 1}}


@pytest.mark.parametrize("names,overrides,expected", [
    (["DWI", "SWAN", "PHASE"], [], (0, 1, 2)),
    (["PHASE", "DWI", "SWI"], ["SWAN=SWI"], (1, 2, 0)),
    (["DWI", "SWI", "SWIphase", "ADC"], ["swan=SWI", "PHASE=SWIphase"], (0, 1, 2)),
])
def test_roles_are_found_by_name(names, overrides, expected):
    roles = resolve_channel_roles(names, parse_role_overrides(overrides))
    assert (roles["dwi_channel"], roles["swan_channel"], roles["phase_channel"]) == expected


@pytest.mark.parametrize("names,overrides,message", [
    (["DWI", "SWI"], [], "no channel named 'SWAN' for the SWAN role; dataset.json has DWI, SWI. Name the channel "
                         "that plays it with --role SWAN=NAME"),
    (["DWI", "SWAN", "PHASE"], ["T2=DWI"], "unknown role 'T2'"),
    (["DWI", "SWAN", "PHASE"], ["PHASE=SWAN"], "one channel plays several roles"),
    (["DWI", "SWAN", "PHASE"], ["SWAN"], "not ROLE=CHANNEL_NAME"),
    (["DWI", "SWAN", "PHASE"], ["SWAN=A", "SWAN=B"], "role SWAN is given twice"),
])
def test_bad_roles_are_named(names, overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_channel_roles(names, parse_role_overrides(overrides))


@pytest.mark.parametrize("patch,median,axis,multiple,expected", [
    ([12, 256, 256], [40, 71, 80], 0, 32, [12, 96, 96]),   # in-plane: the median rounded up to P_D
    ([12, 256, 256], [8, 300, 500], 0, 32, [8, 256, 256]),  # fewer slices than the patch
    ([12, 64, 64], [200, 30, 90], 1, 8, [64, 12, 64]),     # coronal: the recurrence runs over axis 1
    ([12, 20, 20], [40, 71, 80], 0, 1, [12, 20, 20]),      # no attention: any in-plane size
])
def test_patch_is_clipped_to_the_data(patch, median, axis, multiple, expected):
    assert clip_patch(patch, median, axis, multiple) == expected


@pytest.mark.parametrize("slices,stack,expected", [
    ("stack", 39.5, [40, 96, 96]),    # the median stack, rounded up
    ("stack", 7.2, [12, 96, 96]),     # never fewer slices than the training patch
    ("patch", 40, [12, 96, 96]),      # tiled, as trained
    (64, 40, [64, 96, 96]),
])
def test_inference_patch_runs_the_recurrence_over_the_stack(slices, stack, expected):
    assert inference_patch([12, 96, 96], stack, 0, slices) == expected
    # the recurrence over axis 1 (coronal)
    assert inference_patch([96, 12, 96], stack, 1, slices) == [expected[1], expected[0], expected[2]]


@pytest.mark.parametrize("bad", ["all", 0, -3, True, 2.5])
def test_inference_slices_must_be_a_mode_or_a_count(bad):
    with pytest.raises(ValueError, match="inference_slices must be 'stack', 'patch' or a positive number"):
        inference_patch([12, 96, 96], [40, 71, 80], 0, bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_crops_per_image_must_be_a_whole_number(bad):
    template = {**load_template("upattllstm"), "crops_per_image": bad}
    with pytest.raises(ValueError, match="crops_per_image must be a whole number >= 1"):
        derive_upattllstm_plans(STOCK_PLANS, DATASET_JSON, template)


def _predictor(derived, network):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    manager = PlansManager(derived)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.manual_initialization(network, manager, manager.get_configuration("3d_fullres"), None, DATASET_JSON,
                                    "test", None)
    return predictor


def test_whole_stack_prediction_is_one_recurrent_pass_and_equals_tiled_where_they_agree():
    """Through nnU-Net's predictor: (1) with stack windows a case of the median stack's length is one forward
    pass of the network over the whole case; (2) a case of the training patch's length gives the same logits tiled
    or as a stack when both windows hold it whole; (3) the per-slice front end (attention + Up block) gives a slice
    the same features whatever window holds it, so only the recurrence sees more context."""
    template = load_template("upattllstm_cpu")
    torch.manual_seed(0)
    logits = {}
    for mode, stack in (("patch", 8), ("stack", 8), ("stack", 20)):
        plans = {**STOCK_PLANS, "configurations": {"3d_fullres": {**STOCK_PLANS["configurations"]["3d_fullres"],
                                                                  "median_image_size_in_voxels": [stack, 32, 32]}}}
        derived = derive_upattllstm_plans(plans, DATASET_JSON, {**template, "inference_slices": mode})
        if not logits:
            network = build_network(derived, DATASET_JSON).eval()
        predictor = _predictor(derived, network)
        assert predictor.configuration_manager.patch_size == [8 if mode == "patch" else stack, 32, 32]
        volume = torch.randn(3, stack, 32, 32, generator=torch.Generator().manual_seed(stack))
        logits[mode, stack] = predictor.predict_sliding_window_return_logits(volume)
        if stack == 20:
            with torch.no_grad():
                whole = network(volume[None])[0]
            # one window: the Gaussian weights cancel, except near the borders where nnU-Net's float16 Gaussian
            # (value 10 at the centre, sigma = patch / 8) underflows the weighted logits
            centre = (slice(None), slice(6, 14), slice(10, 22), slice(10, 22))
            assert torch.allclose(logits[mode, stack].float()[centre], whole[centre], atol=5e-3)
    assert torch.equal(logits["patch", 8], logits["stack", 8])
    stack = torch.randn(3, 20, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        per_slice = stack.transpose(0, 1)  # [slices, channels, H, W]
        whole = network.front_end(per_slice[:, [0]], per_slice[:, [1, 2]])
        window = network.front_end(per_slice[6:14, [0]], per_slice[6:14, [1, 2]])
    assert torch.allclose(whole[6:14], window, atol=1e-5)


def test_derived_plans_build_the_network_nnunet_will_run():
    derived = derive_upattllstm_plans(STOCK_PLANS, DATASET_JSON, load_template("upattllstm"))
    configuration = derived["configurations"]["3d_fullres"]
    assert configuration["training_patch_size"] == [12, 96, 96]
    assert configuration["patch_size"] == [40, 96, 96]  # predicted over the median stack of 40 slices
    assert configuration["data_identifier"] == "nnUNetPlans_3d_fullres" and configuration["crops_per_image"] == 4
    assert derived["nnunet_ext"]["channel_roles"] == {"DWI": "DWI", "SWAN": "SWAN", "PHASE": "PHASE"}
    assert configuration["batch_dice"] is True and "batch_dice" not in STOCK_PLANS["configurations"]["3d_fullres"]
    network = build_network(derived, DATASET_JSON)
    assert type(network).__name__ == "UpAttLLSTM"
    assert count_parameters(network) == 266_848 - (64 * 64 - 24 * 24) * 32 - (8 * 8 - 3 * 3) * 32  # 96-pixel slices
    with torch.no_grad():
        assert network(torch.randn(1, 3, 2, 96, 96)).shape == (1, 2, 2, 96, 96)
    assert STOCK_PLANS["configurations"]["3d_fullres"]["patch_size"] == [40, 128, 128]  # source untouched
    with pytest.raises(ValueError, match="configuration '3d_lowres' not in plans"):
        derive_upattllstm_plans(STOCK_PLANS, DATASET_JSON, load_template("upattllstm"), configuration="3d_lowres")


# ---------------------------------------------------------------------------------------------- trainer parts

class _OneCase:
    """The two methods of nnU-Net's dataset the loader uses: one case, a clot in slices 2-4 only."""

    def __init__(self, clot_slices=slice(2, 5)):
        self.identifiers = ["case"]
        self.seg = np.zeros((1, 20, 16, 16), np.int16)
        self.seg[0, clot_slices, 6:9, 6:9] = 1
        self.data = np.random.default_rng(0).normal(size=(3, 20, 16, 16)).astype(np.float32)

    def load_case(self, identifier):
        return self.data, self.seg, None, {"class_locations": {1: np.argwhere(self.seg == 1)}}


def _loader(dataset):
    labels = LabelManager({"background": 0, "clot": 1}, regions_class_order=None)
    return ClotPairDataLoader(dataset, 2, (6, 16, 16), (6, 16, 16), labels, oversample_foreground_percent=0.5)


def test_pair_sampling_gives_one_crop_with_a_clot_and_one_without():
    np.random.seed(0)
    loader = _loader(_OneCase())
    for _ in range(30):
        target = loader.generate_train_batch()["target"]
        assert (target[0] == 1).sum() == 0 and (target[1] == 1).sum() > 0
    assert loader.clot_free_misses == 0


def test_four_crops_per_image_interleave_images_so_each_gives_crops_with_and_without_a_clot():
    """Table 4's 4 crops per batch element: with 2 images, 8 crops [a, b, a, b | a, b, a, b], the first half drawn
    clot-free, the second around a clot."""
    np.random.seed(0)
    dataset = _OneCase()
    dataset.identifiers = ["a", "b"]
    labels = LabelManager({"background": 0, "clot": 1}, regions_class_order=None)
    loader = ClotPairDataLoader(dataset, 8, (6, 16, 16), (6, 16, 16), labels, oversample_foreground_percent=0.5,
                                crops_per_image=4)
    for _ in range(10):
        indices = loader.get_indices()
        assert len(indices) == 8 and indices[:2] * 4 == list(indices)
    batch = loader.generate_train_batch()
    assert batch["target"].shape[0] == 8
    assert all((batch["target"][i] == 1).sum() == 0 for i in range(4))
    assert all((batch["target"][i] == 1).sum() > 0 for i in range(4, 8))
    with pytest.raises(ValueError, match="a batch of 6 crops cannot hold 4 crops per image"):
        ClotPairDataLoader(dataset, 6, (6, 16, 16), (6, 16, 16), labels, crops_per_image=4)


def test_pair_sampling_counts_crops_that_cannot_avoid_the_clot():
    np.random.seed(0)
    loader = _loader(_OneCase(clot_slices=slice(2, 19)))  # every 6-slice crop meets the clot
    loader.generate_train_batch()
    assert loader.clot_free_misses == 1


def test_bbox_foreground_test():
    locations = {1: np.array([[0, 5, 5, 5]])}
    assert bbox_holds_foreground([0, 0, 0], [6, 6, 6], locations)
    assert not bbox_holds_foreground([0, 0, 0], [5, 6, 6], locations)  # upper bound excluded
    assert not bbox_holds_foreground([0, 0, 0], [6, 6, 6], {1: np.zeros((0, 4))})


@pytest.mark.parametrize("probability", [0.0, 0.4, 1.0])
def test_flips_each_axis_with_its_probability(probability):
    torch.manual_seed(0)
    transform = AxisFlipTransform((0, 1, 2), probability)
    draws = np.array([[axis in transform.get_parameters()["axes"] for axis in range(3)] for _ in range(3000)])
    assert np.allclose(draws.mean(axis=0), probability, atol=0.03)


def test_trainer_names():
    assert issubclass(trainer_variant("nnUNetTrainerUpAttLLSTM"), nnUNetTrainerUpAttLLSTM)
    fine_tune = trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop_400epochs")
    assert issubclass(fine_tune, nnUNetTrainerUpAttLLSTMGradualDrop) and fine_tune.training_epochs == 400
    assert fine_tune.drop_probability == 0.5 and fine_tune.dropout_schedule == "paper"
    assert trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop_p08").drop_probability == 0.8
    with pytest.raises(ValueError, match="the UpAttLLSTM family takes no drop probability"):
        trainer_variant("nnUNetTrainerUpAttLLSTM_p05")
    with pytest.raises(ValueError, match="not a trainer variant name"):
        trainer_variant("nnUNetTrainerUpAttCLSTM")


def test_trainers_folder_lists_discoverable_clot_trainers(monkeypatch):
    """nnU-Net's own lookup finds each class of trainers/upattllstm_trainers.py under its variable name, with the
    stock constructor signature (nnUNetTrainer records its init arguments by name)."""
    import inspect
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunet_ext.paths import trainer_dir
    monkeypatch.setenv("nnUNet_extTrainer", trainer_dir())
    source = open(os.path.join(trainer_dir(), "upattllstm_trainers.py")).read()
    names = [line.split(" = ")[0] for line in source.splitlines() if " = trainer_variant(" in line]
    assert {"nnUNetTrainerUpAttLLSTM", "nnUNetTrainerUpAttLLSTMGradualDrop",
            "nnUNetTrainerUpAttLLSTMGradualDrop_400epochs", "nnUNetTrainerUpAttLLSTM_1epochs"} <= set(names)
    for name in names:
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name
        assert list(inspect.signature(cls.__init__).parameters) == \
            list(inspect.signature(nnUNetTrainer.__init__).parameters)


def test_augmentation_zeroes_the_background_again_after_noise():
    from nnunet_ext.training.upattllstm_trainer import clot_training_transforms
    torch.manual_seed(0)
    transforms = clot_training_transforms((0, 1, 2), use_mask_for_norm=[True, True, True], probability=1.0)
    image = torch.ones(3, 4, 8, 8)
    segmentation = torch.zeros(1, 4, 8, 8, dtype=torch.int16)
    segmentation[:, :, :2] = -1  # outside the nonzero mask
    image[:, :, :2] = 0
    out = transforms(image=image, segmentation=segmentation)
    noisy = out["image"] != 1
    background = torch.flip(segmentation, (1, 2, 3))[0] < 0  # flipped along all three axes (p = 1)
    assert torch.all(out["image"][:, background] == 0) and noisy[:, ~background].any()
    assert out["segmentation"].min() == 0  # the -1 outside the image became background
