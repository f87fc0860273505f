"""Attention building blocks of the clot networks: ViT-style cross-attention between DWI and the susceptibility
images, and the Up block that brings its coarse output back to full resolution (docs/methods.md §3).

Blocks take `conv_op` (and `norm_op`, `nonlin` where they normalise) like dynamic-network-architectures' blocks;
the token grid is N-dimensional, so a block works on 2D slices (the paper's use) as on 3D sub-volumes.
"""
import math
from typing import Literal, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, get_matching_dropout
from torch import nn
from torch.nn.modules.conv import _ConvNd

UPSAMPLE_MODES = ("nearest", "linear")
_LINEAR_MODE_BY_DIMS = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample_to(x: torch.Tensor, size: Sequence[int], mode: str = "nearest") -> torch.Tensor:
    """Resize feature maps x [B, C, *spatial] to `size` ('nearest', or 'linear' in every spatial axis)."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}; expected one of {', '.join(UPSAMPLE_MODES)}")
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=_LINEAR_MODE_BY_DIMS[x.ndim - 2], align_corners=False)


def upsample_tokens(tokens: torch.Tensor, grid: Sequence[int], factor: int) -> torch.Tensor:
    """Up_r of Eq. (10): repeat every non-class token [B, 1 + prod(grid), D] over the factor^d tokens of the finer
    grid it covers; the class token (first) is kept once."""
    if factor == 1:
        return tokens
    batch, _, dim = tokens.shape
    patches = tokens[:, 1:].transpose(1, 2).reshape(batch, dim, *grid)
    for axis in range(2, patches.ndim):
        patches = patches.repeat_interleave(factor, dim=axis)
    return torch.cat([tokens[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


def _integer_factor(coarse: Sequence[int], fine: Sequence[int]) -> Optional[int]:
    """r if fine == r * coarse in every axis (one r), else None."""
    factors = {f // c for c, f in zip(coarse, fine) if c > 0 and f % c == 0}
    if len(factors) != 1 or any(f % c for c, f in zip(coarse, fine)):
        return None
    return factors.pop()


def conv_of_nearest_upsampling(x: torch.Tensor, weight: torch.Tensor, factor: int) -> torch.Tensor:
    """conv2d(Up_nearest(x, factor), weight, padding=k // 2) without building the upsampled map.

    Nearest upsampling is a transposed convolution with a factor x factor box of ones at stride `factor`, so the
    two compose into one transposed convolution whose kernel is the k x k kernel summed over that box
    ((k + factor - 1)^2 taps at stride `factor`: ~(1 + (factor - 1)/k)^2 / factor^2 of the direct cost). Same
    zero padding at the borders, so the result equals the direct computation up to float rounding. 2D only.
    """
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"expected a 2D input and kernel, got shapes {tuple(x.shape)} and {tuple(weight.shape)}")
    kernel = weight.shape[-1]
    if weight.shape[-2] != kernel or kernel % 2 == 0:
        raise ValueError(f"expected a square odd kernel, got {tuple(weight.shape[-2:])}")
    if factor == 1:
        return F.conv2d(x, weight, padding=kernel // 2)
    length = kernel + factor - 1
    flipped = weight.flip(-2, -1)
    composed = weight.new_zeros((*weight.shape[:2], length, length))
    for dy in range(factor):
        for dx in range(factor):
            composed[..., dy:dy + kernel, dx:dx + kernel] += flipped
    # conv_transpose2d spreads x[q] over outputs p = factor * q - pad + j with weight [in, out, j]: output p
    # gets W[t - j + 2 pad] from every box offset t, i.e. the flipped kernel shifted by t
    return F.conv_transpose2d(x, composed.transpose(0, 1), stride=factor, padding=kernel // 2)


def normalised_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each attention row (last axis, rows summing to 1) divided by its maximum log(N): 1 for uniform
    attention over the keys, 0 for attention on a single key."""
    keys = weights.shape[-1]
    if keys < 2:
        return torch.zeros(weights.shape[:-1], dtype=weights.dtype, device=weights.device)
    entropy = -(weights * torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))).sum(-1)
    return entropy / math.log(keys)


