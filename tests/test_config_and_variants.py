"""Droppable channels by name, run settings, and trainer variant names."""
import inspect
import os

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.dropout.config import (ModalityDropoutConfig, epoch_seed,
                                       modality_dropout_config, resolve_droppable_channels)
from nnunet_ext.training.environment import TrainerEnvironment
from nnunet_ext.training.modality_dropout_trainer import nnUNetTrainerModalityDropout
from nnunet_ext.training.variants import parse_trainer_name, trainer_variant, variant_name

NAMES = ["DWI", "ADC", "B0"]
DATASET_JSON = {"channel_names": {"0": "DWI", "1": "ADC", "2": "B0"}, "droppable_channels": ["ADC"]}


@pytest.mark.parametrize("requested,expected", [(["ADC"], (1,)), (["B0", "DWI"], (2, 0)), ([" ADC "], (1,))])
def test_names_map_to_indices(requested, expected):
    assert resolve_droppable_channels(NAMES, requested) == expected


@pytest.mark.parametrize("requested,message", [
    (["ADC2"], "unknown modality 'ADC2'; dataset.json has DWI, ADC, B0"),
    (["ADC", "ADC"], "listed twice: ADC"),
    (["DWI", "ADC", "B0"], "every channel .* is droppable"),
    ([], "no droppable channel"),
    ([""], "no droppable channel"),
])
def test_bad_droppable_names_are_refused_with_the_name(requested, message):
    with pytest.raises(ValueError, match=message):
        resolve_droppable_channels(NAMES, requested)


def test_dataset_json_key_and_env_override():
    config = modality_dropout_config(DATASET_JSON, 0.5, "paper", 0.01)
    assert config.droppable_names == ("ADC",) and config.droppable_indices == (1,)
    config = modality_dropout_config(DATASET_JSON, 0.5, "paper", 0.01, ("B0",))
    assert config.droppable_names == ("B0",) and config.droppable_indices == (2,)


def test_no_choice_at_all_is_an_error_that_says_how_to_choose():
    with pytest.raises(ValueError, match="droppable_channels.*NNUNET_EXT_DROPPABLE_CHANNELS"):
        modality_dropout_config({"channel_names": DATASET_JSON["channel_names"]}, 0.5, "paper", 0.01)


@pytest.mark.parametrize("probability", [-0.01, 1.01, float("nan")])
def test_probability_outside_unit_interval_is_refused(probability):
    with pytest.raises(ValueError, match="drop probability must be in"):
        modality_dropout_config(DATASET_JSON, probability, "paper", 0.01)


def test_unknown_schedule_and_bad_seed_are_refused():
    with pytest.raises(ValueError, match="unknown dropout schedule 'linear'"):
        modality_dropout_config(DATASET_JSON, 0.5, "linear", 0.01)
    with pytest.raises(ValueError, match="NNUNET_EXT_SEED must be an integer, got 'x'"):
        TrainerEnvironment.from_env({"NNUNET_EXT_SEED": "x"})


def test_config_round_trips_through_json_dict():
    config = modality_dropout_config(DATASET_JSON, 0.2, "code2025", 0.01, seed=9)
    assert ModalityDropoutConfig.from_dict(config.to_dict()) == config
    assert config.seed == 9


def test_epoch_seed_is_deterministic_and_distinct_per_rank_and_epoch():
    seeds = {epoch_seed(1, rank, epoch) for rank in range(4) for epoch in range(50)}
    assert len(seeds) == 200
    assert epoch_seed(1, 0, 3) == epoch_seed(1, 0, 3)


@pytest.mark.parametrize("environ,message", [
    ({"NNUNET_EXT_SAVE_EVERY": "two"}, "NNUNET_EXT_SAVE_EVERY must be a positive integer, got 'two'"),
    ({"NNUNET_EXT_SAVE_EVERY": "-3"}, "must be a positive integer, got '-3'"),
    ({"NNUNET_EXT_FINAL_VALIDATION": "no"}, "NNUNET_EXT_FINAL_VALIDATION must be 0 or 1, got 'no'"),
    ({"NNUNET_EXT_RESUME_WITH_CURRENT_SETTINGS": "yes"}, "RESUME_WITH_CURRENT_SETTINGS must be 0 or 1, got 'yes'"),
    ({"NNUNET_EXT_SAVE_EVRY": "5"}, "unknown variable NNUNET_EXT_SAVE_EVRY: did you mean NNUNET_EXT_SAVE_EVERY\\? "
                                    "\\(our trainers read NNUNET_EXT_SAVE_EVERY, "),
    ({"NNUNET_EXT_ITERATIONS_PER_EPOCH": "16"}, "NNUNET_EXT_ITERATIONS_PER_EPOCH no longer sets the training "
                                               "iterations per epoch: spell it in the trainer name instead, e.g. "
                                               "nnUNetTrainerGradualDrop_p05_100epochs_16it \\(16 iterations\\), "
                                               "and unset the variable"),
    ({"NNUNET_EXT_ITERATION_PER_EPOCH": "5"}, "unknown variable NNUNET_EXT_ITERATION_PER_EPOCH: did you mean "
                                              "NNUNET_EXT_ITERATIONS_PER_EPOCH\\? \\(NNUNET_EXT_ITERATIONS_PER_EPOCH "
                                              "no longer sets the training iterations per epoch"),
    ({"NNUNET_EXT_COTRAINING_SIMILARITY": "mse"}, "NNUNET_EXT_COTRAINING_SIMILARITY no longer sets ModDrop\\+\\+'s "
                                                  "co-training similarity: spell it in the trainer name instead, "
                                                  "e.g. nnUNetTrainerModDropPlusPlus_p05_w05_mse \\(MSE\\)")])
