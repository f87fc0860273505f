"""benchmarks/gpu_check.py in CI: its pure pieces, and its training parts in their CPU form on the tiny cohort."""
import json
import os

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def gpu_check(benchmark_module):
    return benchmark_module("gpu_check")


@pytest.fixture(scope="module")
def gpu_measurements(benchmark_module):
    return benchmark_module("gpu_measurements")


@pytest.fixture(scope="module")
def gpu_report(benchmark_module):
    return benchmark_module("gpu_report")


def test_recompiles_are_counted_from_the_recompiles_log(gpu_measurements):
    import torch._dynamo
    torch._dynamo.reset()
    double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)  # no C++ compiler needed
    with gpu_measurements.counting_recompiles() as counter:
        double(torch.ones(2))
        double(torch.ones(2))      # same guards: no recompile
        double(torch.ones(3))      # size guard fails
        double(torch.ones(3, 2))   # rank guard fails
    assert counter.count == 2
    assert all(reason.startswith("Recompiling function <lambda>") for reason in counter.reasons)
    double(torch.ones(5, 5, 5))    # after the block nothing is counted
    assert counter.count == 2
    assert gpu_measurements.recompile_limit() >= 1


def test_skipped_scaler_steps_are_counted(gpu_measurements):
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    counter = gpu_measurements.ScalerStepCounter(scaler)
    for value in (1.0, float("inf"), 1.0):  # the inf gradient makes the scaler skip that step
        optimizer.zero_grad()
        with counter.step():
            scaler.scale((parameter * value).sum()).backward()
            scaler.step(optimizer)
            scaler.update()
    assert (counter.steps, counter.skipped) == (3, 1)
    disabled = gpu_measurements.ScalerStepCounter(None)  # CPU trainers have no scaler
    with disabled.step():
        pass
    assert (disabled.steps, disabled.skipped) == (1, 0)


@pytest.mark.parametrize("a,b,dice,both_empty", [
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, True),
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0, False),
    ([1, 1, 0, 0], [0, 1, 1, 0], 0.5, False),
    ([1, 0, 0, 0], [0, 0, 0, 0], 0.0, False),
])
def test_segmentation_dice(gpu_measurements, a, b, dice, both_empty):
    result = gpu_measurements.segmentation_dice(np.array(a), np.array(b))
    assert result["dice"] == pytest.approx(dice) and result["both_empty"] == both_empty


def test_the_check_changes_the_environment_only_inside_its_block(gpu_check, monkeypatch):
    monkeypatch.setenv("nnUNet_compile", "true")
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    with gpu_check.scoped_environment({"nnUNet_compile": "false", "nnUNet_n_proc_DA": "0"}):
        assert (os.environ["nnUNet_compile"], os.environ["nnUNet_n_proc_DA"]) == ("false", "0")
        os.environ["nnUNet_compile"] = "true"  # make_trainer switches it inside the block
    assert os.environ["nnUNet_compile"] == "true" and "nnUNet_n_proc_DA" not in os.environ
    with pytest.raises(RuntimeError, match="a part failed"):
        with gpu_check.scoped_environment({"nnUNet_n_proc_DA": "0"}):
            raise RuntimeError("a part failed")
    assert "nnUNet_n_proc_DA" not in os.environ  # restored on the way out of a failure too


def test_budget_lets_a_part_start_only_with_enough_time_left(gpu_check):
    now = [100.0]
    budget = gpu_check.Budget(300, clock=lambda: now[0])
    assert budget.allows(60)
    now[0] += 250
    assert budget.left() == pytest.approx(50) and not budget.allows(60)


def test_parts_run_in_order_and_each_skip_is_named_with_its_reason(gpu_check):
    now = [0.0]
    budget = gpu_check.Budget(300, clock=lambda: now[0])
    ran = []

    def spend(label, seconds):
        def run(state, budget):
            ran.append(label)
            now[0] += seconds
        return run
    parts = [gpu_check.Part("a", spend("a", 100)),
             gpu_check.Part("b", spend("b", 150), caveat=lambda state: "b: 1 step instead of 3"),
             gpu_check.Part("c", spend("c", 0), unavailable=lambda state: "no CUDA"),
             gpu_check.Part("d", spend("d", 0)),                        # 50 s left < MIN_PART_S (60)
             gpu_check.Part("e", spend("e", 0), budgets_itself=True)]   # checks the budget per unit itself
    state = gpu_check.CheckState(gpu_check.SIZES["ci"], torch.device("cpu"), "", {}, {"skipped": []})
    gpu_check.run_parts(state, budget, parts)
    assert ran == ["a", "b", "e"]
    assert state.results["skipped"] == ["b: 1 step instead of 3", "c: no CUDA", "d: time budget"]