class ExpELU(nn.ELU):
    """nn.ELU whose inference (no autograd, alpha = 1) uses ELU(x) = max(x, exp(min(x, 0)) - 1): PyTorch's CPU
    ELU goes through expm1, which is not vectorised (measured 4x slower than exp on the Up block's full-resolution
    maps, a tenth of the network's forward). exp(x) - 1 differs from expm1(x) by float rounding (< 1e-7) near 0.
    Training keeps nn.ELU's kernel and gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self.alpha != 1.0:
            return super().forward(x)
        negative_part = x.clamp(max=0).exp_().sub_(1)
        return torch.maximum(x, negative_part, out=x if self.inplace else negative_part)


def _token_mlp(dim: int, hidden: int) -> nn.Module:
    """One Linear(D -> D) when hidden == 0 (our default for Q, K, V), else Linear-GELU-Linear."""
    if hidden < 0:
        raise ValueError(f"MLP hidden width must be >= 0 (0: a single linear layer), got {hidden}")
    if hidden == 0:
        return nn.Linear(dim, dim)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class PatchEmbedding(nn.Module):
    """Eq. (7)-(8): conv with kernel = stride = patch size and D kernels, flattened to tokens, with a trainable
    class token prepended and a trainable position embedding added (as in ViT)."""

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, embedding_dim: int, patch_size: int,
                 image_size: Sequence[int]):
        super().__init__()
        bad = [s for s in image_size if s < patch_size or s % patch_size]
        if patch_size < 1 or bad:
            raise ValueError(f"image size {list(image_size)} must be a multiple of the patch size {patch_size} in "
                             f"every axis")
        self.patch_size = patch_size
        self.grid = tuple(int(s) // patch_size for s in image_size)
        self.projection = conv_op(input_channels, embedding_dim, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, embedding_dim))
        self.position = nn.Parameter(torch.zeros(1, math.prod(self.grid) + 1, embedding_dim))
        nn.init.trunc_normal_(self.class_token, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)

    def position_for(self, grid: Tuple[int, ...]) -> torch.Tensor:
        """The position embedding, interpolated (ViT-style) if the input's grid differs from the built one."""
        if grid == self.grid:
            return self.position
        patches = self.position[:, 1:].transpose(1, 2).reshape(1, -1, *self.grid)
        patches = upsample_to(patches, grid, "linear").flatten(2).transpose(1, 2)
        return torch.cat([self.position[:, :1], patches], dim=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        bad = [s for s in x.shape[2:] if s % self.patch_size]
        if bad:
            raise ValueError(f"input of spatial size {list(x.shape[2:])} is not a multiple of the patch size "
                             f"{self.patch_size}")
        patches = self.projection(x)
        grid = tuple(patches.shape[2:])
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        return tokens + self.position_for(grid), grid


class CrossAttention(nn.Module):
    """Single-head ViT-style cross-attention, Eq. (6)-(11): queries from the `query` image (DWI), keys and values
    from the `context` images (SWAN, PHASE); the output lives on the context's token grid.

    DWI uses larger patches (P_D = r * P_S). Eq. (10) upsamples the queries by r before attending; that equals
    attending with the N_D + 1 coarse queries and repeating the output tokens, which is what runs here (no
    N_S x N_S attention matrix). Two residual connections with trainable gains (alpha, beta; scalars initialised
    to 1, or per channel with `per_channel_gains`): O1 = Z_S + alpha * A, O = O1 + beta * MLP(LN(O1)).
    Returns O without its class token, as feature maps [B, D, *image_size / P_S]. As a consequence the DWI
    class token (and its position embedding) only reaches the dropped output class token and never gets a
    gradient; it is kept because the paper's Eq. (8) has it.
    """

    def __init__(self, conv_op: Type[_ConvNd], query_channels: int, context_channels: int, embedding_dim: int,
                 query_patch: int, context_patch: int, image_size: Sequence[int], qkv_hidden: int = 0,
                 mlp_ratio: float = 4.0, per_channel_gains: bool = False):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim (D) must be >= 1, got {embedding_dim}")
        if context_patch < 1 or query_patch % context_patch:
            raise ValueError(f"the query patch size ({query_patch}, DWI) must be a multiple of the context patch size "
                             f"({context_patch}, SWAN/PHASE)")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        self.factor = query_patch // context_patch
        self.query_embedding = PatchEmbedding(conv_op, query_channels, embedding_dim, query_patch, image_size)
        self.context_embedding = PatchEmbedding(conv_op, context_channels, embedding_dim, context_patch, image_size)
        self.query_norm = nn.LayerNorm(embedding_dim)
        self.context_norm = nn.LayerNorm(embedding_dim)
        self.query_projection = _token_mlp(embedding_dim, qkv_hidden)
        self.key_projection = _token_mlp(embedding_dim, qkv_hidden)
        self.value_projection = _token_mlp(embedding_dim, qkv_hidden)
        self.output_norm = nn.LayerNorm(embedding_dim)
        self.output_mlp = _token_mlp(embedding_dim, max(1, round(mlp_ratio * embedding_dim)))
        gain_shape = (embedding_dim,) if per_channel_gains else ()
        self.attention_gain = nn.Parameter(torch.ones(gain_shape))   # alpha
        self.mlp_gain = nn.Parameter(torch.ones(gain_shape))         # beta

    def attend(self, query_image: torch.Tensor, context_image: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, ...]]:
        """(A on the context grid with class token, Z_S, context grid): Eq. (6)-(10)."""
        if query_image.shape[2:] != context_image.shape[2:]:
            raise ValueError(f"query (DWI) and context (SWAN/PHASE) images differ in size: "
                             f"{list(query_image.shape[2:])} vs {list(context_image.shape[2:])}")
        query_tokens, query_grid = self.query_embedding(query_image)
        context_tokens, context_grid = self.context_embedding(context_image)
        context = self.context_norm(context_tokens)
        attended = F.scaled_dot_product_attention(self.query_projection(self.query_norm(query_tokens)),
                                                  self.key_projection(context), self.value_projection(context))
        return upsample_tokens(attended, query_grid, self.factor), context_tokens, context_grid

    def attention_weights(self, query_image: torch.Tensor, context_image: torch.Tensor) -> torch.Tensor:
        """softmax(Q K^T / sqrt(D)) [B, N_D + 1, N_S + 1], which `attend` never builds (diagnostics only)."""
        query_tokens, _ = self.query_embedding(query_image)
        context_tokens, _ = self.context_embedding(context_image)
        context = self.context_norm(context_tokens)
        query = self.query_projection(self.query_norm(query_tokens))
        key = self.key_projection(context)
        return torch.softmax(query @ key.transpose(1, 2) / math.sqrt(query.shape[-1]), dim=-1)

    def forward(self, query_image: torch.Tensor, context_image: torch.Tensor) -> torch.Tensor:
        attended, context_tokens, grid = self.attend(query_image, context_image)
        first = context_tokens + self.attention_gain * attended
        out = first + self.mlp_gain * self.output_mlp(self.output_norm(first))
        return out[:, 1:].transpose(1, 2).reshape(out.shape[0], out.shape[2], *grid)