def test_every_environment_variable_is_checked_with_its_name(environ, message):
    with pytest.raises(ValueError, match=message):
        TrainerEnvironment.from_env(environ)


def test_the_environment_is_read_in_one_place():
    assert TrainerEnvironment.from_env({}) == TrainerEnvironment(save_every=None, final_validation=True,
                                                                 resume_with_current_settings=False, seed=12345,
                                                                 droppable_channels=None)
    environment = TrainerEnvironment.from_env({
        "NNUNET_EXT_SAVE_EVERY": " 1 ", "NNUNET_EXT_FINAL_VALIDATION": "0",
        "NNUNET_EXT_RESUME_WITH_CURRENT_SETTINGS": "true", "NNUNET_EXT_SEED": "-7",
        "NNUNET_EXT_DROPPABLE_CHANNELS": "ADC, B0", "NNUNET_EXT_SLURM_DIR": "/tmp/x", "PATH": "/bin"})
    assert environment == TrainerEnvironment(save_every=1,
                                             final_validation=False, resume_with_current_settings=True, seed=-7,
                                             droppable_channels=("ADC", "B0"))


@pytest.mark.parametrize("name,family,schedule,probability,epochs", [
    ("nnUNetTrainerGradualDrop", "GradualDrop", "paper", 0.5, 1000),
    ("nnUNetTrainerGradualDrop_p02", "GradualDrop", "paper", 0.2, 1000),
    ("nnUNetTrainerGradualDrop_p08_400epochs", "GradualDrop", "paper", 0.8, 400),
    ("nnUNetTrainerGradualDropCode2025_p05", "GradualDropCode2025", "code2025", 0.5, 1000),
    ("nnUNetTrainerMultiUnet_p02_8epochs", "MultiUnet", "none", 0.2, 8),
    ("nnUNetTrainerNoDropout_100epochs", "NoDropout", None, None, 100),
    ("nnUNetTrainerModDropPlus_p08", "ModDropPlus", "none", 0.8, 1000),
    ("nnUNetTrainerModDropPlusPlus_p05_8epochs", "ModDropPlusPlus", "none", 0.5, 8),
])
def test_variant_names_spell_their_settings(name, family, schedule, probability, epochs):
    spec = parse_trainer_name(name)
    assert (spec.family, spec.schedule, spec.drop_probability, spec.epochs) == \
        (family, schedule, probability, epochs)
    cls = trainer_variant(name)
    assert cls.__name__ == name and issubclass(cls, nnUNetTrainer)
    assert cls.training_epochs == epochs
    if schedule is not None:
        assert issubclass(cls, nnUNetTrainerModalityDropout)
        assert (cls.dropout_schedule, cls.drop_probability) == (schedule, probability)


@pytest.mark.parametrize("name,weight,similarity", [
    ("nnUNetTrainerModDropPlusPlus_p05_8epochs", 0.5, "ssim"), ("nnUNetTrainerModDropPlusPlus_w03", 0.3, "ssim"),
    ("nnUNetTrainerModDropPlusPlus_p02_8epochs_w00_mse", 0.0, "mse"), ("nnUNetTrainerModDropPlusPlus_mse", 0.5, "mse"),
    ("nnUNetTrainerModDropPlusPlus_w10", 1.0, "ssim")])
def test_moddrop_plus_plus_names_spell_the_cotraining(name, weight, similarity):
    spec = parse_trainer_name(name)
    assert (spec.cotraining_weight, spec.cotraining_similarity) == (weight, similarity)
    cls = trainer_variant(name)
    assert (cls.cotraining_weight, cls.cotraining_similarity) == (weight, similarity)
    assert parse_trainer_name("nnUNetTrainerModDropPlus_p05").cotraining_weight is None


