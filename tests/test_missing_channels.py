"""Preparing a predictor input folder in which channels are absent."""
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.data.missing_channels import prepare_input_with_missing_channels

NAMES = ["DWI", "ADC", "B0"]
# .mha, not .nii.gz: SimpleITK's NIfTI reader turns NaN into 0, which would hide the NaN case
ENDING = ".mha"


def _write(folder, case, channel, array, spacing=(1.0, 1.0, 1.5), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, os.path.join(folder, f"{case}_{channel:04d}{ENDING}"))


@pytest.fixture
def complete_input(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        for channel in range(3):
            _write(folder, case, channel, rng.uniform(1, 2, (5, 6, 7)))
    return folder


def _prepare(input_folder, tmp_path, **kwargs):
    return prepare_input_with_missing_channels(str(input_folder), str(tmp_path / "out"), NAMES, ENDING, **kwargs)


def test_forced_missing_channel_becomes_zeros_with_the_same_geometry(complete_input, tmp_path):
    prepared = _prepare(complete_input, tmp_path, missing=["ADC"])
    assert prepared.cases == ["a", "b"] and prepared.zero_filled == {"a": ["ADC"], "b": ["ADC"]}
    for case in ("a", "b"):
        adc = sitk.ReadImage(str(tmp_path / "out" / f"{case}_0001{ENDING}"))
        dwi = sitk.ReadImage(str(tmp_path / "out" / f"{case}_0000{ENDING}"))
        assert np.count_nonzero(sitk.GetArrayFromImage(adc)) == 0
        assert adc.GetSize() == dwi.GetSize() and adc.GetSpacing() == dwi.GetSpacing()
        assert adc.GetOrigin() == dwi.GetOrigin() and adc.GetDirection() == dwi.GetDirection()
        # present channels are copied unchanged
        original = sitk.GetArrayFromImage(sitk.ReadImage(str(complete_input / f"{case}_0000{ENDING}")))
        assert np.array_equal(sitk.GetArrayFromImage(dwi), original)


def test_allowed_missing_file_is_zero_filled_for_that_case_only(complete_input, tmp_path):
    os.remove(complete_input / f"b_0002{ENDING}")
    prepared = _prepare(complete_input, tmp_path, allow_missing=["B0"])
    assert prepared.zero_filled == {"b": ["B0"]}
    assert len(os.listdir(tmp_path / "out")) == 6
    assert np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"a_0002{ENDING}")))) > 0


