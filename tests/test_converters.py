"""ISLES'22 and JHU-style converters on small fake trees written here, checked against nnU-Net's own verifier."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunet_ext.cli.convert import main as convert_main
from nnunet_ext.data.converters import JhuLayout, convert_isles22, convert_jhu

SHAPE = (6, 8, 10)  # [z, y, x]
SPACING = (1.0, 1.2, 2.0)  # SimpleITK order [x, y, z]


def _image(path, value=1.0, shape=SHAPE, spacing=SPACING, origin=(0.0, 0.0, 0.0), array=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = sitk.GetImageFromArray(np.full(shape, value, np.float32) if array is None else array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def _lesion(values=(1,)):
    mask = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        mask[1 + 2 * i, 2:4, 2:4] = v
    return mask


def _isles_case(root, number, skip=(), flair_name="FLAIR", adc_shape=SHAPE, mask=None):
    subject, session = f"sub-strokecase{number:04d}", "ses-0001"
    stem = f"{subject}_{session}"
    files = {"dwi": os.path.join(root, subject, session, "dwi", f"{stem}_dwi.nii.gz"),
             "adc": os.path.join(root, subject, session, "dwi", f"{stem}_adc.nii.gz"),
             "flair": os.path.join(root, subject, session, "anat", f"{stem}_{flair_name}.nii.gz"),
             "msk": os.path.join(root, "derivatives", subject, session, f"{stem}_msk.nii.gz")}
    if "dwi" not in skip:
        _image(files["dwi"], 100.0 + number)
    if "adc" not in skip:
        _image(files["adc"], 800.0, shape=adc_shape)
    if "flair" not in skip:  # FLAIR on its own, coarser and larger grid covering the DWI field of view
        _image(files["flair"], 50.0, shape=(9, 6, 8), spacing=(3.0, 2.0, 1.5), origin=(-1.0, -1.0, -1.0))
    if "msk" not in skip:
        _image(files["msk"], array=_lesion() if mask is None else mask)


@pytest.fixture
def isles_tree(tmp_path):
    root = tmp_path / "download" / "ISLES-2022"
    _isles_case(root, 1, mask=_lesion((1, 2)))    # fine; mask values 1 and 2 are both lesion
    _isles_case(root, 2, skip=("msk",))           # no mask
    _isles_case(root, 3, adc_shape=(6, 8, 11))    # ADC on another grid
    _isles_case(root, 4, skip=("adc",))           # no ADC
    _isles_case(root, 5, flair_name="flair")      # fine; lower-case FLAIR as in some copies
    _image(root / "derivatives" / "sub-strokecase0009" / "ses-0001" / "sub-strokecase0009_ses-0001_msk.nii.gz",
           array=_lesion())                       # mask without images
    return tmp_path / "download", tmp_path / "nnUNet_raw"


def _read(path):
    return sitk.ReadImage(str(path))


def test_isles22_writes_dwi_adc_and_reports_every_skipped_case(isles_tree):
    source, raw = isles_tree
    report = convert_isles22(str(source), str(raw), 502)
    folder = raw / "Dataset502_ISLES22"
    assert report.dataset_folder == str(folder) and report.converted == ["strokecase0001", "strokecase0005"]
    reasons = {s["case"]: s["reason"] for s in report.skipped}
    assert reasons["strokecase0009"] == "mask in derivatives but no image folder"
    assert reasons["strokecase0002"].startswith("missing mask (expected ") and reasons["strokecase0002"].endswith(
        "derivatives/sub-strokecase0002/ses-0001/sub-strokecase0002_ses-0001_msk.nii.gz)")
    assert reasons["strokecase0003"] == "ADC grid differs from DWI: size (11, 8, 6) differs from (10, 8, 6)"
    assert reasons["strokecase0004"].startswith("missing ADC (expected ")
    assert len(reasons) == 4

    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "DWI", "1": "ADC"}
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    assert dataset["droppable_channels"] == ["ADC"]
    assert json.loads((folder / "case_centers.json").read_text()) == {"strokecase0001": "ISLES",
                                                                      "strokecase0005": "ISLES"}
    stored = json.loads((folder / "conversion_report.json").read_text())
    assert stored["converted"] == report.converted and stored["skipped"] == report.skipped
    assert sorted(os.listdir(folder / "imagesTr")) == ["strokecase0001_0000.nii.gz", "strokecase0001_0001.nii.gz",
                                                       "strokecase0005_0000.nii.gz", "strokecase0005_0001.nii.gz"]
    label = _read(folder / "labelsTr" / "strokecase0001.nii.gz")
    assert label.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(label), (_lesion((1, 2)) > 0).astype(np.uint8))
    dwi = _read(folder / "imagesTr" / "strokecase0005_0000.nii.gz")
    assert sitk.GetArrayFromImage(dwi).mean() == pytest.approx(105.0)
    assert dwi.GetSpacing() == pytest.approx(SPACING) and label.GetSpacing() == pytest.approx(SPACING)
    assert [p for p in os.listdir(raw) if p.startswith(".")] == []  # no staging folder left
    verify_dataset_integrity(str(folder), num_processes=1)           # nnU-Net accepts it


def test_isles22_flair_is_resampled_onto_the_dwi_grid(isles_tree):
    source, raw = isles_tree
    report = convert_isles22(str(source), str(raw), 503, "ISLES22flair", with_flair=True)
    folder = raw / "Dataset503_ISLES22flair"
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "DWI", "1": "ADC", "2": "FLAIR"}
    assert report.converted == ["strokecase0001", "strokecase0005"]
    flair = _read(folder / "imagesTr" / "strokecase0001_0002.nii.gz")
    dwi = _read(folder / "imagesTr" / "strokecase0001_0000.nii.gz")
    assert flair.GetSize() == dwi.GetSize() and flair.GetSpacing() == dwi.GetSpacing()
    assert flair.GetOrigin() == dwi.GetOrigin()
    # the FLAIR field of view covers the DWI one, so a constant FLAIR stays constant after interpolation
    assert np.allclose(sitk.GetArrayFromImage(flair), 50.0)


def test_isles22_cli_prints_the_skipped_cases(isles_tree, capsys):
    source, raw = isles_tree
    convert_main(["isles22", str(source / "ISLES-2022"), "-d", "504", "--raw", str(raw), "--quiet"])
    out = capsys.readouterr().out
    assert "skipped strokecase0004: missing ADC" in out
    assert "2 case(s) converted, 4 skipped" in out
    report = json.loads((raw / "Dataset504_ISLES22" / "conversion_report.json").read_text())
    assert report["provenance"]["command"].startswith("nnunet_ext_convert isles22 ")


@pytest.mark.parametrize("attempt,error,message", [
    (lambda s, r: convert_isles22(str(s / "ISLES-2022" / "sub-strokecase0002"), str(r), 505),
     ValueError, "does not look like ISLES'22"),
    (lambda s, r: convert_isles22(str(s), str(r), 1000), ValueError, "dataset id must be in 1..999"),
    (lambda s, r: convert_isles22(str(s), str(r), 505, name="ISLES_22"), ValueError, "dataset name must be"),
    (lambda s, r: convert_isles22(str(s), str(r), 505, droppable_channels=("B0",)), ValueError,
     "droppable channel 'B0' is not a channel of this dataset (DWI, ADC)"),
])
def test_isles22_bad_arguments_write_nothing(isles_tree, attempt, error, message):
    source, raw = isles_tree
    with pytest.raises(error) as stop:
        attempt(source, raw)
    assert message in str(stop.value)
    assert not raw.exists() or os.listdir(raw) == []


def test_a_conversion_without_usable_cases_fails_and_leaves_nothing(tmp_path):
    root = tmp_path / "ISLES-2022"
    _isles_case(root, 2, skip=("msk",))
    with pytest.raises(ValueError) as stop:
        convert_isles22(str(root), str(tmp_path / "raw"), 506)
    assert "no case could be converted (1 skipped: strokecase0002: missing mask" in str(stop.value)
    assert os.listdir(tmp_path / "raw") == []


def test_existing_datasets_are_protected(isles_tree):
    source, raw = isles_tree
    convert_isles22(str(source), str(raw), 507)
    with pytest.raises(FileExistsError, match="Dataset507_ISLES22 exists; pass overwrite=True"):
        convert_isles22(str(source), str(raw), 507)
    with pytest.raises(ValueError, match="dataset id 507 is already used by .*Dataset507_ISLES22"):
        convert_isles22(str(source), str(raw), 507, name="Other")
    report = convert_isles22(str(source), str(raw), 507, overwrite=True)
    assert report.converted == ["strokecase0001", "strokecase0005"]
    assert sorted(os.listdir(raw)) == ["Dataset507_ISLES22"]


def _jhu_subject(root, subject, parts=("DWI", "ADC", "B0", "mask"), pattern="{subject}_{part}.nii.gz"):
    for part in parts:
        path = os.path.join(root, subject, pattern.format(subject=subject, part=part))
        if part == "mask":
            _image(path, array=_lesion((3,)))
        else:
            _image(path, {"DWI": 10.0, "ADC": 20.0, "B0": 30.0}[part])


@pytest.fixture
def jhu_tree(tmp_path):
    root = tmp_path / "jhu"
    _jhu_subject(root, "S01")
    _jhu_subject(root, "S02", parts=("DWI", "ADC", "mask"))   # no B0
    _jhu_subject(root, "S03", parts=("DWI", "ADC", "B0"))     # no mask
    return root, tmp_path / "raw"


def test_jhu_missing_b0_becomes_a_zero_image_by_default(jhu_tree):
    root, raw = jhu_tree
    report = convert_jhu(str(root), str(raw), 510)
    folder = raw / "Dataset510_JHU"
    assert report.converted == ["S01", "S02"]
    assert [s["case"] for s in report.skipped] == ["S03"] and report.skipped[0]["reason"].startswith("missing mask")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "DWI", "1": "ADC", "2": "B0"} and dataset["numTraining"] == 2
    b0 = _read(folder / "imagesTr" / "S02_0002.nii.gz")
    assert not sitk.GetArrayFromImage(b0).any()
    assert b0.GetSize() == _read(folder / "imagesTr" / "S02_0000.nii.gz").GetSize()
    assert sitk.GetArrayFromImage(_read(folder / "imagesTr" / "S01_0002.nii.gz")).mean() == pytest.approx(30.0)
    assert set(np.unique(sitk.GetArrayFromImage(_read(folder / "labelsTr" / "S01.nii.gz")))) == {0, 1}
    assert json.loads((folder / "case_centers.json").read_text()) == {"S01": "JHU", "S02": "JHU"}
    verify_dataset_integrity(str(folder), num_processes=1)


def test_jhu_skip_option_patterns_and_center_map(tmp_path):
    root = tmp_path / "jhu"
    pattern = "{subject}-{part}.nii"
    for subject in ("P1", "P2", "P3"):
        _jhu_subject(root, subject, parts=("DWI", "ADC", "mask") if subject == "P2" else ("DWI", "ADC", "B0", "mask"),
                     pattern=pattern)
    centers = tmp_path / "centers.json"
    centers.write_text(json.dumps({"P1": "JHU-1", "P2": "JHU-2"}))
    patterns = [f"--{part.lower()}-pattern={{subject}}-{part}.nii" for part in ("DWI", "ADC", "B0", "mask")]
    convert_main(["jhu", str(root), "-d", "511", "--raw", str(tmp_path / "raw"), "--missing-b0", "skip",
                  "--centers", str(centers), "--quiet", *patterns])
    folder = tmp_path / "raw" / "Dataset511_JHU"
    report = json.loads((folder / "conversion_report.json").read_text())
    assert report["converted"] == ["P1"]
    assert {s["case"]: s["reason"] for s in report["skipped"]} == {
        "P3": "not in the subject->center map",
        "P2": f"missing B0 (expected {root / 'P2' / 'P2-B0.nii'})"}
    assert json.loads((folder / "case_centers.json").read_text()) == {"P1": "JHU-1"}


def test_jhu_layout_patterns_must_name_the_subject():
    with pytest.raises(ValueError, match="dwi pattern 'DWI.nii.gz' must contain {subject}"):
        JhuLayout(dwi="DWI.nii.gz")


def test_isles22_rebuild_b0_adds_a_physical_b0_channel(isles_tree):
    source, raw = isles_tree
    sidecar = source / "ISLES-2022" / "sub-strokecase0005" / "ses-0001" / "dwi" / "sub-strokecase0005_ses-0001_dwi.json"
    sidecar.write_text(json.dumps({"DiffusionBValue": 800}))  # case 5 states its b; case 1 does not
    convert_main(["isles22", str(source / "ISLES-2022"), "-d", "508", "--raw", str(raw), "--quiet", "--rebuild-b0",
                  "--flair"])
    folder = raw / "Dataset508_ISLES22"
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "DWI", "1": "ADC", "2": "B0", "3": "FLAIR"}
    # ADC 800 in 1e-6 mm²/s (as ISLES'22 writes it): B0 = DWI · exp(b · 0.8e-3)
    for case, dwi, b in (("strokecase0001", 101.0, 1000.0), ("strokecase0005", 105.0, 800.0)):
        b0 = sitk.GetArrayFromImage(_read(folder / "imagesTr" / f"{case}_0002.nii.gz"))
        assert b0 == pytest.approx(np.full(SHAPE, dwi * np.exp(b * 0.8e-3)), rel=1e-5)
        assert _read(folder / "imagesTr" / f"{case}_0002.nii.gz").GetSpacing() == pytest.approx(SPACING)
        assert sitk.GetArrayFromImage(_read(folder / "imagesTr" / f"{case}_0003.nii.gz")).max() == pytest.approx(50)
    report = json.loads((folder / "conversion_report.json").read_text())
    records = report["settings"]["b0_rebuilt"]
    assert sorted(records) == ["strokecase0001", "strokecase0005"]
    assert records["strokecase0001"]["b_value_from"] == "default"
    assert records["strokecase0005"]["b_value"] == 800.0 and records["strokecase0005"]["b_value_from"] == \
        "sidecar of sub-strokecase0005_ses-0001_dwi.nii.gz"
    assert records["strokecase0001"]["adc_unit"] == "1e-6 mm2/s"
    verify_dataset_integrity(str(folder), num_processes=1)


def test_isles22_rebuild_b0_with_an_adc_of_no_known_unit_skips_the_case_saying_why(tmp_path):
    root = tmp_path / "ISLES-2022"
    _isles_case(root, 1)
    _isles_case(root, 2)
    _image(root / "sub-strokecase0002" / "ses-0001" / "dwi" / "sub-strokecase0002_ses-0001_adc.nii.gz", 40.0)
    report = convert_isles22(str(root), str(tmp_path / "raw"), 509, rebuild_b0=True)
    assert report.converted == ["strokecase0001"]
    assert report.skipped == [{"case": "strokecase0002", "reason": "B0 cannot be rebuilt: the ADC map's tissue "
                               "median is 40, which fits no known unit (a tissue median of 0.0002-0.0035 mm2/s, or "
                               "that x 1e3 or x 1e6); pass --adc-unit (mm2/s, 1e-3 mm2/s, 1e-6 mm2/s) if the map is "
                               "right"}]


# ---------------------------------------------------------------------------------------------- issue 26

def test_two_isles_subjects_that_map_to_one_case_id_are_refused_naming_both(tmp_path):
    """sub-x/ses-0002 (of a subject with two sessions) and sub-x_ses-0002/ses-0001 both became x_ses-0002: the
    second overwrote the first's label and numTraining counted 8 for 7 cases."""
    root = tmp_path / "ISLES-2022"
    for subject, session in (("sub-x", "ses-0001"), ("sub-x", "ses-0002"), ("sub-x_ses-0002", "ses-0001")):
        stem = f"{subject}_{session}"
        _image(root / subject / session / "dwi" / f"{stem}_dwi.nii.gz", 100.0)
        _image(root / subject / session / "dwi" / f"{stem}_adc.nii.gz", 800.0)
        _image(root / "derivatives" / subject / session / f"{stem}_msk.nii.gz", array=_lesion())
    with pytest.raises(ValueError, match="two sources map to case id 'x_ses-0002': .*sub-x/ses-0002/dwi and "
                                         ".*sub-x_ses-0002/ses-0001/dwi"):
        convert_isles22(str(root), str(tmp_path / "raw"), 520)
    assert not (tmp_path / "raw").exists() or os.listdir(tmp_path / "raw") == []


