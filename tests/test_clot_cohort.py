"""The synthetic clot cohort: a valid nnU-Net raw dataset, seeded, atomic, and a clot that needs every channel."""
import json
import os

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext.cli import generate_cohort
from nnunet_ext.data import clot_cohort
from nnunet_ext.data.clot_cohort import CLOT_CENTERS, ClotCohortSpec, generate_clot_case, write_clot_cohort

SMALL = ClotCohortSpec(train_per_center=2, test_per_center=1, size=32, seed=5)
PROFILES = {c.name: c for c in CLOT_CENTERS}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_clot_cohort(SMALL, str(tmp_path_factory.mktemp("raw")), progress=False)


def _read(path):
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def test_layout_dataset_json_and_case_files(cohort):
    assert os.path.basename(cohort) == "Dataset502_SyntheticClot"
    dataset = json.load(open(os.path.join(cohort, "dataset.json")))
    assert dataset["channel_names"] == {"0": "DWI", "1": "SWAN", "2": "PHASE"}
    assert dataset["labels"] == {"background": 0, "clot": 1}
    assert dataset["numTraining"] == 6 and dataset["droppable_channels"] == ["PHASE"]
    centers = json.load(open(os.path.join(cohort, "case_centers.json")))
    occlusions = json.load(open(os.path.join(cohort, "occlusions.json")))
    assert sorted(set(centers.values())) == ["A", "B", "C"] and len(centers) == 9 and set(occlusions) == set(centers)
    for case, center in centers.items():
        split = "Tr" if not case.endswith("_002") else "Ts"
        assert occlusions[case]["center"] == center and occlusions[case]["split"] == split
        assert occlusions[case]["occlusion"] in ("proximal", "distal")
        assert occlusions[case]["hemisphere"] in ("+x", "-x")
        assert (occlusions[case]["vessel"] == "M1") == (occlusions[case]["occlusion"] == "proximal")
        for channel in range(3):
            assert os.path.isfile(os.path.join(cohort, f"images{split}", f"{case}_{channel:04d}.nii.gz"))
        clot, spacing = _read(os.path.join(cohort, f"labels{split}", f"{case}.nii.gz"))
        lesion, lesion_spacing = _read(os.path.join(cohort, f"labels{split}_lesion", f"{case}.nii.gz"))
        assert clot.shape == lesion.shape and spacing == lesion_spacing
        assert spacing == pytest.approx(tuple(reversed(PROFILES[center].spacing_zyx)))
        assert set(np.unique(clot)) == {0, 1} and set(np.unique(lesion)) == {0, 1}
        assert not (clot.astype(bool) & lesion.astype(bool)).any()
    cohort_json = json.load(open(os.path.join(cohort, "cohort.json")))
    assert cohort_json["kind"] == "clot" and cohort_json["provenance"]["seed"] == 5


def test_center_c_has_swi_and_a_black_phase(cohort):
    for center in "ABC":
        phase, _ = _read(os.path.join(cohort, "imagesTr", f"clot_{center}_000_0002.nii.gz"))
        assert (np.count_nonzero(phase) == 0) == (center == "C")
    assert PROFILES["C"].susceptibility == "SWI" and PROFILES["A"].susceptibility == "SWAN"


@pytest.mark.parametrize("seed", range(4))
def test_clot_is_dark_paramagnetic_and_its_lesion_bright_downstream_on_its_side(seed):
    case = generate_clot_case(PROFILES["A"], 48, np.random.default_rng(seed))
    dwi, swan, phase = case.images
    clot, lesion = case.clot.astype(bool), case.lesion.astype(bool)
    tissue = (dwi > 0) & ~clot & ~lesion
    assert clot.sum() >= 10 and lesion.sum() >= 20
    assert np.median(swan[clot]) < 0.6 * np.median(swan[tissue])
    assert np.median(phase[clot]) > 0.4
    assert np.median(dwi[lesion]) > 1.6 * np.median(dwi[tissue])
    middle_x = np.argwhere(dwi > 0)[:, 2].mean()
    side = 1 if case.occlusion["hemisphere"] == "+x" else -1
    assert np.all((np.argwhere(lesion)[:, 2] - middle_x) * side > 0)
    assert np.all((np.argwhere(clot)[:, 2] - middle_x) * side > 0)


