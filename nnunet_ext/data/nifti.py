"""Small SimpleITK helpers: numpy arrays are [z, y, x], spacings are given in that order too.

`read_image_checked` is how the project reads every image it is given (prediction inputs, converter sources,
evaluated labels). SimpleITK alone is not enough: it reads a `.nii.gz` whose gzip stream ends early, or a
`.nii` cut short, without an error (the missing voxels become zeros), and its NIfTI reader turns NaN and
±Inf voxels into 0. So a gzip stream is read to its end first (the gzip module checks the end marker, CRC
and length), and a NIfTI file's voxels are also read as stored with nibabel.
"""
import gzip
import os
import stat
import zlib
from typing import Optional, Sequence

import nibabel
import numpy as np
import SimpleITK as sitk

class ImageFileError(ValueError):
    """An image file that is incomplete, unreadable or holds non-finite voxels; the message names the file."""


def write_image(path: str, array: np.ndarray, spacing_zyx: Sequence[float]) -> None:
    """Write a [z, y, x] array as an image, verified (write_image_verified)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    write_image_verified(image, path)


def write_image_verified(image: sitk.Image, path: str) -> None:
    """sitk.WriteImage, then the file read back whole and compared: SimpleITK does not raise when the disk fills
    (it prints 'wrote only N of M bytes' and returns), so a write is only trusted once it reads back equal."""
    sitk.WriteImage(image, path, useCompression=path.endswith(".gz"))
    try:
        written = read_image_checked(path, require_finite=False)
    except (ImageFileError, RuntimeError) as error:
        raise ImageFileError(f"{path} was not written whole (disk full?): {error}") from error
    if not np.array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(image), equal_nan=True) \
            or geometry_mismatch(written, image):
        raise ImageFileError(f"{path} does not read back as written (disk full?)")


def resample_onto(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """`image` resampled (linear, 0 outside) onto `reference`'s grid, in physical space."""
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, image.GetPixelID())


def _read_gzip_whole(path: str) -> bytes:
    """The decompressed content, read to the end of the stream (where the gzip module checks the end marker,
    CRC and length)."""
    with open(path, "rb") as f:
        compressed = f.read()
    try:
        return gzip.decompress(compressed)  # one call: several times faster than reading gzip.open in chunks
    except gzip.BadGzipFile:  # its message quotes the file's first bytes: name the file, not its content
        raise ImageFileError(f"{path}: not a gzip-compressed file (a .gz image must be)") from None
    except (EOFError, zlib.error) as error:
        raise ImageFileError(f"{path}: incomplete or corrupt gzip stream ({error}); the file was probably cut "
                             f"short by a copy or download") from None


def _is_nifti(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def _nifti_voxels(path: str, content: Optional[bytes]) -> Optional[np.ndarray]:
    """The voxels of a NIfTI file as stored, when they matter: floating point (NaN and Inf survive here) or an
    uncompressed file (nibabel checks that it holds all of them). None for an integer .nii.gz, which the gzip
    check already proved whole and which cannot hold a non-finite value. `content`: the decompressed .nii.gz,
    so that it is not decompressed again."""
    try:
        if content is None:
            image = nibabel.load(path)
        else:
            single_file = nibabel.Nifti2Image if content[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") \
                else nibabel.Nifti1Image  # sizeof_hdr 540: NIfTI-2
            image = single_file.from_bytes(content)
            if image.get_data_dtype().kind not in "fc":
                return None
        return np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises OSError, EOFError, ValueError, its own errors, ...
        raise ImageFileError(f"{path}: incomplete or unreadable NIfTI file ({error})") from None


# nnU-Net's z-score normalisation squares the intensities in float32: a finite value above this (1.8e19) makes it
# overflow to inf, and the case is predicted from garbage without an error (a voxel of 1e30: Dice 0.93 -> 0.13)
FLOAT32_SQUARE_LIMIT = float(np.sqrt(np.finfo(np.float32).max))


def non_finite_problem(voxels: np.ndarray) -> Optional[str]:
    """'3 NaN and 1 infinite voxel(s)' for an array with non-finite values, '2 voxel(s) with |value| > 1.8e+19
    (their square overflows float32)' for values nnU-Net's normalisation cannot square; None otherwise."""
    if voxels.dtype.kind not in "fc":
        return None
    finite = np.isfinite(voxels)
    if finite.all():
        huge = int(np.count_nonzero(np.abs(voxels) > FLOAT32_SQUARE_LIMIT))
        if huge:
            return (f"{huge} voxel(s) with |value| > {FLOAT32_SQUARE_LIMIT:.2g} (their square overflows float32, "
                    f"which nnU-Net's normalisation computes)")
        return None
    nan = int(np.count_nonzero(np.isnan(voxels)))
    infinite = int(finite.size - np.count_nonzero(finite)) - nan
    parts = ([f"{nan} NaN"] if nan else []) + ([f"{infinite} infinite"] if infinite else [])
    return " and ".join(parts) + " voxel(s)"


def check_regular_file(path: str) -> None:
    """ImageFileError unless `path` is (or links to) a regular file: opening a FIFO blocks, a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageFileError(f"{path}: no such file") from None
    except OSError as error:
        raise ImageFileError(f"{path}: cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise ImageFileError(f"{path}: {kind}, not a regular file")


def read_image_checked(path: str, require_finite: bool = True) -> sitk.Image:
    """The SimpleITK image at `path`, once the file is known to be whole and, if `require_finite`, to hold no
    NaN or ±Inf voxel (nor one whose square overflows float32). Raises ImageFileError naming the file otherwise
    (also for what SimpleITK cannot read, and for a path that is not a regular file: a FIFO would block forever)."""
    check_regular_file(path)
    content = _read_gzip_whole(path) if path.lower().endswith(".gz") else None
    voxels = _nifti_voxels(path, content) if _is_nifti(path) else None
    del content  # SimpleITK reads the file itself (its geometry conventions are the project's)
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as error:
        raise ImageFileError(f"{path}: unreadable ({str(error).strip().splitlines()[-1].strip()})") from None
    if require_finite:
        # NIfTI: the stored voxels (SimpleITK has replaced non-finite ones); other formats keep them
        problem = non_finite_problem(voxels if voxels is not None else sitk.GetArrayViewFromImage(image))
        if problem:
            raise ImageFileError(f"{path}: {problem}; expected finite values")
    return image


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
