"""Tables laid out like the paper's, with run-to-run and case-to-case spread, and a Fig. 11-like plot.

Spread: `std_runs` is the standard deviation across runs (folds/seeds) of a run's mean Dice; `std_cases` the
standard deviation of the per-case Dice pooled over runs. A method is called better or worse than the
baseline only where the difference of the run means exceeds the sum of their run-to-run stds.
"""
from typing import Dict, List, Tuple

import numpy as np

from nnunet_ext.experiments.comparison import verdict
from nnunet_ext.experiments.records import figure_png, write_table_files
from nnunet_ext.experiments.stroke.settings import PAPER, PROBABILITIES, Profile, TableSetting

ROWS = ("all", "missing", "rebuilt")  # 'rebuilt' only where the harness predicted it (Harness.rebuild_row)


def _stats(run_values: List[float], case_values: List[float]) -> Dict[str, float]:
    return {"mean": float(np.mean(run_values)), "std_runs": float(np.std(run_values)),
            "std_cases": float(np.std(case_values)), "runs": len(run_values)}


def summarize_cell(runs: List[Dict]) -> Dict:
    """Per row ('all', 'missing', and 'rebuilt' where every run has it): per center and the average over
    centers, across runs."""
    if not runs:
        raise ValueError("no finished run to summarize")
    centers = sorted(set(runs[0]["case_centers"].values()))
    summary = {}
    for row in [r for r in ROWS if all(r in run["dice"] for run in runs)]:
        per_center_runs = {c: [] for c in centers}
        per_center_cases = {c: [] for c in centers}
        averages = []
        for run in runs:
            by_center = {c: [v for case, v in run["dice"][row].items() if run["case_centers"][case] == c]
                         for c in centers}
            for center, values in by_center.items():
                per_center_runs[center].append(float(np.mean(values)))
                per_center_cases[center] += values
            averages.append(float(np.mean([np.mean(v) for v in by_center.values()])))
        summary[row] = {"centers": {c: _stats(per_center_runs[c], per_center_cases[c]) for c in centers},
                        "average": _stats(averages, [v for c in centers for v in per_center_cases[c]])}
    return summary


def effect_check(summaries: Dict[str, Dict], baseline_key: str) -> Dict:
    """The issue's bar: the baseline loses >= 10 % of its Dice with the channel missing, and dropout methods
    keep >= 95 % of their full-channel Dice."""
    def kept(key):
        return summaries[key]["missing"]["average"]["mean"] / max(1e-8, summaries[key]["all"]["average"]["mean"])
    result = {"baseline_kept_fraction": round(kept(baseline_key), 3) if baseline_key in summaries else None,
              "methods_kept_fraction": {k: round(kept(k), 3) for k in summaries
                                        if k not in (baseline_key, "upper_bound")}}
    result["baseline_loses_10_percent"] = result["baseline_kept_fraction"] is not None and \
        result["baseline_kept_fraction"] <= 0.9
    result["methods_keep_95_percent"] = {k: v >= 0.95 for k, v in result["methods_kept_fraction"].items()}
    return result