class TokenUnpatchify(nn.Module):
    """The attention features back to full resolution without the Up block, learned: every token's D features
    become its P x P pixels (a transposed convolution with kernel = stride = P, the inverse of the patch
    embedding; ViT segmentation heads do the same). Nearest upsampling instead gives one value per P x P block,
    which caps the Dice a small object can reach (a 2-pixel-wide clot predicted in 4 x 4 blocks); with
    D >= P^2 x channels a token can carry its patch's pixels back.
    """

    def __init__(self, conv_transpose_op: Type[nn.Module], channels: int, patch_size: int):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch size must be >= 1, got {patch_size}")
        self.patch_size = patch_size
        self.projection = conv_transpose_op(channels, channels, patch_size, stride=patch_size)

    def forward(self, features: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        expected = [s * self.patch_size for s in features.shape[2:]]
        if list(size) != expected:
            raise ValueError(f"a token grid {list(features.shape[2:])} with patches of {self.patch_size} gives "
                             f"{expected}, not the image size {list(size)}")
        return self.projection(features)


class UpBlock(nn.Module):
    """Eq. (12): F_up = Norm(ELU(Conv_{7x7, n_up}([Up(F_att); ReLU(Conv_{3x3, 12}(SWAN, PHASE))]))).

    The full-resolution susceptibility features (12 kernels) give back the detail the patch embedding lost.
    Same padding everywhere; the output has the susceptibility images' spatial size.
    `skip_dropout` > 0 drops whole skip feature maps in training (spatial dropout, not in the paper): that
    full-resolution path is what lets the network tell a clot's width from a vein's, and learn its few training
    clots' sizes (benchmarks/results/pilots/up_spatial_da).
    """

    def __init__(self, conv_op: Type[_ConvNd], attention_channels: int, skip_input_channels: int,
                 output_channels: int, skip_features: int = 12, skip_kernel: int = 3, fuse_kernel: int = 7,
                 upsample_mode: Literal["nearest", "linear"] = "nearest",
                 norm_op: Optional[Type[nn.Module]] = nn.BatchNorm2d, norm_op_kwargs: Optional[dict] = None,
                 nonlin: Type[nn.Module] = ExpELU, nonlin_kwargs: Optional[dict] = None, skip_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= skip_dropout < 1.0:
            raise ValueError(f"skip_dropout must be in [0, 1), got {skip_dropout}")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsampling mode {upsample_mode!r}; expected one of {', '.join(UPSAMPLE_MODES)}")
        for name, kernel in (("skip_kernel", skip_kernel), ("fuse_kernel", fuse_kernel)):
            if kernel < 1 or kernel % 2 == 0:
                raise ValueError(f"{name} must be odd (same padding), got {kernel}")
        self.upsample_mode = upsample_mode
        dropout_op = get_matching_dropout(dimension=convert_conv_op_to_dim(conv_op)) if skip_dropout else None
        self.skip = ConvDropoutNormReLU(conv_op, skip_input_channels, skip_features, skip_kernel, 1, True,
                                        dropout_op=dropout_op, dropout_op_kwargs={"p": skip_dropout},
                                        nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})
        # nonlin_first: the paper applies ELU before the normalisation
        self.fuse = ConvDropoutNormReLU(conv_op, attention_channels + skip_features, output_channels, fuse_kernel, 1,
                                        True, norm_op, norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs,
                                        nonlin_first=True)
        self.output_channels = output_channels

    def forward(self, features: torch.Tensor, skip_image: torch.Tensor) -> torch.Tensor:
        factor = _integer_factor(features.shape[2:], skip_image.shape[2:])
        if self.upsample_mode != "nearest" or factor is None or factor == 1:
            upsampled = upsample_to(features, skip_image.shape[2:], self.upsample_mode)
            return self.fuse(torch.cat([upsampled, self.skip(skip_image)], dim=1))
        # Conv(Up_nearest(F)) on the coarse grid: one transposed convolution, without the r^2-times larger map
        conv = self.fuse.conv
        attention_weight = conv.weight[:, :features.shape[1]]
        fused = conv_of_nearest_upsampling(features, attention_weight, factor)
        # in place on the fresh transposed-convolution output (its backward does not need it)
        fused = fused.add_(conv._conv_forward(self.skip(skip_image), conv.weight[:, features.shape[1]:], conv.bias))
        return self.fuse.all_modules[1:](fused)  # what follows the convolution: (dropout,) ELU, norm
