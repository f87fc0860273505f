"""The report of one of Tables 5-7: <out_prefix>.md (the table, its setting, missing runs, verdicts, the paper's
numbers and an optional comparison), .csv (one flat row per table row) and .json (everything, per run)."""
from dataclasses import asdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_ext.experiments.clot.aggregate import GROUPS, JUDGED, METRICS, aggregate_runs, judge, missing_text
from nnunet_ext.experiments.clot.paper_numbers import PaperRow
from nnunet_ext.experiments.clot.profiles import (NNUNET, PAPER_MIN_SIZE_PX, PAPER_PIXEL_MM,
                                                  PREDICTION_CHECKPOINT, TEST_SET_LABELS, THRESHOLD, ClotProfile)
from nnunet_ext.experiments.clot.rows import Row, table_comparisons
from nnunet_ext.experiments.progress import ValidationCourse
from nnunet_ext.experiments.records import write_table_files

METRIC_TITLES = {"fp_count": "FP n", "fp_size_mm3": "FP size", "fn_count": "FN n", "fn_size_mm3": "FN size",
                 "dice": "Dice", "detection": "Det."}


def _fmt(value, digits: int = 2) -> str:
    """A number, or an aggregate over runs ({'mean', 'std_runs', ...}) as 'mean ± std'."""
    if isinstance(value, Mapping):
        if value.get("mean") is None:
            return "-"
        return f"{value['mean']:.{digits}f} ± {value['std_runs']:.{digits}f}"
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(values: Tuple[Optional[float], Optional[float]]) -> str:
    return " / ".join(_fmt(v) for v in values)


def paper_text(paper: Optional[PaperRow], which: str, footnotes: List[str]) -> str:
    """'0.55 / 0.54' (P / D), '0.28 (all)' for FOCH rows, '-' when the paper has no such row; uncertain
    values get '?' and a footnote number."""
    if paper is None:
        return "-"
    pooled = paper.dice_all if which == "dice" else paper.det_all
    text = f"{pooled:.2f} (all)" if pooled is not None else _pair(paper.dice if which == "dice" else paper.det)
    if paper.uncertain:
        if paper.uncertain not in footnotes:
            footnotes.append(paper.uncertain)
        text += f" ?[{footnotes.index(paper.uncertain) + 1}]"
    return text


def model_label(row: Row, profile: ClotProfile) -> str:
    network = row.network
    if network.gradual_dropout:
        how = "fine-tuned from UpAttLLSTM" if profile.gradual_init == "pretrained" else "from scratch"
        label = f"UpAttLLSTM + gradual dropout of PHASE (p 0.5, {how})"
    elif network.architecture == NNUNET:
        label = "nnU-Net 3d_fullres (CPU plans)"
    else:
        label = network.architecture
    return label + (f", {row.note}" if row.note else "")


TABLE_TITLES = {5: "Table 5: AttLLSTM and the number of slices",
                6: "Table 6: nnU-Net, the recurrent ablations and UpAttLLSTM, with post-processing",
                7: "Table 7: UpAttLLSTM with gradual modality dropout of PHASE; PHASE absent and an unseen center"}


# how the clot networks are trained (nnunet_ext.training.upattllstm_trainer), said in every report
CLOT_TRAINING_NOTE = (
    "Clot networks' training (nnUNetTrainerUpAttLLSTM*): crops that hold a clot put it anywhere in the crop (not at "
    "its centre, as nnU-Net's oversampling does), clot-free crops are slice windows without clot slices, validation "
    "crops are drawn the same way; AdamW (lr 1e-3, poly decay, weight decay 0.01 except on norms, biases, gains and "
    "embeddings); the Up block normalises with InstanceNorm and, in the CPU template, has 6 full-resolution skip "
    "features (chosen by a validation-split pilot, benchmarks/results/pilots/up_skip_features); "
    "without the Up block the attention returns to full "
    "resolution by a learned unpatchify. Tables made before this recipe (centred crops, nnU-Net's SGD, BatchNorm, "
    "nearest upsampling, P_S = 4 with D = 8 in the CPU template, checkpoint_final): "
    "benchmarks/results/before_sampling_fix/. Every model here (nnU-Net and the lesion model included) predicts "
    f"with nnU-Net's {PREDICTION_CHECKPOINT} (the best moving average of the validation pseudo Dice), and the "
    "gradual-dropout fine-tune starts from UpAttLLSTM's (the paper: 'the best UpAttLLSTM'): chosen on the validation "
    "split, where UpAttLLSTM's pseudo Dice falls after its peak: mostly because it learns to reject the one "
    "validation clot, the widest of the 16 clots, as wide as a vein (benchmarks/results/pilots/up_spatial_da); "
    "validated on 4 cases instead, the same recipe's pseudo Dice falls by a third, not to 0 (moderate over-fitting; "
    "benchmarks/results/pilots/up_validation_split).")


