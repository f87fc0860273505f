"""What every results file of ours carries: the command, package versions, seed and time."""
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Dict, Optional

_PACKAGES = ("nnunet-ext", "nnunetv2", "torch", "dynamic_network_architectures", "numpy", "SimpleITK")


def package_versions() -> Dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def provenance(seed: Optional[int] = None, command: Optional[str] = None) -> Dict:
    return {
        "command": command if command is not None else " ".join(sys.argv),
        "versions": package_versions(),
        "seed": seed,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
