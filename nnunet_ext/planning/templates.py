"""Plan size templates (`nnunet_ext/planning/templates/<name>.json`)."""
import json
import os
from typing import Dict, List

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def available_templates() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(TEMPLATE_DIR) if f.endswith(".json"))


def load_template(name: str) -> Dict:
    path = os.path.join(TEMPLATE_DIR, f"{name}.json")
    if not os.path.isfile(path):
        raise ValueError(f"unknown plans template {name!r}; available: {', '.join(available_templates())}")
    with open(path) as f:
        return json.load(f)
