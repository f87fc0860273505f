"""Parameters and CPU inference time per case of UpAttLLSTM (Table-4 sizes) vs the stock nnU-Net 3d_fullres
network, on the same volume, through the same nnU-Net predictor.

    python benchmarks/upattllstm_inference.py [--size 128] [--repeats 3] [--threads 1]

Builds a small synthetic clot cohort (field of view --size mm; center A's 2 x 0.9 x 0.9 mm voxels), runs the stock
nnUNetv2_plan_and_preprocess and nnunet_ext_plan_upattllstm (Table-4 template: patch 12 x 256 x 256 clipped to
the data), builds both networks from their plans with seeded random weights (timing does not depend on training)
and times nnUNetPredictor.predict_single_npy_array on one raw test case: preprocessing, sliding window
(step 0.5, Gaussian weighting, no mirroring) and resampling back. The two models alternate at every repeat so
that drift on a shared machine hits both; medians are reported. torch runs with --threads threads (default 1:
on a machine shared with other jobs, 2 threads made single forward passes vary 40-fold).
Writes benchmarks/results/upattllstm_inference.{json,md}.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATASET, DATASET_NAME = "502", "Dataset502_SyntheticClot"
MODELS = {"nnU-Net 3d_fullres": "nnUNetPlans", "UpAttLLSTM": "nnUNetPlans_UpAttLLSTM"}


def _prepare(workspace, size: int, seed: int) -> str:
    from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
    spec = ClotCohortSpec(train_per_center=1, test_per_center=1, size=size, seed=seed)
    raw = os.path.join(workspace.paths["nnUNet_raw"], spec.folder_name)
    if not os.path.isfile(os.path.join(workspace.paths["nnUNet_preprocessed"], DATASET_NAME,
                                       "nnUNetPlans_UpAttLLSTM.json")):
        write_clot_cohort(spec, workspace.paths["nnUNet_raw"], overwrite=True, progress=False)
        workspace.plan_and_preprocess(int(DATASET))
        workspace.run(["nnunet_ext_plan_upattllstm", "-d", DATASET], f"plan_upattllstm_{DATASET}")
    return raw


def _predictor(plans: dict, dataset_json: dict, seed: int):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_ext_plans.upattllstm_plans import build_network
    torch.manual_seed(seed)
    network = build_network(plans, dataset_json).eval()
    manager = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, manager, manager.get_configuration("3d_fullres"),
                                    [network.state_dict()], dataset_json, "benchmark", None)
    return predictor, network


def _training_step_seconds(run: dict, seed: int) -> float:
    """Seconds of one training step of run's network on a random batch of its training shape."""
    network = run["predictor"].network
    batch = torch.randn(run["training_batch"][0], 3, *run["training_batch"][1:],
                        generator=torch.Generator().manual_seed(seed))
    target = (batch[:, :1] > 2).long()[:, 0]
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-6, momentum=0.99, nesterov=True)
    network.train()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    output = network(batch)
    torch.nn.functional.cross_entropy(output[0] if isinstance(output, (list, tuple)) else output, target).backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    network.eval()
    return seconds


def _tiles(shape, patch) -> int:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    padded = [max(s, p) for s, p in zip(shape, patch)]
    return int(np.prod([len(steps) for steps in compute_steps_for_sliding_window(padded, patch, 0.5)]))


def _load_models(folder: str, dataset_json: dict, seed: int) -> Dict[str, dict]:
    """Each model of MODELS built from its plans with seeded random weights, in a predictor, with what the report
    says of it."""
    from nnunet_ext.networks.clot_networks import count_parameters
    runs = {}
    for name, plans_name in MODELS.items():
        plans = json.load(open(os.path.join(folder, f"{plans_name}.json")))
        predictor, network = _predictor(plans, dataset_json, seed)
        configuration = plans["configurations"]["3d_fullres"]
        crops = configuration.get("crops_per_image", 1)
        training_patch = configuration.get("training_patch_size", configuration["patch_size"])
        runs[name] = {"predictor": predictor, "parameters": count_parameters(network),
                      "patch_size": configuration["patch_size"], "training_batch": [crops, *training_patch],
                      "network_class": configuration["architecture"]["network_class_name"]}
    return runs


def _time_alternating(runs: Dict[str, dict], repeats: int, key: str, measure: Callable[[dict], float]) -> None:
    """runs[name][key]: `repeats` measurements of each model, the models alternating in order at every repeat so
    that drift on a shared machine hits both."""
    for repeat in range(repeats):
        for name in (list(runs) if repeat % 2 == 0 else list(reversed(runs))):
            runs[name].setdefault(key, []).append(measure(runs[name]))


