"""Rebuilding a diffusion channel from the other two (DWI = B0 · exp(−b · ADC)): exact values on hand-built arrays."""
import json
import math

import numpy as np
import pytest

from nnunet_ext.data.diffusion import (ADC_MAX_MM2S, b_value_from_sidecar, detect_adc_unit, noise_floor, rebuild,
                                       rebuild_adc, rebuild_b0, rebuild_dwi)


def test_the_three_rebuilds_give_the_equation_values():
    b0 = np.array([100.0, 200.0, 50.0])
    adc = np.array([0.8e-3, 1.0e-3, 2.0e-3])  # mm²/s
    dwi = np.array([44.93289641, 73.57588823, 6.76676416])  # 100 e^-0.8, 200 e^-1, 50 e^-2 by hand
    assert rebuild_dwi(b0, adc, 1000) == pytest.approx(dwi, rel=1e-6)
    assert rebuild_b0(dwi, adc, 1000, floor=1.0) == pytest.approx(b0, rel=1e-6)
    assert rebuild_adc(dwi, b0, 1000, floors=(1.0, 1.0)) == pytest.approx(adc, rel=1e-5)
    # b = 500: the same B0 and ADC give a brighter DWI
    assert rebuild_dwi(b0[:1], adc[:1], 500)[0] == pytest.approx(100 * math.exp(-0.4), rel=1e-6)


def test_noise_floor_and_clipping_keep_the_output_finite_and_bounded():
    # 2 % of the 99th percentile of the non-zero voxels 1..100: 99 + 0.01 x (100 - 99) = 99.01 (linear), x 0.02
    assert noise_floor(np.array([0.0, 0.0] + list(range(1, 101)))) == pytest.approx(1.9802)
    assert noise_floor(np.zeros(5)) == 0.0
    # a DWI voxel at 0 inside tissue (ADC > 0) is raised to the floor before exp(): B0 = floor · e^{b·ADC}
    b0 = rebuild_b0(np.array([0.0, 10.0]), np.array([1e-3, 1e-3]), 1000, floor=2.0)
    assert b0 == pytest.approx([2.0 * math.e, 10.0 * math.e], rel=1e-6)
    # an ADC of noise (10e-3 mm²/s, or negative) is clipped to [0, ADC_MAX] before exp()
    b0 = rebuild_b0(np.array([10.0, 10.0]), np.array([10e-3, -1e-3]), 1000, floor=1.0)
    assert b0[0] == pytest.approx(10.0 * math.exp(1000 * ADC_MAX_MM2S), rel=1e-6)
    assert b0[1] == 10.0  # background (ADC <= 0): the DWI value, not extrapolated
    # ADC: B0 below its floor is background (0); a DWI at 0 would give ln(x/0): raised to the floor instead
    adc = rebuild_adc(np.array([0.0, 0.0, 50.0]), np.array([0.5, 100.0, 100.0]), 1000, floors=(1.0, 1.0))
    assert adc[0] == 0.0
    assert adc[1] == pytest.approx(ADC_MAX_MM2S)  # ln(100 / 1) / 1000 = 4.6e-3, clipped
    assert adc[2] == pytest.approx(math.log(2) / 1000, rel=1e-5)
    assert all(np.isfinite(a).all() for a in (b0, adc))


def test_adc_unit_is_detected_from_the_tissue_median_or_refused_naming_it():
    tissue = np.array([0.0, 0.7, 0.8, 0.9, 3.0])
    assert detect_adc_unit(tissue) == "1e-3 mm2/s"
    assert detect_adc_unit(tissue * 1e-3) == "mm2/s"
    assert detect_adc_unit(tissue * 1e3) == "1e-6 mm2/s"
    # the mask decides which voxels are tissue
    assert detect_adc_unit(np.array([800.0, 0.8, 0.9]), tissue=np.array([False, True, True])) == "1e-3 mm2/s"
    with pytest.raises(ValueError, match="tissue median is 50, which fits no known unit.*--adc-unit"):
        detect_adc_unit(np.array([40.0, 50.0, 60.0]))
    with pytest.raises(ValueError, match="no positive voxel"):
        detect_adc_unit(np.zeros(4))