def setting_notes(table: int, profile: ClotProfile) -> List[str]:
    """What differs from the paper, said once per report."""
    pixel = profile.training_pixel_area_mm2
    notes = [f"Synthetic clot cohort, preset `{profile.preset}` ({profile.train_per_center} training and "
             f"{profile.test_per_center} test cases per center, field of view {profile.size} mm, seed {profile.seed}); "
             "trained on centers A+B (the paper's CHSF+MATAR); center C (SWI in the SWAN slot, black PHASE: the "
             "paper's FOCH (SWI)) is test-only. Clot networks: template `" + profile.template + f"`, {profile.epochs} "
             f"epochs x {profile.iterations_per_epoch} iterations; nnU-Net: 3d_fullres with `nnUNetPlans_CPU`, same "
             "budget.",
             f"Runs: {profile.runs} per row on the same cohort; run k trains nnU-Net fold k-1 (the same training and "
             f"validation cases in every fold) with NNUNET_EXT_SEED = {profile.seed} + k-1, and everything downstream "
             "(the lesion model, the fine-tune's starting point, predictions, post-processing) is that run's. Cells: "
             "mean ± std across runs (population std); a size without any FP/FN in a run leaves that run out of the "
             "size's mean. Verdicts: a row is better or worse than its reference only where the means differ by more "
             "than the sum of the two rows' stds; otherwise 'no clear difference'.",
             "Columns: FP/FN count = mean per case; FP/FN size = mean size (mm^3) of the false-positive components / "
             "missed clots of the group (the paper's size unit is not stated, probably pixels: not comparable); "
             "Dice = mean per case; Det. = mean per-case detection rate (lesion matching: any overlap). "
             "P / D = proximal / distal occlusions; 'all' = every case of the test set. Paper columns: the paper's "
             "Dice and Det. for the row, P / D.",
             f"Slice counts: the CPU template's patch has {profile.default_slices} slices where the paper's has 12, "
             "so Table 5's 10/12/14 become " + "/".join(str(o) for o, _ in profile.slices) + " (scaled by "
             f"{profile.default_slices}/12); Tables 6 and 7 use {profile.default_slices}.",
             CLOT_TRAINING_NOTE]
    if table in (6, 7):
        notes.append(f"Min (paper 4.2.4: eliminate the predicted objects smaller than n_min pixels; Table 4: n_min = "
                     f"{PAPER_MIN_SIZE_PX}) is the first step of every post-processed row; no column of Tables 6-7 "
                     "switches it, so rows marked '-' are raw and every other row starts with it. Scaled by in-plane "
                     f"area: {PAPER_MIN_SIZE_PX} pixels of ~{PAPER_PIXEL_MM} mm are "
                     f"{PAPER_MIN_SIZE_PX * PAPER_PIXEL_MM ** 2:.2f} mm^2; the training centers' mean pixel is "
                     f"{pixel:.3f} mm^2, so n_min = round({PAPER_MIN_SIZE_PX * PAPER_PIXEL_MM ** 2:.2f} / {pixel:.3f}) "
                     f"= {profile.min_size_voxels} voxels (26-connected). By area, not volume: the paper counts "
                     "pixels and does not state its slice thickness.")
    if table == 6:
        lesion = ("a stock nnU-Net 3d_fullres model (CPU plans, same budget, one per run) trained on DWI alone with "
                  "the lesion labels of A+B (the paper: a separate nnU-Net lesion model)"
                  if profile.lesion_source == "model" else "the reference lesion (oracle: the rows are marked)")
        notes.append(f"Post-processing (paper 4.2.4): Lesion = keep the objects within d of the closest object's "
                     f"distance to the lesion centroid, d = {profile.lesion_distance_mm} mm (the paper's 20 pixels "
                     f"of a 256-pixel crop, scaled to the {profile.size} mm field of view); lesion mask from {lesion}. "
                     f"Thr = grow the objects into voxels with probability > {THRESHOLD}; Big = keep the largest "
                     "object.")
    if table == 7:
        notes.append("PHASE absent: zero image (`nnunet_ext_predict --missing PHASE`). Center C's PHASE is black "
                     "already. The paper's FOCH (SWAN) rows and its model without PHASE (rows 4-6) have no "
                     "counterpart here. Big = keep the largest object.")
    return notes