def _seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _tile_seconds(run: dict, seed: int) -> float:
    """The network alone on one tile: cost per voxel, apart from how many tiles the sliding window needs."""
    tile = torch.randn(1, 3, *run["patch_size"], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return _seconds(lambda: run["predictor"].network(tile))


def _model_result(run: dict, preprocessed_shape: Sequence[int]) -> dict:
    tile_seconds = statistics.median(run["tile_seconds"])
    step_seconds = statistics.median(run["step_seconds"])
    return {"network_class": run["network_class"], "parameters": run["parameters"], "patch_size": run["patch_size"],
            "sliding_window_tiles": _tiles(preprocessed_shape, run["patch_size"]),
            "forward_seconds_per_tile_median": round(tile_seconds, 3),
            "forward_microseconds_per_voxel": round(1e6 * tile_seconds / np.prod(run["patch_size"]), 2),
            "training_batch": run["training_batch"], "training_step_seconds_median": round(step_seconds, 3),
            "training_microseconds_per_voxel": round(1e6 * step_seconds / np.prod(run["training_batch"]), 2),
            "seconds_per_case_median": round(statistics.median(run["seconds"]), 3),
            "seconds_per_case": [round(s, 3) for s in run["seconds"]]}


def _summary(ours: dict, stock: dict) -> dict:
    """UpAttLLSTM / nnU-Net ratios."""
    def ratio(key: str, digits: int = 3) -> float:
        return round(ours[key] / stock[key], digits)
    return {"parameter_ratio": ratio("parameters", 4), "time_ratio": ratio("seconds_per_case_median"),
            "forward_cost_per_voxel_ratio": ratio("forward_microseconds_per_voxel"),
            "training_step_ratio": ratio("training_step_seconds_median"),
            "training_cost_per_voxel_ratio": ratio("training_microseconds_per_voxel"), "target_time_ratio": 0.5}


def _markdown(report: dict) -> List[str]:
    summary, seed, threads = report["summary"], report["provenance"]["seed"], report["torch_threads"]
    lines = [
        "# UpAttLLSTM vs nnU-Net 3d_fullres: parameters and CPU inference time per case",
        "",
        f"Command: `{report['provenance']['command']}` (seed {seed}); {threads} torch thread(s) on "
        f"{report['cpu_count']} CPU cores, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in report['load_average_at_end'])}.",
        f"Case {report['case']} of the synthetic clot cohort (field of view {report['field_of_view_mm']} mm), raw "
        f"{report['raw_shape_zyx']}, preprocessed {report['preprocessed_shape']}; "
        "nnUNetPredictor.predict_single_npy_array (preprocessing, sliding window with step 0.5 and Gaussian "
        "weighting, no mirroring, resampling back), random weights.",
        "",
        "| model | parameters | prediction window | tiles | forward µs per voxel | s per case (median) | all repeats "
        "| training batch (one image) | s per training step | training µs per voxel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in report["models"].items():
        lines.append(f"| {name} | {result['parameters']:,} | {result['patch_size']} | "
                     f"{result['sliding_window_tiles']} | {result['forward_microseconds_per_voxel']:.2f} | "
                     f"{result['seconds_per_case_median']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in result['seconds_per_case'])} | {result['training_batch']} | "
                     f"{result['training_step_seconds_median']:.2f} | {result['training_microseconds_per_voxel']:.2f} |")
    lines += ["", f"UpAttLLSTM / nnU-Net: parameters {summary['parameter_ratio']:.4f}, time per case "
                  f"{summary['time_ratio']:.3f} (target <= {summary['target_time_ratio']}), network cost per voxel "
                  f"{summary['forward_cost_per_voxel_ratio']:.3f}, training step {summary['training_step_ratio']:.3f} "
                  f"(per voxel {summary['training_cost_per_voxel_ratio']:.3f}).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="field of view of the synthetic cases in mm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="reused between runs (keeps the preprocessed cohort)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "upattllstm_inference"))
    args = parser.parse_args()

    from nnunet_ext.experiments.records import write_table_files
    from nnunet_ext.experiments.workspace import Workspace
    workspace = Workspace(args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_clot_bench_"))
    raw = _prepare(workspace, args.size, args.seed)
    os.environ.update({**workspace.paths, "nnUNet_compile": "false", "nnUNet_n_proc_DA": "0"})
    torch.set_num_threads(args.threads)

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunet_ext.provenance import provenance

    folder = os.path.join(workspace.paths["nnUNet_preprocessed"], DATASET_NAME)
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
    case = "clot_A_001"
    image, properties = SimpleITKIO().read_images(
        [os.path.join(raw, "imagesTs", f"{case}_{c:04d}.nii.gz") for c in range(3)])
    runs = _load_models(folder, dataset_json, args.seed)
    # both plans share the preprocessing (same data_identifier): one preprocessed shape for the tile counts
    manager = runs["UpAttLLSTM"]["predictor"].plans_manager
    preprocessed, _, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        image, None, dict(properties), manager, manager.get_configuration("3d_fullres"), dataset_json)
    _time_alternating(runs, args.repeats, "seconds",
                      lambda run: _seconds(lambda: run["predictor"].predict_single_npy_array(image, properties)))
    _time_alternating(runs, args.repeats, "tile_seconds", lambda run: _tile_seconds(run, args.seed))
    # one training step (forward, cross-entropy, backward, SGD) per batch element of each model's own training
    # batch: the crops the clot trainers take from one image (crops per image x training patch) vs one patch of
    # nnU-Net's (its batch holds `batch_size` of them; both scale linearly with the batch)
    _time_alternating(runs, args.repeats, "step_seconds", lambda run: _training_step_seconds(run, args.seed))

    results = {name: _model_result(run, preprocessed.shape[1:]) for name, run in runs.items()}
    report = {
        "benchmark": "upattllstm_inference", "case": case, "raw_shape_zyx": list(image.shape[1:]),
        "preprocessed_shape": list(preprocessed.shape[1:]), "field_of_view_mm": args.size,
        "predictor": {"tile_step_size": 0.5, "use_gaussian": True, "use_mirroring": False, "device": "cpu"},
        "torch_threads": args.threads, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_at_end": list(os.getloadavg()), "repeats": args.repeats, "models": results,
        "summary": _summary(results["UpAttLLSTM"], results["nnU-Net 3d_fullres"]),
        "provenance": provenance(seed=args.seed, command=" ".join([os.path.basename(sys.executable)] + sys.argv)),
    }
    lines = _markdown(report)
    write_table_files(args.out, lines, None, report)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