def test_a_case_id_that_is_no_safe_file_name_is_refused(tmp_path):
    root = tmp_path / "ISLES-2022"
    stem = "sub-.._ses-0001"
    _image(root / "sub-.." / "ses-0001" / "dwi" / f"{stem}_dwi.nii.gz", 100.0)
    _image(root / "sub-.." / "ses-0001" / "dwi" / f"{stem}_adc.nii.gz", 800.0)
    with pytest.raises(ValueError, match="case id '..' .* is not a safe file name"):
        convert_isles22(str(root), str(tmp_path / "raw"), 520)


@pytest.mark.parametrize("pattern", ["{subject}_{0}.nii.gz", "{x}.nii.gz", "{subject}_{.nii.gz", "{subject}{x}"])
def test_jhu_patterns_with_other_fields_are_refused_not_a_traceback(tmp_path, pattern, capsys):
    with pytest.raises(ValueError, match="must contain {subject} \\(and no other {...} field\\)"):
        JhuLayout(dwi=pattern)
    root = tmp_path / "jhu"
    _jhu_subject(root, "S01")
    with pytest.raises(SystemExit) as stop:
        convert_main(["jhu", str(root), "-d", "512", "--raw", str(tmp_path / "raw"), "--dwi-pattern", pattern])
    assert "error: dwi pattern" in str(stop.value.code)