def _cell(stats: Mapping, digits: int) -> str:
    """'0.60 ± 0.10' (one run: '0.60')."""
    if stats["mean"] is None:
        return "-"
    if stats["runs"] < 2:
        return _fmt(stats["mean"], digits)
    return f"{_fmt(stats['mean'], digits)} ± {_fmt(stats['std_runs'], digits)}"


def _values(stats: Mapping, digits: int = 2) -> str:
    return ", ".join(_fmt(v, digits) for v in stats["values"])


def dwi_swap_note(network_key: str, found: Sequence[Mapping]) -> str:
    """The DWI-swap check of one attention model over its finished runs (`found`: their result files)."""
    runs = "; ".join(f"run {r['run']}: {r['cases_changed']}/{r['cases']} cases changed, agreement Dice "
                     f"{r['mean_agreement_dice']:.2f}, clot Dice {r['clot_dice']['own_dwi']:.2f} -> "
                     f"{r['clot_dice']['swapped_dwi']:.2f}" for r in found)
    return (f"DWI swapped between A+B test cases ({network_key}: each case predicted with the next case's DWI, "
            f"resampled onto it; a model that ignores DWI changes no prediction): {runs}.")


def lesion_note(trainer: str, dice: Sequence[Optional[float]]) -> str:
    """The lesion models' mean lesion Dice per run (None: that run's is missing)."""
    present = [d for d in dice if d is not None]
    missing = [str(run) for run, d in enumerate(dice, start=1) if d is None]
    text = "-" if not present else f"{np.mean(present):.2f} ± {np.std(present):.2f} (runs: " + ", ".join(
        "-" if d is None else f"{d:.2f}" for d in dice) + ")"
    return (f"Lesion model ({trainer}, DWI only, one per run): mean lesion Dice {text} on the A+B test cases" +
            (f"; run(s) {', '.join(missing)} of {len(dice)} missing or without a lesion Dice" if missing else "") + ".")


def validation_note(courses: Mapping[str, Sequence[Tuple[int, ValidationCourse]]],
                    unread: Sequence[str] = (), validation_cases: int = 1) -> str:
    """Network key -> (run, its training's validation course) for the trained runs, and the runs with results whose
    training log was not found (`unread`), as one note; `validation_cases`: how many cases the pseudo Dice is on."""
    parts = [f"{key}: " + "; ".join(f"run {run} {course.text()}" for run, course in runs)
             for key, runs in courses.items() if runs]
    cases = "the one validation case" if validation_cases == 1 else f"{validation_cases} validation cases"
    text = (f"Validation pseudo Dice during training (nnU-Net's, on {cases}; every model predicts "
            f"with its {PREDICTION_CHECKPOINT}): " + (". ".join(parts) if parts else "none read") + ".")
    if unread:
        text += (" No training log with a pseudo Dice was found for " + "; ".join(unread) +
                 ", although their rows have results.")
    return text


HEADER = ["#", "model", "test set", "PHASE", "post-proc.", "runs"] + [
    f"{METRIC_TITLES[metric]} {group}" for metric in METRICS for group in ("P", "D")] + [
    "Dice all", "Det. all", "Dice all per run", "cases P/D", "paper Dice P / D", "paper Det. P / D"]


