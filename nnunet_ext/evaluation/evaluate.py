"""Evaluate an nnU-Net prediction folder against reference labels: per-case rows, per-center summaries, files.

Files pair by name (nnU-Net: `CASE.nii.gz` in both folders); every reference case needs a prediction. Each
pair must be whole files (a truncated .nii.gz is an error, not a partly empty mask), share shape, spacing,
origin and direction, hold no NaN or Inf (checked on the stored voxels: SimpleITK's NIfTI reader would turn
them into 0), and contain only background (0) and the evaluated labels: anything else (a 7 in a binary task,
a 0.5 from a probability map) is an error naming the case and the values, because silently treating it as
foreground or background would change the scores.
Means and standard deviations are over cases (population std, as `folders.summarize_by_center`); metrics that
are undefined for a case (NaN, see `lesion_metrics`) are left out of that metric's mean and count.
"""
import csv
import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_ext.data.nifti import ImageFileError, geometry_mismatch, read_image_checked
from nnunet_ext.data.staging import write_files_together
from nnunet_ext.evaluation.lesion_metrics import SCALAR_METRICS, LesionMatching, case_metrics

SIZE_METRICS = ("fp_sizes_ml", "fn_sizes_ml")
CSV_COLUMNS = ("case", "center", "label") + SCALAR_METRICS + SIZE_METRICS


@dataclass(frozen=True)
class EvaluationSettings:
    labels: Tuple[int, ...] = (1,)
    matching: LesionMatching = field(default_factory=LesionMatching)
    file_ending: str = ".nii.gz"

    def __post_init__(self):
        if not self.labels or any(int(v) != v or v <= 0 for v in self.labels) or len(set(self.labels)) != len(
                self.labels):
            raise ValueError(f"labels to evaluate must be distinct positive integers, got {list(self.labels)}")


def find_cases(prediction_folder: str, reference_folder: str, file_ending: str = ".nii.gz") -> List[str]:
    """Case names of the reference folder, all of which must have a prediction."""
    for folder, what in ((prediction_folder, "prediction"), (reference_folder, "reference")):
        if not os.path.isdir(folder):
            raise ValueError(f"{what} folder {folder} does not exist")
    references = sorted(f[:-len(file_ending)] for f in os.listdir(reference_folder) if f.endswith(file_ending))
    if not references:
        raise ValueError(f"no *{file_ending} reference labels in {reference_folder}")
    missing = [c for c in references if not os.path.isfile(os.path.join(prediction_folder, c + file_ending))]
    if missing:
        shown = ", ".join(c + file_ending for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"{len(missing)} of {len(references)} prediction(s) missing in {prediction_folder}: {shown}")
    return references


def unexpected_values(array: np.ndarray, allowed: Sequence[int]) -> List:
    """Values in a label array outside `allowed` (NaN included), up to a few, for an error message."""
    if array.dtype.kind == "f" and np.isnan(array).any():
        return [float("nan")]
    low, high = array.min(), array.max()
    if array.dtype.kind in "iub" and low >= 0 and set(range(int(high) + 1)) <= set(allowed):
        return []  # the common case (0/1 masks) without a full histogram
    if array.dtype.kind in "iub" and low >= 0 and high < 2 ** 16:
        present = np.flatnonzero(np.bincount(array.ravel().astype(np.int64)))
    else:
        present = np.unique(array)
    return [v.item() for v in present if v not in allowed][:5]


def read_label_image(case: str, which: str, path: str) -> sitk.Image:
    """A label image read whole and checked finite (NaN in a NIfTI file too); ValueError naming case and file."""
    try:
        return read_image_checked(path)
    except ImageFileError as error:
        raise ValueError(f"{case}: {which} {error}") from None


def evaluate_case(case: str, prediction_path: str, reference_path: str,
                  settings: EvaluationSettings) -> List[Dict]:
    """Metrics of one case, one row per evaluated label; raises ValueError naming the case on bad input."""
    reference = read_label_image(case, "reference", reference_path)
    prediction = read_label_image(case, "prediction", prediction_path)
    mismatch = geometry_mismatch(reference, prediction)
    if mismatch:
        raise ValueError(f"{case}: prediction {mismatch} of the reference")
    allowed = (0,) + tuple(settings.labels)
    arrays = {"reference": sitk.GetArrayViewFromImage(reference),
              "prediction": sitk.GetArrayViewFromImage(prediction)}
    for which, array in arrays.items():
        if array.ndim != 3:
            raise ValueError(f"{case}: {which} is {array.ndim}D; expected a 3D label image")
        bad = unexpected_values(array, allowed)
        if bad:
            raise ValueError(f"{case}: {which} contains label value(s) {bad}; expected only {list(allowed)}")
    spacing_zyx = tuple(reversed(reference.GetSpacing()))
    rows = []
    for label in settings.labels:
        metrics = case_metrics(arrays["prediction"] == label, arrays["reference"] == label, spacing_zyx,
                               settings.matching)
        rows.append({"case": case, "label": label, **metrics})
    return rows