def test_a_file_that_is_not_gzip_is_named_not_quoted(tmp_path):
    """A link to a text file named like an image: the message names the file, never its first bytes."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    root = tmp_path / "jhu"
    _jhu_subject(root, "S01")
    _jhu_subject(root, "S02")
    os.remove(root / "S02" / "S02_DWI.nii.gz")
    os.symlink(secret, root / "S02" / "S02_DWI.nii.gz")
    report = convert_jhu(str(root), str(tmp_path / "raw"), 513)
    reason = {s["case"]: s["reason"] for s in report.skipped}["S02"]
    assert f"{root / 'S02' / 'S02_DWI.nii.gz'}: not a gzip-compressed file" in reason
    assert "b'ro'" not in reason and "root:" not in reason  # gzip's own message quoted the first bytes


def _limited_writes(limit_bytes):
    """preexec_fn: writes beyond `limit_bytes` fail (EFBIG) as on a full disk, without the SIGXFSZ that would
    kill the process; SimpleITK then prints 'wrote only N of M bytes' and returns without an error."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_a_full_disk_during_conversion_is_an_error_and_publishes_nothing(tmp_path):
    import subprocess
    import sys
    root = tmp_path / "jhu"
    for subject in ("S01", "S02"):
        _jhu_subject(root, subject)
        _image(root / subject / f"{subject}_DWI.nii.gz",
               array=np.random.default_rng(0).normal(100, 10, (30, 40, 50)).astype(np.float32), shape=None)
        for part, value in (("ADC", 800.0), ("B0", 300.0)):
            _image(root / subject / f"{subject}_{part}.nii.gz", value, shape=(30, 40, 50))
        _image(root / subject / f"{subject}_mask.nii.gz", array=np.zeros((30, 40, 50), np.uint8))
    result = subprocess.run([sys.executable, "-m", "nnunet_ext.cli.convert", "jhu", str(root), "-d", "514", "--raw",
                             str(tmp_path / "raw"), "--quiet"], capture_output=True, text=True,
                            preexec_fn=_limited_writes(30_000), timeout=300)
    assert result.returncode != 0 and "was not written whole (disk full?)" in result.stderr
    assert "imagesTr/S01_0000.nii.gz" in result.stderr
    assert [e for e in os.listdir(tmp_path / "raw") if not e.startswith(".")] == []  # nothing published