def _table_cells(number: int, row: Row, profile: ClotProfile, aggregate: Optional[Mapping], finished: int,
                 runs: int, missing: str, footnotes: List[str]) -> List[str]:
    """One line of the markdown table (`footnotes` collects the paper values' uncertainties)."""
    cells = [str(number), model_label(row, profile), TEST_SET_LABELS[row.test_set], row.phase_channel, row.postprocessing,
             f"{finished}/{runs}" + (f" ({missing})" if missing else "")]
    if aggregate is None:
        cells += ["not run"] + [""] * (len(HEADER) - len(cells) - 3)
    else:
        for metric in METRICS:
            digits = 1 if "size" in metric else 2
            cells += [_cell(aggregate["proximal"][metric], digits), _cell(aggregate["distal"][metric], digits)]
        cells += [_cell(aggregate["all"]["dice"], 2), _cell(aggregate["all"]["detection"], 2),
                  _values(aggregate["all"]["dice"]), f"{aggregate['proximal']['cases']}/{aggregate['distal']['cases']}"]
    return cells + [paper_text(row.paper, "dice", footnotes), paper_text(row.paper, "det", footnotes)]


def _csv_row(record: Mapping, aggregate: Optional[Mapping], paper: Optional[PaperRow]) -> Dict:
    """`record` with every group's metric as mean, std and per-run values, and the paper's numbers."""
    flat = dict(record)
    for group in GROUPS:
        for metric in METRICS:
            stats = None if aggregate is None else aggregate[group][metric]
            flat[f"{metric}_{group}"] = None if stats is None else stats["mean"]
            flat[f"{metric}_{group}_std"] = None if stats is None else stats["std_runs"]
            flat[f"{metric}_{group}_runs"] = None if stats is None else ";".join(
                "" if v is None else repr(v) for v in stats["values"])
        flat[f"cases_{group}"] = None if aggregate is None else aggregate[group]["cases"]
    paper = paper or PaperRow("")
    flat.update({"paper_dice_P": paper.dice[0], "paper_dice_D": paper.dice[1], "paper_dice_all": paper.dice_all,
                 "paper_det_P": paper.det[0], "paper_det_D": paper.det[1], "paper_det_all": paper.det_all,
                 "paper_source": paper.source, "paper_uncertain": paper.uncertain})
    return flat


def _verdicts(table: int, rows: Sequence[Row], aggregates: Mapping[str, Optional[Mapping]],
              profile: ClotProfile) -> Tuple[List[str], List[Dict]]:
    """The markdown lines and the records of every judged (row, reference row) pair of the table."""
    lines, verdicts = [], []
    for index, ref_index in table_comparisons(table, rows):
        method, base = aggregates[rows[index].key], aggregates[rows[ref_index].key]
        if method is None or base is None:
            continue
        parts, record = [], {"row": index + 1, "reference": ref_index + 1}
        for metric, group, higher in JUDGED:
            said = judge(method[group][metric], base[group][metric], higher)
            record[f"{metric}_{group}"] = said
            parts.append(f"{METRIC_TITLES[metric]} {group} {_cell(method[group][metric], 2)} vs "
                         f"{_cell(base[group][metric], 2)}: {said}")
        verdicts.append(record)
        lines.append(f"- row {index + 1} vs row {ref_index + 1} ({model_label(rows[index], profile)}, "
                     f"{rows[index].postprocessing} vs {model_label(rows[ref_index], profile)}, "
                     f"{rows[ref_index].postprocessing}): " + "; ".join(parts))
    if table_comparisons(table, rows):
        lines = ["", "Verdicts (mean ± std across runs; better / worse only beyond the sum of the stds; FP n: fewer "
                     "is better):", ""] + lines
    return lines, verdicts


