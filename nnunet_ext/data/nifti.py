"""Small SimpleITK helpers: numpy arrays are [z, y, x], spacings are given in that order too."""
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk


def write_image(path: str, array: np.ndarray, spacing_zyx: Sequence[float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(image, path, useCompression=True)


def read_image(path: str) -> Tuple[np.ndarray, Tuple[float, ...]]:
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))
