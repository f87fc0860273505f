"""The synthetic clot cohort: a valid nnU-Net raw dataset, seeded, atomic, and a clot that needs every channel."""
import hashlib
import json
import os

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext.cli import generate_cohort
from nnunet_ext.data import clot_cohort
from nnunet_ext.data.clot_cohort import ClotCohortSpec, clot_cases, clot_contrast, generate_clot_case, write_clot_cohort
from nnunet_ext.data.clot_geometry import acquire, block_mean
from nnunet_ext.data.clot_presets import CLOT_CENTERS, CLOT_PRESETS

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
                                            (dict(dataset_id=0), "dataset_id"),
                                            (dict(preset="medium"), "unknown clot cohort preset 'medium'; presets: "
                                                                    "easy, hard")])
def test_bad_cohort_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClotCohortSpec(**kwargs)


# ---- presets ---------------------------------------------------------------------------------------------------

HARD = CLOT_PRESETS["hard"]
HARD_PROFILES = {c.name: c for c in HARD.centers}
# generate_clot_case(center, 48, default_rng(seed)) of the code before the presets existed (commit f3a25e3): sha256
# (first 16 hex) of the clot and lesion masks and the occlusion, and the sums of DWI, SWAN, PHASE. 'easy' must stay
# that cohort (the masks exactly; the sums to float tolerance, so that another scipy build does not fail it)
EASY_MASKS = {("A", 0): "03881ee1c18fdbf4", ("B", 1): "fcd4450e4f4a90ff", ("C", 2): "fe0e5ea739de5c35"}
EASY_SUMS = {("A", 0): (21208.407, 20460.197, 721.194), ("B", 1): (29168.679, 16417.701, 132.781),
             ("C", 2): (29381.805, 31684.925, 0.0)}


