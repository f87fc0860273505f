"""Common base of our trainers: epochs and iterations per epoch by class attribute, a settings file.

The epochs and the (validation) iterations per epoch define the model, so the trainer's name spells them
(training/variants.py sets the class attributes); the checkpoint interval and the switch for nnUNetv2_train's
final validation are operational and come from the environment (training/environment.py lists every variable).
Skipping the final validation is for harnesses that evaluate on their own test set: on a CPU nnU-Net's final
validation (mirroring, a pool of export processes) can cost as much as a short training.
A run continued with `--c` reuses the settings it started with, so changing the environment between runs
cannot change the checkpoint interval half-way. They are stored twice: in `nnunet_ext_settings.json` in the fold folder
(with the provenance, for people) and in every checkpoint (checkpoint["init_args"]["nnunet_ext_settings"]),
which travels with the weights. On `--c` the checkpoint's settings win; the run stops with a message when they
cannot be trusted: the checkpoint carries none and the settings file is gone, or the file disagrees with it.
NNUNET_EXT_RESUME_WITH_CURRENT_SETTINGS=1 continues anyway, with the current environment's settings.
"""
import json
import os
from os.path import isfile, join
from typing import Dict, Optional, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.provenance import provenance
from nnunet_ext.training.cpu_threads import cpu_threads
from nnunet_ext.training.environment import RESUME_WITH_CURRENT_SETTINGS, TrainerEnvironment
from nnunet_ext.training.settings_file import (CHECKPOINT_KEY, SETTINGS_FILE, read_settings_file,
                                              settings_differences)

# the checkpoint nnUNetv2_train --c loads: the first of these that exists (run_training.maybe_load_checkpoint)
RESUME_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def resume_settings(current: Dict, from_file: Optional[Dict], from_checkpoint: Optional[Dict], settings_path: str,
                    checkpoint_path: Optional[str], override: bool = False) -> Tuple[Dict, Optional[str]]:
    """(settings a --c run continues with, a line for the log or None).

    current: what the environment asks for now; from_file / from_checkpoint: what the settings file and the
    checkpoint nnU-Net will load hold (None: absent); checkpoint_path None: there is no checkpoint (nnU-Net
    then starts afresh). Raises ValueError when the settings the weights were trained with are unknown or
    contradicted, unless `override` (then the current settings are used)."""
    if override:
        return current, (f"nnunet_ext: {RESUME_WITH_CURRENT_SETTINGS}=1: continuing with the current "
                         f"environment's settings, whatever the checkpoint or {SETTINGS_FILE} held")
    if checkpoint_path is None or (from_checkpoint is None and from_file is not None):
        # nothing to continue from, or a checkpoint written before checkpoints carried settings
        chosen = from_file if from_file is not None else current
    elif from_checkpoint is None:
        raise ValueError(f"cannot continue from {checkpoint_path}: it carries no nnunet_ext settings and "
                         f"{settings_path} is missing, so the settings it was trained with are unknown (the current "
                         f"environment asks for {current}). Restore {SETTINGS_FILE}, or set "
                         f"{RESUME_WITH_CURRENT_SETTINGS}=1 "
                         f"to continue with the current settings")
    elif from_file is not None and from_file != from_checkpoint:
        raise ValueError(f"{settings_path} disagrees with the settings stored in {checkpoint_path} (file vs "
                         f"checkpoint: {'; '.join(settings_differences(from_file, from_checkpoint))}). Delete the "
                         f"file to continue with the checkpoint's settings, or set {RESUME_WITH_CURRENT_SETTINGS}=1 to "
                         f"continue with the current environment's")
    else:
        chosen = from_checkpoint
    if chosen != current:
        return chosen, (f"nnunet_ext: continuing with the settings this run started with (from "
                        f"{'the checkpoint' if chosen is from_checkpoint else SETTINGS_FILE}); the current "
                        f"environment asked for {current}")
    return chosen, None


def check_fresh_start(current: Dict, stored: Dict, settings_path: str, override: bool = False) -> None:
    """A fresh training (no --c) into a fold folder that holds another training's settings file: refused when the
    settings differ, because until the new run has saved its own checkpoints the folder would hold the old run's
    weights beside the new run's settings. The same settings: a restart, allowed."""
    if stored != current and not override:
        raise ValueError(f"{os.path.dirname(settings_path)} holds a training with other settings than this one "
                         f"(there vs now: {'; '.join(settings_differences(stored, current))}); starting afresh would "
                         f"mix the two in one folder. Continue that training with --c, delete the folder to replace "
                         f"it, or set {RESUME_WITH_CURRENT_SETTINGS}=1 to start over it anyway")


def checkpoint_settings(path: str) -> Optional[Dict]:
    """The nnunet_ext settings a checkpoint carries (None for one written without them)."""
    # mmap: only the small settings entry is needed, not the weights
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    init_args = checkpoint.get("init_args") if isinstance(checkpoint, dict) else None
    return init_args.get(CHECKPOINT_KEY) if isinstance(init_args, dict) else None


