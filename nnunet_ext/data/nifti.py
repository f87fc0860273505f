"""Small SimpleITK helpers: numpy arrays are [z, y, x], spacings are given in that order too."""
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk


def write_image(path: str, array: np.ndarray, spacing_zyx: Sequence[float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(image, path, useCompression=True)


def read_image(path: str) -> Tuple[np.ndarray, Tuple[float, ...]]:
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def geometry_mismatch(a: sitk.Image, b: sitk.Image) -> Optional[str]:
    """What differs between the grids of two images (None if nothing): size, spacing, origin, direction."""
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} differs from {a.GetSize()}"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-5):
        return f"spacing {b.GetSpacing()} differs from {a.GetSpacing()}"
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-3):
        return f"origin {b.GetOrigin()} differs from {a.GetOrigin()}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-4):
        return f"direction {b.GetDirection()} differs from {a.GetDirection()}"
    return None
