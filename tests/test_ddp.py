"""Multi-process training (nnUNetv2_train -num_gpus N) on CPU: 2 processes, gloo backend, small networks.

What nnU-Net's DDP path needs from our trainers: dropout draws that differ between ranks and repeat when a run is
resumed (seeded per seed, rank and epoch), one writer of the settings file (rank 0), and networks that train
under DistributedDataParallel without find_unused_parameters (every parameter gets a gradient every step).
nnUNetTrainer moves a DDP run to cuda:<rank>; here the trainers are put back on the CPU after construction and
their network is wrapped as nnUNetTrainer.initialize would, with device_ids=None (CPU), so no preprocessed data
or GPU is needed.
"""
import json
import os
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

WORLD_SIZE = 2
STEPS = 3
DATASET_JSON = {"channel_names": {"0": "DWI", "1": "ADC", "2": "B0"}, "labels": {"background": 0, "lesion": 1},
                "numTraining": 4, "file_ending": ".nii.gz", "droppable_channels": ["ADC"]}
PATCH = [16, 16, 16]


def _tiny_plans() -> Dict:
    """A plans file as nnUNetv2_plan_and_preprocess writes one, for a 2-stage PlainConvUNet on 16^3 patches."""
    return {
        "dataset_name": "Dataset990_DDP", "plans_name": "nnUNetPlans_tiny",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": PATCH,
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": PATCH, "median_image_size_in_voxels": PATCH, "spacing": [1.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"] * 3, "use_mask_for_norm": [False] * 3,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                                "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]],
                                "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": False}},
    }


def _make_trainer(name: str):
    """The trainer nnUNetv2_train would build in this rank, on the CPU, its network wrapped in DDP."""
    from nnunet_ext.training.variants import trainer_variant
    trainer = trainer_variant(name)(plans={**_tiny_plans(), "continue_training": False}, configuration="3d_fullres",
                                    fold=0, dataset_json=DATASET_JSON, device=torch.device("cpu"))
    assert trainer.is_ddp and trainer.local_rank == dist.get_rank()  # nnU-Net's own rank bookkeeping
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None  # nnU-Net set cuda:<rank>
    network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 3, 2, True)
    trainer.network = DDP(network, device_ids=None)  # as nnUNetTrainer.initialize, CPU form; no unused parameters
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    return trainer


def _batch(trainer, step: int):
    """The same batch on every rank (so that only the rank's dropout stream differs)."""
    generator = torch.Generator().manual_seed(step)
    data = torch.randn(2, 3, *PATCH, generator=generator)
    target = (data[:, :1] > 1.0).float()
    targets = [torch.nn.functional.interpolate(target, size=[round(p * s) for p, s in zip(PATCH, scale)])
               for scale in trainer._get_deep_supervision_scales()]
    return {"data": data, "target": targets}


def _epoch_codes(trainer, epoch: int) -> List[List[float]]:
    """Run one epoch of STEPS train steps and return the modality codes the dynamic head was given."""
    from nnunet_ext.networks.dynamic_head import find_dynamic_head
    codes = []
    hook = find_dynamic_head(trainer.network).register_forward_pre_hook(
        lambda module, args: codes.append(module._stated_code.clone()))
    trainer.current_epoch = epoch
    trainer.on_train_epoch_start()
    for step in range(STEPS):
        loss = trainer.train_step(_batch(trainer, step))["loss"]
        assert float(loss) == float(loss)  # not NaN
    hook.remove()
    return torch.cat(codes).tolist()