def _fmt(stats: Dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std_runs']:.3f}"


def _verdict_lines(table: TableSetting, summaries: Dict[str, Dict], labels: Dict[str, str], order: List[str],
                   baseline_key: str) -> Tuple[List[str], Dict[str, str], Dict[str, str]]:
    """(markdown lines, verdicts against the baseline with the droppable channel absent, verdicts of the rebuilt
    channel against zero-filling it with the same model)."""
    lines, verdicts = [], {}
    if baseline_key in summaries:
        lines += ["", f"Against {labels[baseline_key]} (row 2, average):", ""]
        for key in order:
            if key == baseline_key:
                continue
            verdicts[key] = verdict(summaries[key]["missing"]["average"], summaries[baseline_key]["missing"]["average"])
            lines.append(f"- {labels[key]}: {verdicts[key]}")
    rebuild_verdicts = {key: verdict(summaries[key]["rebuilt"]["average"], summaries[key]["missing"]["average"])
                        for key in order if "rebuilt" in summaries[key]}
    if rebuild_verdicts:
        lines += ["", f"{table.droppable} rebuilt vs zero-filled, same model (average):", ""]
        lines += [f"- {labels[key]}: {summaries[key]['rebuilt']['average']['mean']:.3f} vs "
                  f"{summaries[key]['missing']['average']['mean']:.3f}: {text}" for key, text in rebuild_verdicts.items()]
    return lines, verdicts, rebuild_verdicts


def write_report(table: TableSetting, profile: Profile, summaries: Dict[str, Dict], labels: Dict[str, str],
                 out_prefix: str, command: str, provenance: Dict) -> Dict[str, str]:
    """Write <out_prefix>.md/.csv/.json (and .png for Table 3); returns the paths."""
    baseline_key = "lower_bound" if table.number == 3 else "no_dropout"
    order = [c.key for c in table.cells if c.key in summaries]
    centers = sorted(next(iter(summaries.values()))["all"]["centers"])
    header = [f"{c} (unseen)" if c == table.unseen_center else c for c in centers]
    lines = [f"# Table {table.number} reproduction, profile `{profile.name}`", "",
             f"Command: `{command}`", "",
             f"Inputs {' + '.join(table.channels)}; droppable {table.droppable}"
             + (f"; center {table.unseen_center} held out of training" if table.unseen_center else "")
             + f". Row 1: all channels; row 2: {table.droppable} absent (zero image)"
             + (f"; row 3 (where run): {table.droppable} absent and rebuilt from the two other diffusion channels "
                "(B0 = DWI · exp(b · ADC), `nnunet_ext_predict --rebuild`)"
                if any("rebuilt" in s for s in summaries.values()) else "")
             + ". Cells: mean Dice ± std "
               "across runs; 'cases' is the per-case std pooled over runs. Paper: the paper's average for the row"
             + (" (and its unseen-center Dice with B0 missing)" if table.number == 3 else "") + ".", "",
             "| Exp | method | row | " + " | ".join(header) + " | average | cases | runs | paper |",
             "|" + "---|" * (len(header) + 7)]
    csv_rows = []
    for number, key in enumerate(order, start=1):
        summary = summaries[key]
        paper = PAPER[table.number].get(key)
        for row in [r for r in ROWS if r in summary]:
            stats = summary[row]
            paper_value = None if paper is None or row == "rebuilt" else (
                paper.average_all if row == "all" else paper.average_missing)
            paper_text = "-" if paper_value is None else f"{paper_value:.3f}"
            if paper is not None and row == "missing" and paper.unseen_missing is not None:
                paper_text += f" (unseen {paper.unseen_missing:.3f})"
            row_text = {"all": "all", "missing": f"{table.droppable} absent",
                        "rebuilt": f"{table.droppable} rebuilt"}[row]
            lines.append(f"| Exp{number} | {labels[key]} | {row_text} | "
                         + " | ".join(_fmt(stats["centers"][c]) for c in centers)
                         + f" | {_fmt(stats['average'])} | {stats['average']['std_cases']:.3f} | "
                           f"{stats['average']['runs']} | {paper_text} |")
            csv_rows.append({"exp": f"Exp{number}", "cell": key, "row": row,
                             **{f"{c}_mean": stats["centers"][c]["mean"] for c in centers},
                             **{f"{c}_std_runs": stats["centers"][c]["std_runs"] for c in centers},
                             "average_mean": stats["average"]["mean"], "average_std_runs": stats["average"]["std_runs"],
                             "average_std_cases": stats["average"]["std_cases"], "runs": stats["average"]["runs"],
                             "paper_average": paper_value})
    verdict_lines, verdicts, rebuild_verdicts = _verdict_lines(table, summaries, labels, order, baseline_key)
    lines += verdict_lines
    check = effect_check(summaries, baseline_key)
    lines += ["", f"Effect check: baseline keeps {check['baseline_kept_fraction']} of its Dice with "
                  f"{table.droppable} absent (the bar: <= 0.9); methods keep {check['methods_kept_fraction']} "
                  "(the bar: >= 0.95).", "", f"Versions: {provenance['versions']}", ""]
    figures = ({"png": unseen_center_png(summaries, table.unseen_center)}
               if table.number == 3 and table.unseen_center is not None else None)
    return write_table_files(out_prefix, lines, csv_rows, {
        "table": table.number, "profile": profile.name, "summaries": summaries, "verdicts": verdicts,
        "rebuild_verdicts": rebuild_verdicts,
        "effect_check": check, "command": command, "provenance": provenance}, figures)


def unseen_center_png(summaries: Dict[str, Dict], center: str) -> bytes:
    """Fig. 11: Dice on the unseen center with the droppable channel absent vs drop probability."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in ("MultiUnet", "Gradual", "ModDrop+"):
        points = [(p, summaries[f"{method}_p{round(p * 10):02d}"]["missing"]["centers"][center])
                  for p in PROBABILITIES if f"{method}_p{round(p * 10):02d}" in summaries]
        if points:
            axis.errorbar([p for p, _ in points], [s["mean"] for _, s in points],
                          yerr=[s["std_runs"] for _, s in points], marker="o", capsize=3, label=method)
    for key, style in (("lower_bound", "--"), ("upper_bound", ":")):
        if key in summaries:
            axis.axhline(summaries[key]["missing"]["centers"][center]["mean"], linestyle=style, color="gray",
                         label=key.replace("_", " "))
    axis.set_xlabel("drop probability (1 - p)")
    axis.set_ylabel(f"Dice on unseen center {center}")
    axis.set_title("Unseen center, B0 absent")
    axis.legend()
    figure.tight_layout()
    return figure_png(figure)
