"""Where our trainers live, and the environment the stock nnU-Net commands need to find them."""
import importlib.util
import os
from typing import Dict, Mapping, Optional

EXT_TRAINER_VAR = "nnUNet_extTrainer"


def trainer_dir() -> str:
    """The installed `trainers/` folder (the repository's own folder for an editable install or a source checkout).
    Located, not imported: the trainers import this library, never the other way round."""
    spec = importlib.util.find_spec("nnunet_ext_trainers")
    if spec is not None and spec.submodule_search_locations:
        return os.path.abspath(list(spec.submodule_search_locations)[0])
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainers")
    if os.path.isfile(os.path.join(checkout, "__init__.py")):
        return checkout
    raise RuntimeError(f"no nnunet_ext_trainers package installed and no trainers/ folder at {checkout}; "
                       "install the repository (pip install -e .)")


def with_trainer_dir(value: Optional[str]) -> str:
    """`value` of nnUNet_extTrainer with our folder added once (other folders a user has listed are kept)."""
    folders = [f for f in (value or "").split(os.pathsep) if f]
    ours = trainer_dir()
    return os.pathsep.join(folders if ours in folders else folders + [ours])


NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_folders(root: str) -> Dict[str, str]:
    """nnU-Net's three folder variables for a workspace rooted at `root` (<root>/nnUNet_raw, ...)."""
    return {name: os.path.join(root, name) for name in NNUNET_FOLDERS}


def nnunet_environment(base: Optional[Mapping[str, str]] = None, **nnunet_paths: str) -> Dict[str, str]:
    """A copy of `base` (default os.environ) in which nnUNet_v2 commands find our trainers, plus any
    nnUNet_raw / nnUNet_preprocessed / nnUNet_results given as keywords."""
    env = dict(os.environ if base is None else base)
    env[EXT_TRAINER_VAR] = with_trainer_dir(env.get(EXT_TRAINER_VAR))
    env.update({k: str(v) for k, v in nnunet_paths.items()})
    return env