def _parameters_agree_across_ranks(module: torch.nn.Module) -> bool:
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def _upattllstm_trains_two_steps() -> bool:
    """A small UpAttLLSTM (BatchNorm in its Up block, as nnU-Net converts to SyncBatchNorm on GPUs) in DDP."""
    from nnunet_ext.networks.clot_networks import UpAttLLSTM
    torch.manual_seed(0)  # same initial weights on both ranks, as DDP broadcasts anyway
    network = UpAttLLSTM(3, 2, dwi_channel=0, swan_channel=1, phase_channel=2, slice_shape=[16, 16],
                         attention_dim=8, dwi_patch=8, susceptibility_patch=4, mlp_ratio=2.0, up_features=8,
                         skip_features=4, conv_channels=2, logic_channels=6, pool_scales=3)
    model = DDP(network, device_ids=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(dist.get_rank())  # different data per rank: gradients must be reduced
    for _ in range(2):
        x = torch.randn(2, 3, 4, 16, 16, generator=generator)
        target = (x[:, :1] > 1.0).long().squeeze(1)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        optimizer.step()
    return _parameters_agree_across_ranks(model)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    # each rank writes into its own results root, so the test can tell which rank wrote what
    os.environ.update({"nnUNet_results": os.path.join(out_dir, f"results_rank{rank}"),
                       "nnUNet_preprocessed": os.path.join(out_dir, "preprocessed"), "nnUNet_compile": "false",
                       "NNUNET_EXT_SEED": "12345"})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from batchgenerators.utilities.file_and_folder_operations import maybe_mkdir_p
        # nnUNetTrainer.on_train_start loads data and builds loaders; only what follows it is ours
        nnUNetTrainer.on_train_start = lambda self: maybe_mkdir_p(self.output_folder)

        trainer = _make_trainer("nnUNetTrainerModDropPlus_p05_8epochs")
        trainer.on_train_start()
        first = {0: _epoch_codes(trainer, 0), 1: _epoch_codes(trainer, 1)}
        synced_plus = _parameters_agree_across_ranks(trainer.network)
        resumed = _make_trainer("nnUNetTrainerModDropPlus_p05_8epochs")  # a -c run starting at epoch 1
        resumed_codes = _epoch_codes(resumed, 1)

        plus_plus = _make_trainer("nnUNetTrainerModDropPlusPlus_p05_8epochs")
        _epoch_codes(plus_plus, 0)
        synced_plus_plus = _parameters_agree_across_ranks(plus_plus.network)

        report = {"rank": rank, "codes": first, "resumed_codes": resumed_codes, "synced_plus": synced_plus,
                  "synced_plus_plus": synced_plus_plus, "synced_upattllstm": _upattllstm_trains_two_steps(),
                  "output_folder": trainer.output_folder}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(report, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_reports(tmp_path_factory) -> List[Dict]:
    out_dir = str(tmp_path_factory.mktemp("ddp"))
    mp.spawn(_worker, args=(os.path.join(out_dir, "init"), out_dir), nprocs=WORLD_SIZE, join=True)
    return [json.load(open(os.path.join(out_dir, f"rank{rank}.json"))) for rank in range(WORLD_SIZE)]


def test_dropout_draws_differ_between_ranks(ddp_reports):
    rank0, rank1 = ddp_reports
    adc = 1
    for epoch in ("0", "1"):
        assert len(rank0["codes"][epoch]) == STEPS * 2
        assert rank0["codes"][epoch] != rank1["codes"][epoch]
        # only ADC is ever dropped, and it is dropped somewhere on some rank
        assert all(code[0] == code[2] == 1 for report in ddp_reports for code in report["codes"][epoch])
    assert any(code[adc] == 0 for report in ddp_reports for epoch in ("0", "1") for code in report["codes"][epoch])


def test_a_resumed_run_repeats_each_ranks_draws(ddp_reports):
    for report in ddp_reports:
        assert report["resumed_codes"] == report["codes"]["1"]
        assert report["codes"]["0"] != report["codes"]["1"]  # epochs draw differently: the match is not trivial


def test_only_rank_zero_writes_the_settings_file(ddp_reports):
    written = [os.path.isfile(os.path.join(report["output_folder"], "nnunet_ext_settings.json"))
               for report in ddp_reports]
    assert written == [True, False]
    assert all(os.path.isdir(report["output_folder"]) for report in ddp_reports)


def test_networks_train_in_ddp_without_find_unused_parameters(ddp_reports):
    # DDP raises on the second step if a parameter got no gradient in the first; equal weights after the
    # steps show the gradients were reduced across ranks
    for report in ddp_reports:
        assert report["synced_plus"] and report["synced_plus_plus"] and report["synced_upattllstm"]