def test_rebuild_detects_the_unit_converts_and_records_how():
    b0 = np.full((2, 3), 100.0)
    adc_1e6 = np.full((2, 3), 800.0)  # 0.8e-3 mm²/s written in 1e-6 mm²/s, as ISLES'22
    dwi = 100.0 * np.exp(-0.8) * np.ones((2, 3))
    image, record = rebuild("B0", {"DWI": dwi, "ADC": adc_1e6}, b_value=1000, b_value_from="--b-value")
    assert image == pytest.approx(b0, rel=1e-6) and image.dtype == np.float32
    assert record.adc_unit == "1e-6 mm2/s" and record.adc_unit_from == "tissue median"
    assert record.sources == ("DWI", "ADC") and record.b_value_from == "--b-value"
    assert record.noise_floor == {"DWI": pytest.approx(0.02 * dwi.max())}
    adc, record = rebuild("ADC", {"DWI": dwi, "B0": b0}, output_adc_unit="1e-6 mm2/s")
    assert adc == pytest.approx(adc_1e6, rel=1e-4) and record.adc_unit == "1e-6 mm2/s"
    adc, record = rebuild("ADC", {"DWI": dwi, "B0": b0})
    assert adc == pytest.approx(np.full((2, 3), 0.8), rel=1e-4) and record.adc_unit_from == "default"
    rebuilt_dwi, _ = rebuild("DWI", {"B0": b0, "ADC": adc_1e6 * 1e-3}, adc_unit="1e-3 mm2/s")
    assert rebuilt_dwi == pytest.approx(dwi, rel=1e-6)


def test_rebuild_refuses_what_it_cannot_do():
    ones = np.ones((2, 2))
    with pytest.raises(ValueError, match="B0 is rebuilt from DWI and ADC, but ADC is absent"):
        rebuild("B0", {"DWI": ones})
    with pytest.raises(ValueError, match="cannot rebuild 'FLAIR'"):
        rebuild("FLAIR", {"DWI": ones, "ADC": ones})
    with pytest.raises(ValueError, match="unknown ADC unit 'um2/s'"):
        rebuild("B0", {"DWI": ones, "ADC": ones}, adc_unit="um2/s")
    with pytest.raises(ValueError, match="differ in shape: DWI \\(2, 2\\), ADC \\(3,\\)"):
        rebuild_b0(ones, np.ones(3), 1000)
    with pytest.raises(ValueError, match="ADC has NaN or infinite voxels"):
        rebuild_b0(ones, np.array([[1.0, np.inf], [1.0, 1.0]]), 1000)
    with pytest.raises(ValueError, match="b-value must be a positive number"):
        rebuild_dwi(ones, ones, 0)


def test_b_value_comes_from_a_bids_sidecar_when_it_states_one(tmp_path):
    image = tmp_path / "sub-1_dwi.nii.gz"
    assert b_value_from_sidecar(str(image)) is None  # no sidecar
    (tmp_path / "sub-1_dwi.json").write_text(json.dumps({"EchoTime": 0.08}))
    assert b_value_from_sidecar(str(image)) is None  # a sidecar that does not state it
    (tmp_path / "sub-1_dwi.json").write_text(json.dumps({"DiffusionBValue": 800}))
    assert b_value_from_sidecar(str(image)) == 800.0
    (tmp_path / "sub-1_dwi.json").write_text(json.dumps({"bValue": [0, 1000]}))
    assert b_value_from_sidecar(str(image)) == 1000.0
    (tmp_path / "sub-1_dwi.json").write_text(json.dumps({"BValue": "high"}))
    with pytest.raises(ValueError, match="BValue must be a positive number"):
        b_value_from_sidecar(str(image))


# ---------------------------------------------------------------------------------------------- issue 26

@pytest.mark.parametrize("sidecar,message", [
    ({"DiffusionBValue": True}, "DiffusionBValue must be a positive number of s/mm2 .* got True"),
    (1000, "a BIDS sidecar is a JSON object .* got int 1000"),
    ({"BValue": [0, "1000"]}, "BValue must be a positive number"),
    ({"bValue": -5}, "bValue must be a positive number"),
])
def test_sidecar_values_are_checked(tmp_path, sidecar, message):
    image = tmp_path / "dwi.nii.gz"
    image.write_bytes(b"")
    (tmp_path / "dwi.json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=message):
        b_value_from_sidecar(str(image))


def test_a_negative_adc_in_the_tissue_is_refused_not_rebuilt_as_background():
    dwi = np.full((4, 10, 10), 100.0)
    adc = np.full((4, 10, 10), -0.8)  # the map's sign flipped (or another map): B0 = DWI everywhere before
    with pytest.raises(ValueError, match="the ADC map is negative in 100% of the tissue"):
        rebuild("B0", {"DWI": dwi, "ADC": adc}, 1000.0, adc_unit="1e-3 mm2/s")
    adc = np.full((4, 10, 10), 0.8)
    adc[0, 0, 0] = -0.8  # one noisy voxel in 400 stays below the 1 % limit
    b0, _ = rebuild("B0", {"DWI": dwi, "ADC": adc}, 1000.0, adc_unit="1e-3 mm2/s")
    assert b0[1, 1, 1] == pytest.approx(100.0 * np.exp(0.8))