def _mask_digest(case):
    digest = hashlib.sha256()
    for array in (case.clot, case.lesion):
        digest.update(np.ascontiguousarray(array, np.uint8).tobytes())
    digest.update(json.dumps(case.occlusion, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("center,seed", sorted(EASY_MASKS))
def test_easy_preset_is_the_original_cohort(center, seed):
    default = generate_clot_case(PROFILES[center], 48, np.random.default_rng(seed))
    easy = generate_clot_case(CLOT_PRESETS["easy"].centers["ABC".index(center)], 48, np.random.default_rng(seed),
                              preset=CLOT_PRESETS["easy"])
    assert _mask_digest(default) == EASY_MASKS[(center, seed)]
    sums = [float(image.astype(np.float64).sum()) for image in default.images]
    assert sums == pytest.approx(EASY_SUMS[(center, seed)], rel=1e-6, abs=1e-3)
    for a, b in zip(default.images + [default.clot], easy.images + [easy.clot]):
        assert np.array_equal(a, b)
    assert ClotCohortSpec().preset == "easy" and CLOT_PRESETS["easy"].centers == CLOT_CENTERS


# the same for the `hard` preset, from the generator the Tables 5-7 reruns drew their cohort with (commit a0001c3),
# with the voxel counts of the mimics: the generator's decomposition into steps must not change a cohort
HARD_MASKS = {("A", 7): "a460644fdb8eb12f", ("B", 3): "5d0948b47a9388d7", ("C", 11): "7f6983c3556af76c"}
HARD_SUMS = {("A", 7): (19696.98, 16651.399, 581.957), ("B", 3): (18156.457, 8826.124, -349.297),
             ("C", 11): (23514.472, 28977.525, 0.0)}
HARD_STRUCTURES = {("A", 7): (150, 172, 8, 19, 74), ("B", 3): (98, 107, 9, 19, 22), ("C", 11): (183, 192, 10, 91, 43)}


@pytest.mark.parametrize("center,seed", sorted(HARD_MASKS))
def test_hard_preset_is_the_cohort_of_the_committed_tables(center, seed):
    case = generate_clot_case(HARD_PROFILES[center], 48, np.random.default_rng(seed), preset=HARD)
    assert _mask_digest(case) == HARD_MASKS[(center, seed)]
    assert [float(image.astype(np.float64).sum()) for image in case.images] == pytest.approx(
        HARD_SUMS[(center, seed)], rel=1e-6, abs=1e-2)
    assert list(case.structures) == ["arteries", "veins", "calcifications", "oblique_veins", "slice_mimics"]
    assert tuple(int(mask.sum()) for mask in case.structures.values()) == HARD_STRUCTURES[(center, seed)]


@pytest.fixture(scope="module")
def hard_cases():
    """The hard preset at the quick profile's size: 4 cases per center."""
    spec = ClotCohortSpec(preset="hard", size=48, train_per_center=3, test_per_center=1, seed=11)
    return [(HARD_PROFILES[center], case) for _, center, _, case in clot_cases(spec)]


def test_hard_clots_are_a_few_to_a_few_tens_of_voxels_on_thick_slices(hard_cases):
    sizes = [int(case.clot.sum()) for _, case in hard_cases]
    assert 4 <= min(sizes) and max(sizes) <= 60 and np.median(sizes) <= 30
    for center, case in hard_cases:
        assert center.spacing_zyx[0] >= 3 * center.spacing_zyx[1] == 3 * center.spacing_zyx[2]
        assert case.clot.mean() < 1e-3  # class imbalance: the clot is a tiny fraction of the voxels
    assert {c.susceptibility for c in HARD.centers if c.gains[2] == 0} == {"SWI"}
    assert len({c.spacing_zyx for c in HARD.centers}) == len({c.noise_std for c in HARD.centers}) == 3


def test_hard_clot_is_low_contrast_but_visible(hard_cases):
    """Every clot is darker than the adjacent tissue by over 1 noise std (and paramagnetic by over 0.5 where PHASE
    exists); typically it is darker than its vessel by 1-4 noise std: low contrast, noise of the same order."""
    vessel_cnr, tissue_cnr, easy_cnr = [], [], []
    for center, case in hard_cases:
        swan = clot_contrast(case, center.spacing_zyx, 1)
        assert swan["cnr_tissue"] > 1.0 and swan["cnr_tissue"] * np.sqrt(swan["clot_voxels"]) > 3.0
        vessel_cnr.append(swan["cnr_vessel"])
        tissue_cnr.append(swan["cnr_tissue"])
        if center.gains[2] > 0:
            assert clot_contrast(case, center.spacing_zyx, 2)["cnr_tissue"] > 0.5
    for seed in range(3):
        easy = generate_clot_case(PROFILES["A"], 48, np.random.default_rng(seed))
        easy_cnr.append(clot_contrast(easy, PROFILES["A"].spacing_zyx, 1)["cnr_vessel"])
    assert np.isfinite(vessel_cnr).mean() >= 0.75  # NaN: no artery voxel 1-5 mm from the clot
    assert 1.0 <= np.nanmedian(vessel_cnr) <= 4.0 and np.median(tissue_cnr) <= 3.5
    assert np.nanmedian(vessel_cnr) < 0.7 * np.median(easy_cnr)


def _roughness(image, brain):
    inner = np.zeros_like(brain)
    inner[:, 3:-3, 3:-3] = brain[:, 3:-3, 3:-3]
    pairs = inner[:, :, 1:] & inner[:, :, :-1]
    return np.mean(np.diff(image, axis=2)[pairs] ** 2) / image[inner].var()


def test_hard_dwi_has_a_lower_resolution_than_swan(hard_cases):
    assert HARD.acquisition_factor[0] == (2, 2, 2) and HARD.acquisition_factor[1] == HARD.acquisition_factor[2]
    for center, case in hard_cases:
        brain = case.images[0] > 0
        assert _roughness(case.images[0], brain) < 0.25 * _roughness(case.images[1], brain)
    easy = generate_clot_case(PROFILES["A"], 48, np.random.default_rng(0))
    assert _roughness(easy.images[0], easy.images[0] > 0) > 0.25 * _roughness(easy.images[1], easy.images[0] > 0)


def test_acquisition_on_a_coarse_grid():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (6, 10, 10))
    # factor 1: the image plus the noise the same stream draws (the easy preset's arithmetic)
    assert np.array_equal(acquire(image, (1, 1, 1), 0.1, np.random.default_rng(1)),
                          image + np.random.default_rng(1).normal(0, 0.1, image.shape))
    coarse = acquire(image, (2, 2, 2), 0.0, rng)
    assert coarse.shape == image.shape
    # white noise averaged over 2 x 2 x 2 blocks: 1/8 of the variance, then interpolated, not new detail
    assert coarse.var() < 0.2 * image.var()
    assert np.allclose(acquire(np.full((5, 7, 7), 3.0), (2, 2, 2), 0.0, rng), 3.0)
    assert np.array_equal(block_mean(np.arange(8.0).reshape(2, 2, 2), (2, 2, 2)), [[[3.5]]])


def test_hard_mimics_look_like_a_clot_in_one_slice_and_differ_across_slices(hard_cases):
    for center, case in hard_cases:
        oblique, single = case.structures["oblique_veins"], case.structures["slice_mimics"]
        clot = case.clot.astype(bool)
        assert not (oblique & clot).any() and not (single & clot).any()
        # oblique veins: a dot in several slices whose in-plane position moves from slice to slice
        slices = np.unique(np.argwhere(oblique)[:, 0])
        assert len(slices) >= 2
        centroids = [np.argwhere(oblique[z]).mean(axis=0) * center.spacing_zyx[1] for z in slices]
        assert max(np.linalg.norm(a - b) for a, b in zip(centroids[:-1], centroids[1:])) >= 1.0
        # single-slice segments: about as small as a clot, dark in SWAN, and absent from the neighbouring slices
        pieces = [(z, piece == label) for z in range(single.shape[0])
                  for piece in [ndimage.label(single[z])[0]] for label in range(1, piece.max() + 1)]
        assert pieces and all(footprint.sum() <= 60 for _, footprint in pieces)
        alone = [not any(single[n][footprint].any() for n in (z - 1, z + 1) if 0 <= n < single.shape[0])
                 for z, footprint in pieces]
        assert all(alone)
        tissue_level = np.median(case.images[1][(case.images[0] > 0) & ~case.lesion.astype(bool)])
        assert np.median(case.images[1][single]) < 0.9 * tissue_level


def test_hard_channels_each_carry_their_own_information(hard_cases):
    """DWI: the lesion (invisible in SWAN); PHASE: clot paramagnetic, calcification diamagnetic (both dark)."""
    for center, case in hard_cases:
        dwi, swan, phase = case.images
        lesion, clot = case.lesion.astype(bool), case.clot.astype(bool)
        # against the tissue just around the lesion (the bias field is smooth)
        around = ndimage.binary_dilation(lesion, iterations=3) & ~lesion & ~clot & (dwi > 0)
        for structure in case.structures.values():
            around &= ~structure
        assert np.median(dwi[lesion]) > 1.2 * np.median(dwi[around])
        assert abs(np.median(swan[lesion]) / np.median(swan[around]) - 1) < 0.15
        calcification = case.structures["calcifications"]
        if center.gains[2] > 0 and calcification.any():
            assert phase[calcification].mean() < 0 < phase[clot].mean()


def test_cli_preset_hard_is_recorded(tmp_path):
    common = ["--raw", str(tmp_path), "--train-per-center", "1", "--test-per-center", "0", "--size", "32"]
    generate_cohort.main(["--kind", "clot", *common, "--preset", "hard", "--centers", "A"])
    cohort_json = json.load(open(tmp_path / "Dataset502_SyntheticClot" / "cohort.json"))
    assert cohort_json["spec"]["preset"] == "hard" and cohort_json["preset"]["name"] == "hard"
    assert cohort_json["centers"][0]["spacing_zyx"] == list(HARD_PROFILES["A"].spacing_zyx)
    _, spacing = _read(str(tmp_path / "Dataset502_SyntheticClot" / "labelsTr" / "clot_A_000.nii.gz"))
    assert spacing == pytest.approx(tuple(reversed(HARD_PROFILES["A"].spacing_zyx)))
    with pytest.raises(SystemExit, match="--kind clot only"):
        generate_cohort.main([*common, "--preset", "hard"])
    with pytest.raises(SystemExit):
        generate_cohort.main(["--kind", "clot", *common, "--preset", "medium"])
