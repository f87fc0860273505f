"""Measured facts about the synthetic clot cohort's presets: clot sizes, class imbalance, clot contrast-to-noise,
DWI's effective resolution, slice mimics, generation time.

    python3 benchmarks/clot_cohort_stats.py

Generates the clot quick profile's cohort (field of view 48 mm, 8 + 6 cases per center, seed 3, dataset id 530:
the cases the clot tables train and test on) in both presets, in memory, and times writing the hard one to a
temporary folder. Writes benchmarks/results/clot_cohort_stats.json and the part of
benchmarks/results/clot_cohort_hard.md between its 'stats' markers.
"""
import json
import os
import platform
import re
import sys
import tempfile
import time

import cc3d
import numpy as np
import scipy

from nnunet_ext.data.clot_cohort import ClotCohortSpec, acquire, clot_cases, clot_contrast, write_clot_cohort
from nnunet_ext.data.clot_presets import clot_preset
from nnunet_ext.data.staging import write_files_together

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
QUICK = dict(dataset_id=530, size=48, train_per_center=8, test_per_center=6, seed=3)


def roughness(image: np.ndarray, brain: np.ndarray) -> float:
    """Mean squared in-plane neighbour difference over the image's variance, inside the brain (2 for white noise,
    near 0 for an image smooth at the pixel scale)."""
    inner = np.zeros_like(brain)
    inner[:, 3:-3, 3:-3] = brain[:, 3:-3, 3:-3]
    pairs = inner[:, :, 1:] & inner[:, :, :-1]
    return float(np.mean(np.diff(image, axis=2)[pairs] ** 2) / image[inner].var())


def psf_fwhm_mm(factor, spacing_zyx) -> list:
    """Full width at half maximum (mm, z y x) of the acquisition's point spread function on the SWAN grid:
    a noise-free acquisition of one bright voxel, averaged over its position within the coarse block."""
    widths = []
    for axis in range(3):
        profile = np.zeros(64)
        for shift in range(factor[axis]):
            line = np.zeros((1, 1, 64))
            line[0, 0, 32 + shift] = 1.0
            f = (1, 1, factor[axis])
            profile += acquire(line, f, 0.0, np.random.default_rng(0))[0, 0] / factor[axis]
        above = np.flatnonzero(profile >= profile.max() / 2)
        # linear interpolation of the two half-maximum crossings
        left, right = above[0], above[-1]
        half = profile.max() / 2
        x_left = left - (profile[left] - half) / max(profile[left] - profile[left - 1], 1e-12)
        x_right = right + (profile[right] - half) / max(profile[right] - profile[right + 1], 1e-12)
        widths.append(round(float(x_right - x_left) * spacing_zyx[axis], 2))
    return widths


def summary(values) -> dict:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max()),
            "n": int(values.size)}


def preset_stats(name: str) -> dict:
    spec = ClotCohortSpec(preset=name, **QUICK)
    preset = clot_preset(name)
    spacing = {c.name: c.spacing_zyx for c in preset.centers}
    gains = {c.name: c.gains for c in preset.centers}
    rows = {key: [] for key in ("voxels", "volume_mm3", "slices", "fraction", "brain_fraction", "swan_cnr_vessel",
                                "swan_cnr_tissue", "swan_z_vessel", "phase_cnr_vessel", "dwi_over_swan_roughness",
                                "oblique_slices", "oblique_components", "slice_mimics", "vessel_voxels")}
    for _, center, _, case in clot_cases(spec):
        clot = case.clot.astype(bool)
        brain = case.images[0] > 0
        rows["voxels"].append(clot.sum())
        rows["volume_mm3"].append(clot.sum() * np.prod(spacing[center]))
        rows["slices"].append(len(np.unique(np.argwhere(clot)[:, 0])))
        rows["fraction"].append(clot.mean())
        rows["brain_fraction"].append(clot.sum() / brain.sum())
        swan = clot_contrast(case, spacing[center], 1)
        rows["swan_cnr_vessel"].append(swan["cnr_vessel"])
        rows["swan_cnr_tissue"].append(swan["cnr_tissue"])
        rows["swan_z_vessel"].append(swan["z_vessel"])
        rows["vessel_voxels"].append(swan["vessel_voxels"])
        if gains[center][2] > 0:
            rows["phase_cnr_vessel"].append(clot_contrast(case, spacing[center], 2)["cnr_vessel"])
        rows["dwi_over_swan_roughness"].append(roughness(case.images[0], brain) / roughness(case.images[1], brain))
        oblique = cc3d.connected_components(case.structures["oblique_veins"].astype(np.uint8), connectivity=26)
        rows["oblique_components"].append(int(oblique.max()))
        rows["oblique_slices"].append(len(np.unique(np.argwhere(oblique > 0)[:, 0])))
        single = cc3d.connected_components(case.structures["slice_mimics"].astype(np.uint8), connectivity=26)
        rows["slice_mimics"].append(int(single.max()))
    return {"preset": name, "cases": len(rows["voxels"]),
            "centers": {c.name: {"spacing_zyx_mm": list(c.spacing_zyx),
                                 "slice_over_pixel": round(c.spacing_zyx[0] / c.spacing_zyx[1], 2),
                                 "noise_std": c.noise_std, "gains": list(c.gains), "susceptibility": c.susceptibility,
                                 "dwi_voxel_mm": [round(s * f, 2) for s, f in
                                                  zip(c.spacing_zyx, preset.acquisition_factor[0])],
                                 "dwi_psf_fwhm_mm": psf_fwhm_mm(preset.acquisition_factor[0], c.spacing_zyx),
                                 "swan_psf_fwhm_mm": psf_fwhm_mm(preset.acquisition_factor[1], c.spacing_zyx)}
                        for c in preset.centers},
            **{key: summary(values) for key, values in rows.items()}}


