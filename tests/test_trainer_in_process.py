"""The trainer's hooks in process: dropout reaches the network in train_step only, never in validation."""
import json
import os
import time

import pytest
import torch

from nnunet_ext.training.variants import trainer_variant


@pytest.fixture
def trainer_factory(nnunet_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", nnunet_workspace.paths["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("NNUNET_EXT_DROPPABLE_CHANNELS", raising=False)
    folder = os.path.join(nnunet_workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke")
    plans = json.load(open(os.path.join(folder, "nnUNetPlans_CPU.json")))
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))

    def make(trainer_class):
        return trainer_class(plans={**plans, "continue_training": False}, configuration="3d_fullres", fold=0,
                             dataset_json=dataset_json, device=torch.device("cpu"))
    return make


def _capture_network_input(trainer):
    seen = []
    trainer.network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def _batch(trainer, seed=0):
    patch = trainer.configuration_manager.patch_size
    generator = torch.Generator().manual_seed(seed)
    data = torch.rand(2, 3, *patch, generator=generator) + 1.0
    targets = [torch.zeros(2, 1, *[max(1, round(p * s)) for p, s in zip(patch, scale)])
               for scale in trainer._get_deep_supervision_scales()]
    return data, targets


def test_train_step_scales_only_adc_and_validation_step_is_untouched(trainer_factory):
    trainer = trainer_factory(trainer_variant("nnUNetTrainerGradualDrop_p10_8epochs"))  # ADC always dropped
    trainer.initialize()
    trainer.current_epoch = 4  # third quarter of 8 epochs: f = 0.25
    trainer.on_train_epoch_start()
    seen = _capture_network_input(trainer)
    data, targets = _batch(trainer)
    trainer.train_step({"data": data.clone(), "target": targets})
    trained_on = seen[-1]
    assert torch.equal(trained_on[:, 0], data[:, 0]) and torch.equal(trained_on[:, 2], data[:, 2])
    for sample in range(2):
        ratio = trained_on[sample, 1] / data[sample, 1]
        assert abs(float(ratio.mean()) - 0.25) < 0.06 and float(ratio.std()) < 1e-5

    trainer.validation_step({"data": data.clone(), "target": targets})
    assert torch.equal(seen[-1], data)


def test_same_seed_same_drops_per_epoch(trainer_factory):
    """Draws depend on (seed, rank, epoch) only, so a -c run repeats them exactly."""
    inputs = []
    for _ in range(2):
        trainer = trainer_factory(trainer_variant("nnUNetTrainerMultiUnet_p05_8epochs"))
        trainer.initialize()
        trainer.current_epoch = 6
        trainer.on_train_epoch_start()
        seen = _capture_network_input(trainer)
        data, targets = _batch(trainer)
        for _ in range(3):
            trainer.train_step({"data": data.clone(), "target": targets})
        inputs.append(torch.stack(seen))
    assert torch.equal(inputs[0], inputs[1])


def test_bad_probability_stops_the_trainer_before_any_folder_is_written(trainer_factory, tmp_path):
    bad = type("nnUNetTrainerBadProbability", (trainer_variant("nnUNetTrainerGradualDrop"),),
               {"drop_probability": 1.5})
    with pytest.raises(ValueError, match="drop probability must be in \\[0, 1\\], got 1.5"):
        trainer_factory(bad)
    assert not (tmp_path / "results").exists()


def test_a_fresh_start_over_another_training_s_settings_is_refused(trainer_factory, tmp_path, monkeypatch):
    """Without --c, a run with other settings would leave the folder with the old run's checkpoints beside the new
    run's settings until it saves its own; the same settings are a restart and are allowed."""
    trainer_class = trainer_variant("nnUNetTrainerNoDropout_8epochs_3it")
    monkeypatch.setenv("NNUNET_EXT_SAVE_EVERY", "3")
    first = trainer_factory(trainer_class)
    first.write_settings_file()
    trainer_factory(trainer_class).refuse_to_mix_trainings()  # the same settings: a restart
    monkeypatch.setenv("NNUNET_EXT_SAVE_EVERY", "4")
    time.sleep(1.1)  # nnU-Net names its logs by the second
    files = sorted(os.listdir(first.output_folder))
    second = trainer_factory(trainer_class)  # constructing is allowed: nnUNetv2_train --val trains nothing
    assert len(os.listdir(first.output_folder)) == len(files) + 1  # its log
    with pytest.raises(ValueError, match="holds a training with other settings than this one \\(there vs now: "
                                         "save_every: 3 vs 4\\); starting afresh would mix"):
        second.on_train_start()  # what nnUNetv2_train calls first when it trains
    assert sorted(os.listdir(first.output_folder)) == files  # nothing left of the refused run
    monkeypatch.setenv("NNUNET_EXT_RESUME_WITH_CURRENT_SETTINGS", "1")
    trainer_factory(trainer_class).refuse_to_mix_trainings()