def _reference_section(rows: Sequence[Row], aggregates: Mapping[str, Optional[Mapping]],
                       reference: Mapping[str, Mapping], reference_label: str, profile: ClotProfile) -> List[str]:
    """Another run of the table (e.g. the committed one-run results on the `easy` preset) beside this one."""
    lines = ["", f"## Beside: {reference_label or 'reference results'}", "",
             "| # | model | test set | PHASE | post-proc. | Dice P | Dice D | Dice all | Det. all | FP n all | "
             f"this table: Dice all ({profile.preset}) |", "|" + "---|" * 11]
    for number, row in enumerate(rows, start=1):
        old, now = reference.get(row.key), aggregates[row.key]
        cells = ["-"] * 5 if old is None else [
            _fmt(old["proximal"]["dice"]), _fmt(old["distal"]["dice"]), _fmt(old["all"]["dice"]),
            _fmt(old["all"]["detection"]), _fmt(old["all"]["fp_count"])]
        post = "-" if not row.chain else "+".join(row.chain)
        now_text = "-" if now is None else _cell(now["all"]["dice"], 2)
        lines.append(f"| {number} | {model_label(row, profile)} | {TEST_SET_LABELS[row.test_set]} | {row.phase_channel} | "
                     f"{post} | " + " | ".join(cells) + f" | {now_text} |")
    return lines


def write_clot_report(table: int, profile: ClotProfile, rows: Sequence[Row],
                      results: Mapping[str, Sequence[Optional[Dict]]], out_prefix: str, command: str,
                      provenance: Mapping, extra_notes: Sequence[str] = (),
                      reference: Optional[Mapping[str, Mapping]] = None, reference_label: str = ""
                      ) -> Dict[str, str]:
    """Write <out_prefix>.md/.csv/.json. `results`: row key -> one result per run (None: not finished); a row's
    missing runs are named. `reference`: row key -> metrics of another run of the table (the committed one-run
    results on the `easy` preset), shown in a section of its own."""
    footnotes: List[str] = []
    notes = setting_notes(table, profile) + list(extra_notes)
    lines = [f"# {TABLE_TITLES[table]} (synthetic clot cohort `{profile.preset}`, profile `{profile.name}`, "
             f"{profile.runs} runs per row)", "", f"Command: `{command}`", ""] + [f"- {note}" for note in notes] + [
        "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    csv_rows, json_rows, aggregates, missing_lines = [], [], {}, []
    for number, row in enumerate(rows, start=1):
        run_results = list(results.get(row.key) or [None] * profile.runs)
        finished = [r for r in run_results if r is not None]
        aggregate = aggregate_runs([r and r["metrics"] for r in run_results]) if finished else None
        aggregates[row.key] = aggregate
        missing = missing_text(run_results)
        if missing:
            missing_lines.append(f"- row {number} ({model_label(row, profile)}, {row.postprocessing}): {missing}")
        lines.append("| " + " | ".join(_table_cells(number, row, profile, aggregate, len(finished), len(run_results),
                                                     missing, footnotes)) + " |")
        record = {"row": number, "key": row.key, "model": model_label(row, profile),
                  "architecture": row.network.model, "slices": row.network.slices,
                  "test_set": row.test_set, "phase": row.phase_channel, "postprocessing": row.postprocessing,
                  "runs_finished": len(finished), "runs": len(run_results), "missing": missing}
        csv_rows.append(_csv_row(record, aggregate, row.paper))
        json_rows.append({**record, "metrics": aggregate, "run_metrics": [r and r["metrics"] for r in run_results],
                          "paper": asdict(row.paper) if row.paper else None,
                          "result": finished[0] and {k: finished[0][k] for k in ("trainer", "plans", "commands",
                                                                                  "folders") if k in finished[0]}
                          if finished else None,
                          "reference": (reference or {}).get(row.key)})
    if footnotes:
        lines += [""] + [f"?[{i}] {text}." for i, text in enumerate(footnotes, start=1)]
    if missing_lines:
        lines += ["", "Missing runs (the cells above are over the finished runs only):", ""] + missing_lines
    verdict_lines, verdicts = _verdicts(table, rows, aggregates, profile)
    lines += verdict_lines
    if reference:
        lines += _reference_section(rows, aggregates, reference, reference_label, profile)
    lines += ["", f"Versions: {provenance['versions']}; seed {provenance.get('seed')} (+ run - 1).", ""]
    return write_table_files(out_prefix, lines, csv_rows, {
        "table": table, "profile": asdict(profile), "command": command, "provenance": dict(provenance),
        "notes": notes, "rows": json_rows, "verdicts": verdicts, "reference_label": reference_label if reference
        else None})
