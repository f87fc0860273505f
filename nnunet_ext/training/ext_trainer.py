"""Common base of our trainers: epoch count by class attribute, CPU-budget knobs, a settings file.

Budget knobs (environment, read at start-up, positive integers) make small CPU runs possible with the
stock `nnUNetv2_train`, which has no option for them:
  NNUNET_EXT_ITERATIONS_PER_EPOCH      (nnU-Net default 250)
  NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH  (nnU-Net default 50)
  NNUNET_EXT_SAVE_EVERY                (checkpoint_latest every N epochs; nnU-Net default 50)
  NNUNET_EXT_FINAL_VALIDATION          (0: skip the validation nnUNetv2_train runs after training; default 1)
The last one is for harnesses that evaluate on their own test set: on a CPU nnU-Net's final validation
(mirroring, a pool of export processes) can cost as much as a short training.
A run continued with `-c` reuses the settings written when it started (`nnunet_ext_settings.json` in the
fold folder), so changing the environment between runs cannot change a schedule half-way.
"""
import json
import os
from os.path import isfile, join
from typing import Dict, Mapping, Optional

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.provenance import provenance

SETTINGS_FILE = "nnunet_ext_settings.json"
BUDGET_ENV = {
    "num_iterations_per_epoch": "NNUNET_EXT_ITERATIONS_PER_EPOCH",
    "num_val_iterations_per_epoch": "NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH",
    "save_every": "NNUNET_EXT_SAVE_EVERY",
}


def budget_from_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, int]:
    """The budget knobs that are set in the environment, validated."""
    environ = os.environ if environ is None else environ
    budget = {}
    for attribute, variable in BUDGET_ENV.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{variable} must be a positive integer, got {text!r}")
        budget[attribute] = value
    return budget


def final_validation_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether nnUNetv2_train's validation after training runs (NNUNET_EXT_FINAL_VALIDATION, default yes)."""
    environ = os.environ if environ is None else environ
    text = environ.get("NNUNET_EXT_FINAL_VALIDATION", "1").strip().lower()
    if text not in ("0", "1", "false", "true"):
        raise ValueError(f"NNUNET_EXT_FINAL_VALIDATION must be 0 or 1, got {text!r}")
    return text in ("1", "true")


class nnUNetTrainerExt(nnUNetTrainer):
    """nnUNetTrainer plus `training_epochs`, the budget knobs and a settings/provenance file."""

    training_epochs: int = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        budget = budget_from_env()  # validate before nnU-Net creates any folder
        self.run_final_validation = final_validation_from_env()
        continue_training = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.training_epochs
        for attribute, value in budget.items():
            setattr(self, attribute, value)
        # JSON round trip, so that it compares equal to what a -c run reads back from disk
        self.ext_settings = json.loads(json.dumps(self.collect_settings()))
        stored = self._stored_settings() if continue_training else None
        if stored is not None and stored != self.ext_settings:
            self.print_to_log_file("nnunet_ext: continuing with the settings this run started with "
                                   f"({SETTINGS_FILE}); the current environment asked for {self.ext_settings}")
        if stored is not None:
            self.ext_settings = stored
            self.restore_settings(stored)
        self.print_to_log_file(f"nnunet_ext settings: {self.ext_settings}")

    # Subclasses extend these two to carry their own settings through -c.
    def collect_settings(self) -> Dict:
        return {"trainer": self.__class__.__name__, "num_epochs": self.num_epochs,
                "num_iterations_per_epoch": self.num_iterations_per_epoch,
                "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                "save_every": self.save_every}

    def restore_settings(self, settings: Dict) -> None:
        for attribute in ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "save_every"):
            setattr(self, attribute, settings[attribute])

    def _stored_settings(self) -> Optional[Dict]:
        path = join(self.output_folder, SETTINGS_FILE)
        return load_json(path)["settings"] if isfile(path) else None

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.run_final_validation:
            self.print_to_log_file("nnunet_ext: final validation skipped (NNUNET_EXT_FINAL_VALIDATION=0)")
            return
        super().perform_actual_validation(save_probabilities)

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:
            seed = self.ext_settings.get("modality_dropout", {}).get("seed")
            save_json({"settings": self.ext_settings, "provenance": provenance(seed=seed)},
                      join(self.output_folder, SETTINGS_FILE), sort_keys=False)