@pytest.mark.parametrize("seed", range(4))
def test_mimics_dark_in_swan_are_told_apart_by_phase_sign_or_shape(seed):
    """Calcifications: dark, diamagnetic. Veins: dark, paramagnetic like the clot, but much longer."""
    case = generate_clot_case(PROFILES["A"], 48, np.random.default_rng(seed))
    dwi, swan, phase = case.images
    clot = case.clot.astype(bool)
    tissue_level = np.median(swan[dwi > 0])
    dark = (swan < 0.6 * tissue_level) & (dwi > 0) & ~ndimage.binary_dilation(clot, iterations=2)
    components = cc3d.connected_components(dark.astype(np.uint8), connectivity=26)
    clot_extent = max(np.ptp(np.argwhere(clot) * PROFILES["A"].spacing_zyx, axis=0))
    diamagnetic, long_paramagnetic = 0, 0
    for label in range(1, components.max() + 1):
        voxels = components == label
        if voxels.sum() < 4:
            continue
        extent = max(np.ptp(np.argwhere(voxels) * PROFILES["A"].spacing_zyx, axis=0))
        if np.median(phase[voxels]) < -0.3:
            diamagnetic += 1
        elif np.median(phase[voxels]) > 0.3 and extent > 2 * clot_extent:
            long_paramagnetic += 1
    assert long_paramagnetic >= 1 and diamagnetic >= 1


def test_proximal_occlusions_infarct_more_than_distal_ones():
    sizes = {}
    for kind, fraction in (("proximal", 1.0), ("distal", 0.0)):
        cases = [generate_clot_case(PROFILES["B"], 40, np.random.default_rng(seed), fraction) for seed in range(5)]
        assert {c.occlusion["occlusion"] for c in cases} == {kind}
        sizes[kind] = np.median([c.lesion.sum() for c in cases])
    assert sizes["proximal"] > 2 * sizes["distal"]


def test_same_seed_same_cohort(cohort, tmp_path):
    again = write_clot_cohort(SMALL, str(tmp_path), progress=False)
    for name in ("imagesTr/clot_B_001_0001.nii.gz", "labelsTr_lesion/clot_A_000.nii.gz"):
        assert np.array_equal(_read(os.path.join(cohort, name))[0], _read(os.path.join(again, name))[0])
    assert json.load(open(os.path.join(cohort, "occlusions.json"))) == \
        json.load(open(os.path.join(again, "occlusions.json")))


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, array, spacing):
        calls.append(path)
        if len(calls) == 7:
            raise OSError("disk full")

    monkeypatch.setattr(clot_cohort, "write_image", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_clot_cohort(SMALL, str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


def test_existing_dataset_is_not_overwritten_without_asking(cohort):
    with pytest.raises(FileExistsError, match="overwrite"):
        write_clot_cohort(SMALL, os.path.dirname(cohort), progress=False)


def test_cli_kind_clot_and_stroke_stays_the_default(tmp_path, capsys):
    common = ["--raw", str(tmp_path), "--train-per-center", "1", "--test-per-center", "0", "--size", "24"]
    generate_cohort.main(["--kind", "clot", *common, "--centers", "C", "--proximal-fraction", "1"])
    clot = tmp_path / "Dataset502_SyntheticClot"
    assert json.load(open(clot / "occlusions.json"))["clot_C_000"]["occlusion"] == "proximal"
    generate_cohort.main([*common, "--centers", "A"])
    stroke = json.load(open(tmp_path / "Dataset501_SyntheticStroke" / "dataset.json"))
    assert stroke["channel_names"] == {"0": "DWI", "1": "ADC", "2": "B0"}
    with pytest.raises(SystemExit, match="--kind clot only"):
        generate_cohort.main([*common, "--proximal-fraction", "0.5"])


@pytest.mark.parametrize("kwargs,message", [(dict(size=8), "size"), (dict(centers=("A", "D")), "centers"),
                                            (dict(droppable_channels=("ADC",)), "unknown modality 'ADC'"),
                                            (dict(proximal_fraction=1.5), "proximal_fraction"),
                                            (dict(dataset_id=0), "dataset_id")])
def test_bad_cohort_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClotCohortSpec(**kwargs)
