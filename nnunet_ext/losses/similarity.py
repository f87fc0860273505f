"""Similarity of two feature maps for ModDrop++ intra-subject co-training (docs/methods.md §2).

SSIM as in the public ModDrop++ code (Gaussian window 11, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, per channel
through a grouped convolution, averaged), generalised to 2D and 3D with a separable window. The loss is
1 - SSIM rather than the code's -SSIM: the same gradient, but zero for identical features, so the term reads
as a distance and a weight of 0 switches it off exactly.

SSIM is always computed in float32 with autocast off: the variances are E[a^2] - mu^2, a difference of two
nearly equal numbers wherever a feature map is smooth, and under CUDA autocast the blurring convolutions would
run in float16 (10-bit mantissa), where that difference cancels to noise or goes negative.
"""
import torch
import torch.nn.functional as F

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return window / window.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur per channel, 'same' size, zero padding (as the reference code's padding)."""
    spatial = x.dim() - 2
    convolve = F.conv3d if spatial == 3 else F.conv2d
    channels = x.shape[1]
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = window.numel()
        kernel = window.view(1, 1, *shape).expand(channels, 1, *shape)
        padding = [0] * spatial
        padding[axis] = window.numel() // 2
        x = convolve(x, kernel, padding=padding, groups=channels)
    return x


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two [N, C, *spatial] tensors (2D or 3D); a float32 scalar, 1 for identical inputs, computed
    in float32 whatever the inputs' dtype or an enclosing autocast."""
    if a.shape != b.shape or a.dim() not in (4, 5):
        raise ValueError(f"ssim needs two [N, C, H, W(, D)] tensors of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    # autocast off for this block only; the casts are differentiable, so gradients reach half-precision inputs
    with torch.autocast(device_type=a.device.type, enabled=False):
        a, b = a.float(), b.float()
        window = _gaussian_window(window_size, sigma, a.device, torch.float32)
        mu_a, mu_b = _blur(a, window), _blur(b, window)
        var_a = _blur(a * a, window) - mu_a ** 2
        var_b = _blur(b * b, window) - mu_b ** 2
        covariance = _blur(a * b, window) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + C1) * (2 * covariance + C2)) / \
            ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))
        return ssim_map.mean()


def feature_dissimilarity(a: torch.Tensor, b: torch.Tensor, kind: str = "ssim") -> torch.Tensor:
    """0 for identical features, growing as they differ: 1 - SSIM, or the mean squared error (both in float32)."""
    if kind == "ssim":
        return 1.0 - ssim(a, b)
    if kind == "mse":
        # mse_loss autocasts to float32 on CUDA already; stated here so the two kinds behave alike everywhere
        with torch.autocast(device_type=a.device.type, enabled=False):
            return F.mse_loss(a.float(), b.float())
    raise ValueError(f"unknown similarity {kind!r}; expected 'ssim' or 'mse'")