def markdown(stats: dict, seconds: float) -> str:
    hard, easy = stats["hard"], stats["easy"]

    def cell(s, digits):
        if s["n"] == 0:
            return "none"
        return f"{s['min']:.{digits}f} / {s['median']:.{digits}f} / {s['max']:.{digits}f}"
    lines = [f"Measured by `python3 benchmarks/clot_cohort_stats.py` on the quick profile's cohort (field of view "
             f"{QUICK['size']} mm, {QUICK['train_per_center']} + {QUICK['test_per_center']} cases per center, seed "
             f"{QUICK['seed']}, dataset id {QUICK['dataset_id']}; {hard['cases']} cases per preset). "
             "min / median / max over cases.", "",
             "| quantity | hard | easy (for comparison) |", "|---|---|---|"]
    for key, label, digits in (
            ("voxels", "clot voxels", 0), ("volume_mm3", "clot volume (mm³)", 1),
            ("slices", "slices the clot spans", 0), ("fraction", "clot fraction of all voxels", 6),
            ("brain_fraction", "clot fraction of brain voxels", 5),
            ("swan_cnr_vessel", "SWAN CNR, clot vs adjacent vessel", 2),
            ("swan_cnr_tissue", "SWAN CNR, clot vs adjacent tissue", 2),
            ("swan_z_vessel", "SWAN clot-vs-vessel mean difference / its standard error", 1),
            ("vessel_voxels", "adjacent-vessel voxels (1–5 mm from the clot)", 0),
            ("phase_cnr_vessel", "PHASE CNR, clot vs adjacent vessel (centers A, B)", 2),
            ("dwi_over_swan_roughness", "DWI / SWAN in-plane roughness", 3),
            ("oblique_slices", "slices with oblique-vein voxels per case", 0),
            ("oblique_components", "oblique-vein pieces per case (26-connected: a dot per slice that moves)", 0),
            ("slice_mimics", "single-slice mimic components per case", 0)):
        lines.append(f"| {label} | {cell(hard[key], digits)} | {cell(easy[key], digits)} |")
    lines += ["", "| center | SWAN voxel (z, y, x mm) | slice / pixel | DWI voxel (mm) | DWI PSF FWHM (mm) | "
                  "SWAN PSF FWHM (mm) | noise std | gains (DWI, SWAN, PHASE) | susceptibility |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, c in hard["centers"].items():
        lines.append(f"| {name} | {c['spacing_zyx_mm']} | {c['slice_over_pixel']} | {c['dwi_voxel_mm']} | "
                     f"{c['dwi_psf_fwhm_mm']} | {c['swan_psf_fwhm_mm']} | {c['noise_std']} | {c['gains']} | "
                     f"{c['susceptibility']} |")
    lines += ["", f"Writing the hard cohort ({hard['cases']} cases, NIfTI) took {seconds:.1f} s on this machine "
                  f"({os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
                  f"scipy {scipy.__version__})."]
    return "\n".join(lines)


def main() -> None:
    stats = {name: preset_stats(name) for name in ("hard", "easy")}
    with tempfile.TemporaryDirectory() as raw:
        start = time.perf_counter()
        write_clot_cohort(ClotCohortSpec(preset="hard", **QUICK), raw, progress=False)
        seconds = time.perf_counter() - start
    stats["hard_write_seconds"] = round(seconds, 1)
    path = os.path.join(RESULTS, "clot_cohort_hard.md")
    text = open(path).read()
    begin, end = "<!-- stats:begin -->", "<!-- stats:end -->"
    if begin not in text or end not in text:
        sys.exit(f"{path} has no {begin} ... {end} section")
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{markdown(stats, seconds)}\n{end}",
                  text, flags=re.S)
    # the page and the numbers it quotes, together
    write_files_together({os.path.join(RESULTS, "clot_cohort_stats.json"): json.dumps(stats, indent=2), path: text})
    print(markdown(stats, seconds))


if __name__ == "__main__":
    main()
