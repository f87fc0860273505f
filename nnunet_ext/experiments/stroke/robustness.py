"""Robustness of one trained model to every non-empty subset of its input channels.

Each subset is predicted through `nnunet_ext_predict` (absent channels zero-filled, the stock predictor
underneath; and where an absent diffusion channel can be rebuilt from the two present ones, once more with it
rebuilt) and scored per center: a matrix subset x center -> Dice, as Markdown, CSV and a heatmap.
"""
import itertools
import os
import subprocess
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_ext.data.diffusion import SOURCES
from nnunet_ext.evaluation.folders import dice_per_case, summarize_by_center
from nnunet_ext.experiments.records import figure_png, write_table_files
from nnunet_ext.paths import nnunet_environment


def channel_subsets(channel_names: Sequence[str]) -> List[Tuple[str, ...]]:
    """Every non-empty subset, largest first, in channel order within a size."""
    names = list(channel_names)
    return [subset for size in range(len(names), 0, -1) for subset in itertools.combinations(names, size)]


def rebuildable_subsets(channel_names: Sequence[str]) -> List[Tuple[Tuple[str, ...], str]]:
    """(subset, channel) for every subset that lacks one diffusion channel and holds the two it is rebuilt from
    (nnunet_ext.data.diffusion.SOURCES), in channel_subsets' order."""
    rows = []
    for subset in channel_subsets(channel_names):
        for channel, sources in SOURCES.items():
            if channel in channel_names and channel not in subset and all(s in subset for s in sources):
                rows.append((subset, channel))
    return rows


def robustness_matrix(images: str, labels: str, output: str, channel_names: Sequence[str],
                      predict_args: Sequence[str], case_centers: Optional[Mapping[str, str]] = None,
                      log: Callable[[str], None] = print, rebuild_rows: bool = True) -> Dict[str, Dict]:
    """{subset label: summary per center (mean, std, n)} for every subset, absent channels zero-filled, then (with
    rebuild_rows) every subset in which an absent diffusion channel can be rebuilt from the two others, with it
    rebuilt ('DWI+ADC, B0 rebuilt'); predictions kept under output/."""
    matrix = {}
    rows = [("+".join(subset), [c for c in channel_names if c not in subset], []) for subset in
            channel_subsets(channel_names)]
    if rebuild_rows:
        rows += [(f"{'+'.join(subset)}, {channel} rebuilt", [c for c in channel_names if c not in subset],
                  ["--rebuild", channel]) for subset, channel in rebuildable_subsets(channel_names)]
    for number, (label, missing, rebuild) in enumerate(rows, start=1):
        prediction = os.path.join(output, "predictions", label.replace(", ", "__").replace(" ", "_"))
        if not os.path.isfile(os.path.join(prediction, ".complete")):
            command = ["nnunet_ext_predict", "-i", images, "-o", prediction, *predict_args]
            if missing:
                command += ["--missing", *missing, *rebuild]
            completed = subprocess.run(command, env=nnunet_environment(), capture_output=True, text=True)
            if completed.returncode != 0:
                raise RuntimeError(f"prediction with {label} failed:\n{completed.stderr[-2000:]}")
            open(os.path.join(prediction, ".complete"), "w").close()
        matrix[label] = summarize_by_center(dice_per_case(prediction, labels), case_centers)
        log(f"[{number}/{len(rows)}] {label}: Dice {matrix[label]['all']['mean']:.3f}")
    return matrix


def write_robustness_report(matrix: Dict[str, Dict], output: str, command: str, provenance: Dict) -> Dict[str, str]:
    """robustness.{md,csv,json,png} in `output`, written together."""
    columns = list(next(iter(matrix.values())))
    lines = ["# Robustness to absent channels", "", f"Command: `{command}`", "",
             "Mean Dice ± std over cases; absent channels are zero images, except in the rows 'X rebuilt', where X "
             "is rebuilt from the two other diffusion channels (B0 = DWI · exp(b · ADC)).", "",
             "| channels present | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += [f"| {subset} | " + " | ".join(f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f}" for c in columns) + " |"
              for subset, row in matrix.items()]
    csv_rows = [{"channels_present": subset, **{c: row[c]["mean"] for c in columns}} for subset, row in matrix.items()]
    return write_table_files(os.path.join(output, "robustness"), lines + [""], csv_rows,
                             {"matrix": matrix, "command": command, "provenance": provenance},
                             {"png": robustness_png(matrix, columns)})


def robustness_png(matrix: Dict[str, Dict], columns: List[str]) -> bytes:
    """The matrix as a heat map: mean Dice per (channels present, center)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    values = np.array([[row[c]["mean"] for c in columns] for row in matrix.values()])
    figure, axis = plt.subplots(figsize=(1.2 * len(columns) + 2, 0.45 * len(matrix) + 1.5))
    image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(columns)), columns)
    axis.set_yticks(range(len(matrix)), list(matrix))
    for (i, j), value in np.ndenumerate(values):
        axis.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
    figure.colorbar(image, label="Dice")
    axis.set_xlabel("center")
    axis.set_ylabel("channels present")
    figure.tight_layout()
    return figure_png(figure)
