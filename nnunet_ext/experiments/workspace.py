"""One nnU-Net workspace: its three folders, the environment the stock commands run with, and those commands.

Every driver of nnU-Net here (both experiment harnesses, the demo, the benchmarks, the test fixtures) plans,
trains and predicts through a `Workspace`, so that resuming, completion markers, locks and logging are written
once:
  plan_and_preprocess  skipped when the dataset's nnUNetPlans.json exists
  train                skipped when checkpoint_final.pth exists; continued with --c from checkpoint_latest.pth
                       (without -pretrained_weights, which nnU-Net refuses together with --c: the checkpoint holds
                       the weights); under a lock per model, so two processes never train into one folder
  predict              nnunet_ext_predict; skipped when the output's .complete marker exists, written only after
                       the command succeeded (nnunet_ext_predict has read every prediction back by then)
Each command is appended to <root>/commands.log and its output goes to <root>/logs/<log name>.log
(nnunet_ext.experiments.records.run_logged).
"""
import os
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence

from nnunet_ext.experiments.datasets import dataset_folder
from nnunet_ext.experiments.locks import run_lock
from nnunet_ext.experiments.records import append_command_log, run_logged
from nnunet_ext.paths import nnunet_environment, nnunet_folders

COMPLETE_MARKER = ".complete"
FINAL_CHECKPOINT = "checkpoint_final.pth"
LATEST_CHECKPOINT = "checkpoint_latest.pth"


@dataclass(frozen=True)
class TrainedModel:
    """What names one trained model in nnU-Net's results tree (and on nnUNetv2_train's command line)."""
    dataset_id: int
    dataset_name: str  # the folder name, e.g. Dataset531_ClotTrainAB
    trainer: str
    plans: str
    fold: int
    configuration: str = "3d_fullres"

    @property
    def folder_name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"