class nnUNetTrainerExt(nnUNetTrainer):
    """nnUNetTrainer plus `training_epochs`, the iterations per epoch, the environment's knobs and a
    settings/provenance file."""

    training_epochs: int = 1000
    training_iterations_per_epoch: Optional[int] = None     # None: nnU-Net's
    validation_iterations_per_epoch: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        self.ext_environment = TrainerEnvironment.from_env()  # validated before nnU-Net creates any folder
        self.run_final_validation = self.ext_environment.final_validation
        self.resume_override = self.ext_environment.resume_with_current_settings
        self.resolve_settings(dataset_json, self.ext_environment)
        threads, reasons = cpu_threads()
        continue_training = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.device.type == "cpu":
            # nnUNetv2_train has just set one thread per core of the machine (cpu_threads.py says why not)
            torch.set_num_threads(threads)
            self.print_to_log_file(f"CPU threads: {threads} (limits: {reasons})")
        self.num_epochs = self.training_epochs
        if self.training_iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.training_iterations_per_epoch
        if self.validation_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.validation_iterations_per_epoch
        if self.ext_environment.save_every is not None:
            self.save_every = self.ext_environment.save_every
        # JSON round trip, so that it compares equal to what a -c run reads back from disk
        self.ext_settings = json.loads(json.dumps(self.collect_settings()))
        if continue_training:
            settings_path = join(self.output_folder, SETTINGS_FILE)
            checkpoint = next((join(self.output_folder, name) for name in RESUME_CHECKPOINTS
                               if isfile(join(self.output_folder, name))), None)
            chosen, note = resume_settings(
                self.ext_settings, read_settings_file(settings_path) if isfile(settings_path) else None,
                checkpoint_settings(checkpoint) if checkpoint else None, settings_path, checkpoint,
                self.resume_override)
            if note:
                self.print_to_log_file(note)
            if chosen != self.ext_settings:
                self.ext_settings = chosen
                self.restore_settings(chosen)
        self.print_to_log_file(f"nnunet_ext settings: {self.ext_settings}")

    def resolve_settings(self, dataset_json: dict, environment: TrainerEnvironment) -> None:
        """Subclasses resolve and check their own settings here: it runs before nnU-Net's constructor, so a bad
        value stops the run before any results folder exists."""

    # Subclasses extend these two to carry their own settings through -c.
    def collect_settings(self) -> Dict:
        return {"trainer": self.__class__.__name__, "num_epochs": self.num_epochs,
                "num_iterations_per_epoch": self.num_iterations_per_epoch,
                "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                "save_every": self.save_every}

    def restore_settings(self, settings: Dict) -> None:
        for attribute in ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "save_every"):
            setattr(self, attribute, settings[attribute])

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net builds the checkpoint inside save_checkpoint with no hook to add an entry; it stores
        # my_init_kwargs as checkpoint["init_args"] and reads back only its "configuration", so the settings ride
        # there (no second load and save of every checkpoint)
        self.my_init_kwargs[CHECKPOINT_KEY] = self.ext_settings
        # written beside and renamed: a job preempted or killed while saving keeps the previous whole checkpoint
        # for --c (torch.save straight to the target leaves a truncated file behind)
        partial = filename + ".partial"
        super().save_checkpoint(partial)
        if os.path.isfile(partial):  # rank 0 with checkpointing enabled
            os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # --c has settled the settings in __init__; this catches the other loads (--val, --val_best, a checkpoint
        # given by path) whose checkpoint carries other settings than this trainer's
        if isinstance(filename_or_checkpoint, str):
            stored = checkpoint_settings(filename_or_checkpoint)
            if stored is not None and stored != self.ext_settings and not self.resume_override:
                if self.was_initialized:
                    raise ValueError(f"{filename_or_checkpoint} was trained with other settings than this trainer "
                                     f"uses ({'; '.join(settings_differences(stored, self.ext_settings))}); set "
                                     f"{RESUME_WITH_CURRENT_SETTINGS}=1 to load it anyway")
                self.print_to_log_file(f"nnunet_ext: using the settings stored in {filename_or_checkpoint}")
                self.ext_settings = stored
                self.restore_settings(stored)
        super().load_checkpoint(filename_or_checkpoint)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.run_final_validation:
            self.print_to_log_file("nnunet_ext: final validation skipped (NNUNET_EXT_FINAL_VALIDATION=0)")
            return
        super().perform_actual_validation(save_probabilities)

    def on_train_start(self):
        self.refuse_to_mix_trainings()  # before nnU-Net writes plans, dataset.json and the first checkpoints
        super().on_train_start()
        if self.local_rank == 0:
            self.write_settings_file()

    def refuse_to_mix_trainings(self) -> None:
        """A training about to start (not `--val`, which trains nothing) in a fold folder whose settings file holds
        other settings: see check_fresh_start. A `--c` run has settled its settings with the file in __init__."""
        settings_path = join(self.output_folder, SETTINGS_FILE)
        if self.resume_override or not isfile(settings_path):
            return
        try:
            check_fresh_start(self.ext_settings, read_settings_file(settings_path), settings_path)
        except ValueError:
            if self.local_rank == 0 and isfile(self.log_file):
                os.remove(self.log_file)  # this run's log: the folder stays as the other training left it
            raise

    def write_settings_file(self) -> None:
        seed = self.ext_settings.get("modality_dropout", {}).get("seed")
        save_json({"settings": self.ext_settings, "provenance": provenance(seed=seed)},
                  join(self.output_folder, SETTINGS_FILE), sort_keys=False)