def _cpu_results(amp_skipped=0):
    return {"profile": {"name": "ci", "iterations": 2}, "budget_s": 450, "wall_s": 12.0, "recompile_limit": 8,
            "note": "no GPU this session", "device": {"type": "cpu", "description": "CPU (2 cores)"},
            "families": [{"dataset": "stroke", "trainer": "nnUNetTrainer", "compile": False, "median_step_s": 0.2,
                          "ratio_to_baseline": 1.0, "first_step_s": 0.3, "peak_memory_mb": None,
                          "recompiles": None, "recompile_reasons": [], "losses_finite": True}],
            "amp": {"steps": 4, "amp": False, "skipped_scaler_steps": amp_skipped, "losses_finite": True,
                    "first_loss": 1.0, "last_loss": 0.9, "final_scale": None},
            "skipped": ["prediction on CUDA vs CPU: no CUDA"],
            "provenance": {"command": "python benchmarks/gpu_check.py", "versions": {"torch": torch.__version__}}}


@pytest.mark.parametrize("foreground,dice,probability_difference,agrees", [
    ([0, 0], 1.0, 0.0, False),      # both empty: Dice 1 by the project's rule, but nothing was compared
    ([120, 118], 0.995, 0.01, True),
    ([120, 100], 0.95, 0.01, False),  # the segmentations differ
    ([120, 120], 1.0, 0.2, False),    # the same masks from other probabilities: another network
    ([120, 120], 1.0, 0.05, True),    # at the tolerance
])
def test_cuda_vs_cpu_prediction_needs_foreground_dice_and_close_probabilities(gpu_report, foreground, dice,
                                                                              probability_difference, agrees):
    prediction = {"case": "stroke_A_003", "dice": dice, "foreground_voxels": foreground,
                  "both_empty": foreground == [0, 0], "max_abs_probability_difference": probability_difference}
    assert gpu_report.prediction_agrees(prediction) is agrees
    results = {**_cpu_results(), "prediction": prediction}
    assert gpu_report.verdicts(results)["CUDA vs CPU prediction"] is agrees
    text = "\n".join(gpu_report.render_markdown(results))
    assert f"- CUDA vs CPU prediction: {'pass' if agrees else 'FAIL'}" in text
    assert ("both empty: nothing compared, a failure" in text) == (foreground == [0, 0])


def test_report_says_cpu_only_what_was_skipped_and_what_failed(gpu_report):
    results = _cpu_results()
    text = "\n".join(gpu_report.render_markdown(results))
    assert "Run on CPU only: no GPU was available (no GPU this session)" in text
    assert "- prediction on CUDA vs CPU: no CUDA" in text and "in float32 (no AMP on CPU)" in text
    assert "- ModDrop++ steps: pass" in text and "FAIL" not in text
    assert gpu_report.verdicts(_cpu_results(amp_skipped=1))["ModDrop++ steps"] is False
    compiled = _cpu_results()
    compiled["families"][0].update(compile=True, recompiles=8)  # at the limit: dynamo runs it eagerly
    assert gpu_report.verdicts(compiled)["nnUNetTrainer (compile)"] is False


@pytest.fixture
def stroke(nnunet_workspace, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", nnunet_workspace.paths["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", os.path.join(nnunet_workspace.root, "gpu_check_results"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_compile", "false")
    folder = os.path.join(nnunet_workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke")
    return json.load(open(os.path.join(folder, "nnUNetPlans_CPU.json"))), \
        json.load(open(os.path.join(folder, "dataset.json")))


def test_cpu_form_of_the_family_and_moddrop_plus_plus_parts(gpu_measurements, stroke):
    plans, dataset_json = stroke
    cpu = torch.device("cpu")
    batches = gpu_measurements.fetch_batches(gpu_measurements.make_trainer("nnUNetTrainer", plans, dataset_json, cpu, False), 1)
    row = gpu_measurements.train_family("nnUNetTrainerModDropPlusPlus_p05", plans, dataset_json, batches, cpu, True)
    assert row["compile"] is False and row["recompiles"] is None  # nnU-Net never compiles on CPU
    assert row["losses_finite"] and row["median_step_s"] > 0 and row["peak_memory_mb"] is None
    assert type(row.pop("_trainer")).__name__ == "nnUNetTrainerModDropPlusPlus_p05"
    amp = gpu_measurements.moddrop_plus_plus_amp(plans, dataset_json, batches, cpu, steps=2)
    assert amp["steps"] == 2 and amp["amp"] is False and amp["skipped_scaler_steps"] == 0 and amp["losses_finite"]