class Workspace:
    """<root>/nnUNet_raw, nnUNet_preprocessed, nnUNet_results, with the environment the stock commands need to find
    them and our trainers (`settings`: further variables for every command, e.g. the iteration budget; `unset`:
    variables of the calling shell that must not reach the commands; `on_output`: called with every line the
    commands print, e.g. to show progress)."""

    def __init__(self, root: str, settings: Optional[Mapping[str, str]] = None, unset: Sequence[str] = (),
                 on_output: Optional[Callable[[str], None]] = None):
        self.root = os.path.abspath(root)
        self.on_output = on_output
        self.paths = nnunet_folders(self.root)
        self.env = nnunet_environment(**self.paths, nnUNet_compile="false",
                                      **{name: str(value) for name, value in (settings or {}).items()})
        for variable in unset:
            self.env.pop(variable, None)
        os.makedirs(os.path.join(self.root, "logs"), exist_ok=True)

    # ---- commands and records ----------------------------------------------------------------------------
    def run(self, command: List[str], log_name: str, extra_env: Optional[Mapping[str, str]] = None) -> None:
        """`command` with the workspace's environment (+ `extra_env`), logged (see the module docstring)."""
        run_logged(command, self.root, log_name, self.env, extra_env, self.on_output)

    def note(self, text: str) -> None:
        """A line in commands.log for a step done in process (marked so), e.g. a dataset written by Python."""
        append_command_log(self.root, f"[in process] {text}")

    def lock(self, name: str):
        """<root>/locks/<name>.lock (nnunet_ext.experiments.locks): one process at a time does the step `name`."""
        return run_lock(os.path.join(self.root, "locks", f"{name}.lock"))

    # ---- datasets ----------------------------------------------------------------------------------------
    def raw_dataset(self, dataset_id: int) -> Optional[str]:
        """The raw folder Dataset<id>_* (None when it does not exist yet)."""
        return dataset_folder(self.paths["nnUNet_raw"], dataset_id)

    def preprocessed(self, raw: str) -> str:
        """The preprocessed folder of the raw dataset folder `raw`."""
        return os.path.join(self.paths["nnUNet_preprocessed"], os.path.basename(raw))

    def plan_and_preprocess(self, dataset_id: int, configuration: str = "3d_fullres", processes: int = 2,
                            verify: bool = False) -> None:
        """nnUNetv2_plan_and_preprocess for one configuration, unless the dataset has its nnUNetPlans.json."""
        raw = self.raw_dataset(dataset_id)
        if raw is None:
            raise FileNotFoundError(f"no Dataset{dataset_id:03d}_* in {self.paths['nnUNet_raw']}")
        if os.path.isfile(os.path.join(self.preprocessed(raw), "nnUNetPlans.json")):
            return
        command = ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", str(processes)]
        # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which must be >= 1
        self.run(command + (["--verify_dataset_integrity"] if verify else []), f"plan_{dataset_id}",
                 {"nnUNet_n_proc_DA": str(processes)})

    # ---- training ----------------------------------------------------------------------------------------
    def fold_folder(self, model: TrainedModel) -> str:
        return os.path.join(self.paths["nnUNet_results"], model.dataset_name, model.folder_name,
                            f"fold_{model.fold}")

    def is_trained(self, model: TrainedModel) -> bool:
        return os.path.isfile(os.path.join(self.fold_folder(model), FINAL_CHECKPOINT))

    @staticmethod
    def train_command(model: TrainedModel, device: str = "cpu", pretrained: Optional[str] = None) -> List[str]:
        """nnUNetv2_train for `model` (from the checkpoint file `pretrained` if given)."""
        command = ["nnUNetv2_train", str(model.dataset_id), model.configuration, str(model.fold), "-p", model.plans,
                   "-tr", model.trainer, "-device", device]
        return command + (["-pretrained_weights", pretrained] if pretrained else [])

    def train(self, model: TrainedModel, log_name: str, device: str = "cpu", pretrained: Optional[str] = None,
              extra_env: Optional[Mapping[str, str]] = None) -> str:
        """Train `model` unless it is trained (see the module docstring); returns its fold folder."""
        folder = self.fold_folder(model)
        if self.is_trained(model):
            return folder
        with self.lock(f"train_{model.dataset_id}_{model.folder_name}_fold{model.fold}"):
            if self.is_trained(model):  # finished by the process that held the lock
                return folder
            if os.path.isfile(os.path.join(folder, LATEST_CHECKPOINT)):
                command = self.train_command(model, device) + ["--c"]
            else:
                command = self.train_command(model, device, pretrained)
            self.run(command, log_name, extra_env)
        return folder

    # ---- prediction --------------------------------------------------------------------------------------
    @staticmethod
    def predict_command(model: TrainedModel, inputs: str, output: str, device: str = "cpu",
                        checkpoint: Optional[str] = None, options: Sequence[str] = ()) -> List[str]:
        """nnunet_ext_predict with `model` on `inputs`, without test-time mirroring, sequentially (worker processes
        cost seconds of start-up each on these small cases); `options` as --missing or --save_probabilities."""
        command = ["nnunet_ext_predict", "-i", inputs, "-o", output, "-d", str(model.dataset_id),
                   "-c", model.configuration, "-f", str(model.fold), "-p", model.plans, "-tr", model.trainer,
                   "-device", device]
        if checkpoint is not None:
            command += ["-chk", checkpoint]
        return command + ["--disable_tta", "-npp", "0", "-nps", "0", *options]

    @staticmethod
    def is_predicted(output: str) -> bool:
        return os.path.isfile(os.path.join(output, COMPLETE_MARKER))

    def predict(self, command: List[str], log_name: str, prepare: Optional[Callable[[], object]] = None) -> str:
        """Run a `predict_command` unless its output folder is complete (`prepare`, e.g. writing its inputs, first,
        under the same lock); returns the output folder."""
        output = command[command.index("-o") + 1]
        if self.is_predicted(output):
            return output
        with self.lock(log_name):  # a log name is unique to its output folder
            if not self.is_predicted(output):
                if prepare is not None:
                    prepare()
                self.run(command, log_name)
                open(os.path.join(output, COMPLETE_MARKER), "w").close()
        return output