def test_missing_file_not_allowed_is_named_and_nothing_is_written(complete_input, tmp_path):
    os.remove(complete_input / f"b_0002{ENDING}")
    with pytest.raises(ValueError, match="b: missing file for B0"):
        _prepare(complete_input, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change,message", [
    (dict(array=np.ones((5, 6, 8))), "size"),
    (dict(array=np.ones((5, 6, 7)), spacing=(1.0, 1.0, 3.0)), "spacing"),
    (dict(array=np.ones((5, 6, 7)), origin=(5.0, 0.0, 0.0)), "origin"),
    (dict(array=np.full((5, 6, 7), np.nan)), "NaN"),
])
def test_inconsistent_or_broken_channels_are_refused(complete_input, tmp_path, change, message):
    _write(complete_input, "a", 2, **change)
    with pytest.raises(ValueError, match=f"a B0: .*{message}"):
        _prepare(complete_input, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(missing=["ADC2"]), "unknown modality 'ADC2'; the model has DWI, ADC, B0"),
    (dict(missing=["ADC", "ADC"]), "listed twice"),
    (dict(missing=["DWI", "ADC", "B0"]), "every channel"),
])
def test_bad_missing_names(complete_input, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _prepare(complete_input, tmp_path, **kwargs)


def test_unexpected_channel_index_is_refused(complete_input, tmp_path):
    _write(complete_input, "a", 3, np.ones((5, 6, 7)))
    with pytest.raises(ValueError, match="a_0003.mha: channel 3 but the model has 3 channels"):
        _prepare(complete_input, tmp_path)


# ---- rebuilding an absent diffusion channel by physics instead of zero-filling it ----------------------------

def _physical_case(folder, case, b0, adc_1e3, b_value=1000.0, skip=()):
    """A case whose DWI is B0 · exp(−b · ADC) exactly (ADC in 10⁻³ mm²/s, as a scanner writes it)."""
    dwi = b0 * np.exp(-b_value * adc_1e3 * 1e-3)
    for channel, array in enumerate((dwi, adc_1e3, b0)):
        if NAMES[channel] not in skip:
            _write(folder, case, channel, array)


def test_absent_b0_is_rebuilt_from_dwi_and_adc_and_the_record_says_how(tmp_path):
    from nnunet_ext.data.missing_channels import RebuildSettings
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    b0 = rng.uniform(80, 120, (5, 6, 7))
    adc = rng.uniform(0.6, 1.2, (5, 6, 7))
    _physical_case(folder, "a", b0, adc, skip=("B0",))  # a center without B0
    _physical_case(folder, "b", b0 * 2, adc)            # B0 present: kept as it is
    prepared = _prepare(folder, tmp_path, rebuild_settings=RebuildSettings(("B0",)))
    assert prepared.zero_filled == {} and list(prepared.rebuilt) == ["a"]
    rebuilt = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"a_0002{ENDING}")))
    assert rebuilt == pytest.approx(b0, rel=1e-4)
    kept = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"b_0002{ENDING}")))
    assert np.array_equal(kept, (b0 * 2).astype(np.float32))
    record = prepared.rebuilt["a"]["B0"]
    assert record["equation"] == "B0 = DWI * exp(b * ADC)" and record["b_value"] == 1000.0
    assert record["b_value_from"] == "default" and record["adc_unit"] == "1e-3 mm2/s"
    assert record["adc_unit_from"] == "tissue median"
    # --missing B0 with --rebuild B0: every case's B0 rebuilt, the files ignored; --b-value is used and said
    prepared = prepare_input_with_missing_channels(str(folder), str(tmp_path / "out2"), NAMES, ENDING,
                                                   missing=["B0"], rebuild_settings=RebuildSettings(("B0",), 500.0))
    assert sorted(prepared.rebuilt) == ["a", "b"] and prepared.rebuilt["b"]["B0"]["b_value_from"] == "--b-value"
    at_500 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out2" / f"b_0002{ENDING}")))
    assert at_500 == pytest.approx(2 * b0 * np.exp(-0.5 * adc), rel=1e-4)  # the DWI of b=1000 read as b=500


def test_rebuild_is_refused_when_what_it_needs_is_absent_and_nothing_is_written(tmp_path):
    from nnunet_ext.data.missing_channels import RebuildSettings
    folder = tmp_path / "in"
    folder.mkdir()
    ones = np.ones((4, 4, 4))
    _physical_case(folder, "a", ones * 100, ones, skip=("B0", "ADC"))
    with pytest.raises(ValueError, match="a: cannot rebuild B0: ADC absent"):
        _prepare(folder, tmp_path, allow_missing=["ADC"], rebuild_settings=RebuildSettings(("B0",)))
    with pytest.raises(ValueError, match="--rebuild B0 needs DWI and ADC, but --missing removes ADC"):
        _prepare(folder, tmp_path, missing=["ADC"], rebuild_settings=RebuildSettings(("B0",)))
    with pytest.raises(ValueError, match="--rebuild B0 needs DWI and ADC, but the model has no ADC"):
        prepare_input_with_missing_channels(str(folder), str(tmp_path / "out"), ["DWI", "B0"], ENDING,
                                            rebuild_settings=RebuildSettings(("B0",)))
    with pytest.raises(ValueError, match="--b-value must be a positive number"):
        RebuildSettings(("B0",), -5.0)
    # an ADC whose unit cannot be told: refused naming its median, and the half-written output is removed
    _write(folder, "a", 1, ones * 40)
    with pytest.raises(ValueError, match="a_0000.mha: the ADC map's tissue median is 40"):
        _prepare(folder, tmp_path, rebuild_settings=RebuildSettings(("B0",)))
    assert not os.path.exists(tmp_path / "out")
