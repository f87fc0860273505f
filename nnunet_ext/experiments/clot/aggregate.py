"""Tables 5-7's numbers from evaluated runs: the paper's columns of one run, their mean ± std across runs, the
runs still missing, and the verdict between two rows (report.verdict: a difference only beyond the sum of the
run-to-run stds)."""
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from nnunet_ext.experiments.comparison import verdict

GROUPS = ("proximal", "distal", "all")
METRICS = ("fp_count", "fp_size_mm3", "fn_count", "fn_size_mm3", "dice", "detection")


def table_metrics(label_summary: Mapping[str, Mapping]) -> Dict[str, Dict[str, Optional[float]]]:
    """The paper's columns from `nnunet_ext.evaluation.evaluate.summarize(rows)[label]`, per group (proximal,
    distal, all; a group without cases gives None everywhere):
    FP/FN count = mean per case; FP/FN size = mean size of the FP components / missed clots pooled over the
    group's cases, in mm^3 (None when there is none); Dice = mean per case; detection = mean per-case detection
    rate (the share of patients whose clot is found, with one clot per case)."""
    metrics = {}
    for group in GROUPS:
        values = label_summary.get(group)
        if values is None:
            metrics[group] = {**{m: None for m in METRICS}, "cases": 0}
            continue
        pooled = values["pooled"]

        def size(key):
            mean = pooled[key]["mean"]
            return None if mean is None else mean * 1000.0  # ml -> mm^3
        metrics[group] = {"fp_count": values["fp"]["mean"], "fp_size_mm3": size("fp_size_ml"),
                          "fn_count": values["fn"]["mean"], "fn_size_mm3": size("fn_size_ml"),
                          "dice": values["dice"]["mean"], "detection": values["detection_rate"]["mean"],
                          "cases": values["cases"]}
    return metrics


def aggregate_runs(run_metrics: Sequence[Optional[Mapping]]) -> Dict[str, Dict]:
    """Per group and metric of `table_metrics`, across runs (a missing run is None): {"mean", "std_runs", "runs",
    "values"} (population std, as report._stats for Tables 2-3; mean and std over the runs where the metric has a
    value: a size without any FP is None); "cases" per group from the runs (the same test cases in every run)."""
    finished = [m for m in run_metrics if m is not None]
    aggregate = {}
    for group in GROUPS:
        aggregate[group] = {}
        for metric in METRICS:
            values = [None if m is None else m[group][metric] for m in run_metrics]
            present = [float(v) for v in values if v is not None]
            aggregate[group][metric] = {
                "mean": float(np.mean(present)) if present else None,
                "std_runs": float(np.std(present)) if present else None,
                "runs": len(present), "values": values}
        cases = sorted({m[group]["cases"] for m in finished})
        if len(cases) > 1:
            raise ValueError(f"the runs of one row were evaluated on different numbers of {group} cases: {cases}")
        aggregate[group]["cases"] = cases[0] if cases else None
    return aggregate


def missing_runs(run_results: Sequence[Optional[Mapping]]) -> List[int]:
    """Run numbers (1-based) without a result."""
    return [number for number, result in enumerate(run_results, start=1) if result is None]


def missing_text(run_results: Sequence[Optional[Mapping]]) -> str:
    """'' when every run finished; 'run 2 of 3 missing', 'runs 2, 3 of 3 missing'."""
    missing = missing_runs(run_results)
    if not missing:
        return ""
    return f"run{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {len(run_results)} missing"


# verdicts between rows: (metric, group, higher is better)
JUDGED = (("dice", "all", True), ("detection", "all", True), ("fp_count", "all", False))


def judge(method: Mapping, reference: Mapping, higher_is_better: bool) -> str:
    """report.verdict on one metric's aggregate ('not judged' without values in both rows)."""
    if method["mean"] is None or reference["mean"] is None:
        return "not judged (no value)"
    return verdict(method, reference) if higher_is_better else verdict(
        {**method, "mean": -method["mean"]}, {**reference, "mean": -reference["mean"]})


def read_reference_results(path: str) -> Dict[str, Dict]:
    """Row key -> metrics of a committed table JSON (e.g. benchmarks/results/clot_quick_table6.json: one run on
    the `easy` preset); {} when there is no such file."""
    if not path or not os.path.isfile(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    return {row["key"]: row["metrics"] for row in saved["rows"] if row.get("metrics")}
