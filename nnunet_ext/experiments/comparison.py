"""Whether one row of a table is better than another: both studies' rule, over runs."""
from typing import Mapping


def verdict(method: Mapping, baseline: Mapping) -> str:
    """'better', 'worse' or 'no clear difference' for one row's average; not judged from a single run."""
    if min(method["runs"], baseline["runs"]) < 2:
        return "not judged (fewer than 2 runs: no run-to-run spread)"
    difference = method["mean"] - baseline["mean"]
    if abs(difference) <= method["std_runs"] + baseline["std_runs"]:
        return "no clear difference"
    return "better" if difference > 0 else "worse"
