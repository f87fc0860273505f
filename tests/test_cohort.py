"""The synthetic cohort: a valid nnU-Net raw dataset, seeded, atomic, and a real missing-modality problem."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.data import synthetic_cohort
from nnunet_ext.data.synthetic_cohort import CENTERS, CohortSpec, generate_case, write_cohort

SMALL = CohortSpec(train_per_center=1, test_per_center=1, size=32, seed=3)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(SMALL, str(tmp_path_factory.mktemp("raw")), progress=False)


def _read(path):
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def test_layout_and_dataset_json(cohort):
    assert os.path.basename(cohort) == "Dataset501_SyntheticStroke"
    dataset = json.load(open(os.path.join(cohort, "dataset.json")))
    assert dataset["channel_names"] == {"0": "DWI", "1": "ADC", "2": "B0"}
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["numTraining"] == 4 and dataset["droppable_channels"] == ["ADC"]
    centers = json.load(open(os.path.join(cohort, "case_centers.json")))
    assert sorted(set(centers.values())) == ["A", "B", "C", "D"] and len(centers) == 8
    for case, center in centers.items():
        split = "Tr" if case.endswith("_000") else "Ts"
        for channel in range(3):
            assert os.path.isfile(os.path.join(cohort, f"images{split}", f"{case}_{channel:04d}.nii.gz"))
        assert os.path.isfile(os.path.join(cohort, f"labels{split}", f"{case}.nii.gz"))
    provenance = json.load(open(os.path.join(cohort, "cohort.json")))["provenance"]
    assert provenance["seed"] == 3 and "nnunetv2" in provenance["versions"]


def test_centers_differ_in_spacing_and_center_d_has_a_black_b0(cohort):
    profiles = {c.name: c for c in CENTERS}
    for center in "ABCD":
        dwi, spacing = _read(os.path.join(cohort, "imagesTr", f"stroke_{center}_000_0000.nii.gz"))
        b0, _ = _read(os.path.join(cohort, "imagesTr", f"stroke_{center}_000_0002.nii.gz"))
        label, label_spacing = _read(os.path.join(cohort, "labelsTr", f"stroke_{center}_000.nii.gz"))
        assert spacing == pytest.approx(tuple(reversed(profiles[center].spacing_zyx)))
        assert label_spacing == spacing and label.shape == dwi.shape
        assert label.sum() > 0 and set(np.unique(label)) == {0, 1}
        assert (np.count_nonzero(b0) == 0) == (center == "D")


def test_same_seed_same_cohort(cohort, tmp_path):
    again = write_cohort(SMALL, str(tmp_path), progress=False)
    for name in ("stroke_B_000_0001.nii.gz", "stroke_D_000_0000.nii.gz"):
        assert np.array_equal(_read(os.path.join(cohort, "imagesTr", name))[0],
                              _read(os.path.join(again, "imagesTr", name))[0])


def test_each_channel_carries_information_the_others_lack():
    """Bright-DWI mimics exist that only ADC (or B0) tells apart from lesions, and dark-ADC mimics that only
    DWI (or B0) tells apart."""
    center = CENTERS[0]
    seeds_with_adc_dark_mimics = 0
    for seed in range(6):
        (dwi, adc, b0), label = generate_case(center, 48, np.random.default_rng(seed))
        lesion = label.astype(bool)
        dwi_bright_mimic = (dwi > np.median(dwi[lesion])) & ~lesion
        assert dwi_bright_mimic.sum() > 20, "no DWI-bright mimic: DWI alone would suffice"
        assert np.median(adc[dwi_bright_mimic]) > 2 * np.median(adc[lesion])
        assert np.median(b0[dwi_bright_mimic]) > 1.5 * np.median(b0[lesion])
        adc_dark_mimic = (adc < np.median(adc[lesion])) & ~lesion & (dwi > 0)
        if adc_dark_mimic.sum() > 20:
            seeds_with_adc_dark_mimics += 1
            assert np.median(dwi[adc_dark_mimic]) < 0.6 * np.median(dwi[lesion])
            assert np.median(b0[adc_dark_mimic]) < 0.6 * np.median(b0[lesion])
    assert seeds_with_adc_dark_mimics >= 2


def test_existing_dataset_is_not_overwritten_without_asking(cohort):
    with pytest.raises(FileExistsError, match="overwrite"):
        write_cohort(SMALL, os.path.dirname(cohort), progress=False)


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, array, spacing):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("disk full")
        return sitk.WriteImage(sitk.GetImageFromArray(array), path)

    monkeypatch.setattr(synthetic_cohort, "write_image", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_cohort(SMALL, str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs,message", [(dict(size=8), "size"), (dict(centers=("A", "E")), "centers"),
                                            (dict(droppable_channels=("T1",)), "unknown modality 'T1'"),
                                            (dict(dataset_id=1000), "dataset_id")])
def test_bad_cohort_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CohortSpec(**kwargs)


# ---- the physically consistent cohort (CohortSpec.physics) -------------------------------------------------

def test_physical_cohort_obeys_the_equation_and_the_rebuild_recovers_b0_within_its_noise():
    from nnunet_ext.data.diffusion import ADC_UNITS, rebuild
    from nnunet_ext.data.synthetic_cohort import SCANNERS
    for center in CENTERS:
        scanner = SCANNERS[center.name]
        (dwi, adc, b0), label = generate_case(center, 40, np.random.default_rng(3), physics=True)
        brain = dwi > 0
        adc_mm2s = adc * ADC_UNITS[scanner.adc_unit]
        tissue_median = np.median(adc_mm2s[brain & ~label.astype(bool)])
        assert 0.6e-3 < tissue_median < 1.3e-3  # the unit each center writes is its scanner's
        if center.name == "D":
            assert not b0.any()  # acquired (the ADC is fitted from it), not shipped
            continue
        rebuilt, record = rebuild("B0", {"DWI": dwi, "ADC": adc}, scanner.b_value)
        assert record.adc_unit == scanner.adc_unit  # detected from the tissue median
        inside = brain & (adc_mm2s > 0) & (adc_mm2s < 3.4e-3)  # not clipped by the scanner's fit
        sigma = scanner.noise_std * scanner.gain
        # the scanner's ADC comes from these same noisy images: B0 comes back to float32 rounding where the
        # fit was not clipped, and within the noise on B0 everywhere in the brain
        assert np.abs(rebuilt - b0)[inside].max() < 1e-3 * b0[inside].max()
        assert np.median(np.abs(rebuilt - b0)[brain]) < sigma


def test_physical_cohort_keeps_the_roles_of_lesions_and_mimics():
    """Lesions: DWI-bright, ADC-dark; shine-through mimics: DWI-bright with a normal ADC and a bright B0."""
    (dwi, adc, b0), label = generate_case(CENTERS[0], 48, np.random.default_rng(1), physics=True)
    lesion = label.astype(bool)
    tissue = (dwi > 0) & ~lesion
    assert np.median(dwi[lesion]) > 1.5 * np.median(dwi[tissue])
    assert np.median(adc[lesion]) < 0.65 * np.median(adc[tissue])
    dwi_bright_mimic = (dwi > np.percentile(dwi[lesion], 25)) & ~lesion
    assert dwi_bright_mimic.sum() > 20
    assert np.median(adc[dwi_bright_mimic]) > 2 * np.median(adc[lesion])
    assert np.median(b0[dwi_bright_mimic]) > 1.5 * np.median(b0[lesion])


def test_physical_cohort_writes_sidecars_and_its_scanners_and_passes_nnunet_checks(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    spec = CohortSpec(dataset_id=520, name="Physical", train_per_center=1, test_per_center=1, size=24, physics=True)
    folder = write_cohort(spec, str(tmp_path), progress=False)
    assert json.load(open(os.path.join(folder, "imagesTs", "stroke_C_001_0000.json"))) == {"DiffusionBValue": 800.0}
    cohort = json.load(open(os.path.join(folder, "cohort.json")))
    assert cohort["spec"]["physics"] and cohort["scanners"]["B"]["adc_unit"] == "1e-6 mm2/s"
    verify_dataset_integrity(folder, num_processes=1)
    default = write_cohort(CohortSpec(dataset_id=521, train_per_center=1, test_per_center=0, size=24),
                           str(tmp_path), progress=False)
    assert "scanners" not in json.load(open(os.path.join(default, "cohort.json")))
    assert not any(f.endswith(".json") for f in os.listdir(os.path.join(default, "imagesTr")))