@pytest.mark.parametrize("name", ["nnUNetTrainerFoo", "nnUNetTrainerGradualDrop_p5", "nnUNetTrainerNoDropout_p05",
                                  "GradualDrop_p05", "nnUNetTrainerGradualDrop_0epochs",
                                  "nnUNetTrainerModDropPlus_p05_w03", "nnUNetTrainerGradualDrop_mse",
                                  "nnUNetTrainerModDropPlusPlus_w3", "nnUNetTrainerModDropPlusPlus_mse_w03",
                                  "nnUNetTrainerGradualDrop_p05_0it", "nnUNetTrainerNoDropout_3it_0valit",
                                  "nnUNetTrainerNoDropout_1valit_3it", "nnUNetTrainerNoDropout_3it_8epochs"])
def test_bad_variant_names_are_refused(name):
    with pytest.raises(ValueError, match=name):
        parse_trainer_name(name)


@pytest.mark.parametrize("name,epochs,iterations,val_iterations", [
    ("nnUNetTrainerGradualDrop_p05_8epochs_3it_1valit", 8, 3, 1),
    ("nnUNetTrainerNoDropout_16it", 1000, 16, None),
    ("nnUNetTrainerUpAttLLSTM_400epochs_16it_2valit", 400, 16, 2),
    ("nnUNetTrainerModDropPlusPlus_p02_8epochs_40it_w00_mse", 8, 40, None),
    ("nnUNetTrainerMultiUnet_p08_4valit", 1000, None, 4),
])
def test_variant_names_spell_the_iterations_per_epoch(name, epochs, iterations, val_iterations):
    spec = parse_trainer_name(name)
    assert (spec.epochs, spec.iterations_per_epoch, spec.val_iterations_per_epoch) == \
        (epochs, iterations, val_iterations)
    cls = trainer_variant(name)
    assert (cls.training_epochs, cls.training_iterations_per_epoch, cls.validation_iterations_per_epoch) == \
        (epochs, iterations, val_iterations)


def test_variant_name_composes_what_parse_reads():
    assert variant_name("GradualDrop", 0.5, 8, 3, 1) == "nnUNetTrainerGradualDrop_p05_8epochs_3it_1valit"
    assert variant_name("NoDropout", None, 400, 16, 2) == "nnUNetTrainerNoDropout_400epochs_16it_2valit"
    assert variant_name("NoDropout") == "nnUNetTrainerNoDropout"  # nnU-Net's budget: nothing to spell
    assert variant_name("MultiUnet", 1.0) == "nnUNetTrainerMultiUnet_p10"
    with pytest.raises(ValueError, match="drop probability 0.25 has no name: _pXY spells X.Y, one decimal"):
        variant_name("GradualDrop", 0.25)
    with pytest.raises(ValueError, match="the NoDropout family takes no drop probability"):
        variant_name("NoDropout", 0.5)
    with pytest.raises(ValueError, match="the number of iterations per epoch must be >= 1"):
        variant_name("NoDropout", None, 8, 0)


def test_trainers_folder_lists_discoverable_variants(monkeypatch):
    """nnU-Net's own lookup finds every class of trainers/, each named as its variable."""
    from nnunet_ext.paths import trainer_dir
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    monkeypatch.setenv("nnUNet_extTrainer", trainer_dir())
    names = []
    for module in ("modality_dropout_trainers.py", "moddrop_trainers.py"):
        source = open(os.path.join(trainer_dir(), module)).read()
        names += [line.split(" = ")[0] for line in source.splitlines() if " = trainer_variant(" in line]
    assert len(names) == 44 + 27 and len(set(names)) == len(names)
    for name in ("nnUNetTrainerGradualDrop", "nnUNetTrainerGradualDrop_p05", "nnUNetTrainerMultiUnet_p08_400epochs",
                 "nnUNetTrainerGradualDropCode2025_p02_8epochs", "nnUNetTrainerNoDropout_8epochs",
                 "nnUNetTrainerModDropPlus_p05", "nnUNetTrainerModDropPlusPlus_p02_400epochs"):
        assert name in names
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name
        # nnUNetTrainer records its init arguments by name: the signature must be the stock one
        assert list(inspect.signature(cls.__init__).parameters) == \
            list(inspect.signature(nnUNetTrainer.__init__).parameters)
    for name in names:
        parse_trainer_name(name)  # every listed name is a valid spelling
    # a name of the grammar that no module lists is built on demand; one outside it is not found
    found = recursive_find_trainer_class_by_name("nnUNetTrainerModDropPlusPlus_p05_8epochs_w03_mse")
    assert (found.cotraining_weight, found.cotraining_similarity, found.training_epochs) == (0.3, "mse", 8)
    assert found.__name__ == "nnUNetTrainerModDropPlusPlus_p05_8epochs_w03_mse"
    with pytest.raises(RuntimeError):
        recursive_find_trainer_class_by_name("nnUNetTrainerGradualDrop_p05_mse")