def _evaluate_job(job: Tuple[str, str, str, EvaluationSettings]) -> List[Dict]:
    return evaluate_case(*job)


def evaluate_folders(prediction_folder: str, reference_folder: str, settings: EvaluationSettings = EvaluationSettings(),
                     case_centers: Optional[Mapping[str, str]] = None, num_processes: int = 1,
                     progress: Optional[Callable[[Iterable, int], Iterable]] = None) -> List[Dict]:
    """Rows of metrics (one per case and label), with "center" filled from `case_centers` (or "all").

    `progress(iterable, total)` may wrap the per-case results (e.g. a tqdm bar)."""
    cases = find_cases(prediction_folder, reference_folder, settings.file_ending)
    if case_centers is not None:
        unmapped = [c for c in cases if c not in case_centers]
        if unmapped:
            raise ValueError(f"{len(unmapped)} case(s) not in the case->center map: {', '.join(unmapped[:10])}")
        if "all" in (case_centers[c] for c in cases):
            raise ValueError("center name 'all' is reserved for the overall summary; rename it in the map")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    jobs = [(c, os.path.join(prediction_folder, c + settings.file_ending),
             os.path.join(reference_folder, c + settings.file_ending), settings) for c in cases]
    wrap = progress or (lambda iterable, total: iterable)
    if num_processes == 1 or len(jobs) == 1:
        results = list(wrap(map(_evaluate_job, jobs), len(jobs)))
    else:
        with ProcessPoolExecutor(min(num_processes, len(jobs))) as pool:
            results = list(wrap(pool.map(_evaluate_job, jobs, chunksize=4), len(jobs)))
    rows = []
    for case_rows in results:
        for row in case_rows:
            center = case_centers[row["case"]] if case_centers is not None else "all"
            rows.append({"case": row["case"], "center": center, **{k: v for k, v in row.items() if k != "case"}})
    return rows


def _mean_std(values: Sequence[float]) -> Dict:
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(defined)), "std": float(np.std(defined)), "n": len(defined)}


def _pooled(rows: Sequence[Dict]) -> Dict:
    """Lesion-level totals over the cases of a group (what the paper reports for clots)."""
    tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn"))
    pooled = {"tp": tp, "fp": fp, "fn": fn, "detection_rate": tp / (tp + fn) if tp + fn else None}
    for key in SIZE_METRICS:
        sizes = [s for r in rows for s in r[key]]
        pooled[key[:2] + "_size_ml"] = ({"count": len(sizes), "median": float(np.median(sizes)),
                                         "mean": float(np.mean(sizes)), "max": float(np.max(sizes))}
                                        if sizes else {"count": 0, "median": None, "mean": None, "max": None})
    return pooled


def summarize(rows: Sequence[Dict]) -> Dict[str, Dict]:
    """{label: {center: {metric: {mean, std, n}, ..., "cases": n, "pooled": {...}}}}, with center "all" last."""
    summary: Dict[str, Dict] = {}
    for label in sorted({r["label"] for r in rows}):
        of_label = [r for r in rows if r["label"] == label]
        groups = {center: [r for r in of_label if r["center"] == center]
                  for center in sorted({r["center"] for r in of_label})}
        groups["all"] = of_label
        summary[str(label)] = {
            center: {"cases": len(group), **{m: _mean_std([float(r[m]) for r in group]) for m in SCALAR_METRICS},
                     "pooled": _pooled(group)}
            for center, group in groups.items()}
    return summary


def per_case_csv(rows: Sequence[Dict]) -> str:
    """The rows as CSV text; FP/FN sizes (ml) as ';'-separated lists, undefined values as 'nan'."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: row[k] for k in CSV_COLUMNS if k not in SIZE_METRICS},
                         **{k: ";".join(f"{s:.4g}" for s in row[k]) for k in SIZE_METRICS}})
    return buffer.getvalue()


def write_results(output_folder: str, rows: Sequence[Dict], summary: Mapping, settings: EvaluationSettings,
                  provenance: Mapping) -> Tuple[str, str]:
    """Write per_case.csv and summary.json as a set: both new, or (on any error) both as they were."""
    paths = (os.path.join(output_folder, "per_case.csv"), os.path.join(output_folder, "summary.json"))
    write_files_together({
        paths[0]: per_case_csv(rows),
        paths[1]: json.dumps({"settings": {**asdict(settings), "labels": list(settings.labels)},
                              "cases": len({r["case"] for r in rows}), "metrics": summary,
                              "provenance": dict(provenance)}, indent=2, allow_nan=False) + "\n",
    })
    return paths
