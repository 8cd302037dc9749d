"""Batched data augmentation of handwritten characters, and AutoAugment-style policies over it.

Every operation works on a batch of images ``(n, 1, H, W)`` on any device, uint8 in [0, 255] or
float in [0, 1], with one operation and one magnitude per image, and returns a batch of the same
shape, dtype and range (uint8 results are rounded to the nearest integer). No PIL, no per-image
Python loop: the geometric operations and the elastic distortion share one ``F.affine_grid`` /
``F.grid_sample`` call (bilinear, zero padding = blank paper), the others are pooling and masking.

Randomness comes only from an explicit CPU :class:`torch.Generator`: the few random tensors an
operation needs are drawn on the CPU and moved to the images' device, so a seed gives the same
draws on every machine and device (and bit-identical images on the same device).

Operations (:data:`OPS`, index = the action's operation bin) at magnitude fraction ``f``:

=============  ==================================================================================
identity       the image unchanged
rotate         rotation by ``+-30 f`` degrees (random sign per image)
shear_x        horizontal shear ``x' = x + s y``, ``s = +-0.3 f``
shear_y        vertical shear ``y' = y + s x``, ``s = +-0.3 f``
translate_x    horizontal shift by ``+-5 f`` pixels
translate_y    vertical shift by ``+-5 f`` pixels
scale          zoom by a factor ``1.3 ** (+-f)`` about the centre (0.77 to 1.3)
elastic        elastic distortion (Simard et al. 2003): a Gaussian random displacement field
               smoothed with a Gaussian of sigma 4 pixels, rescaled to an RMS displacement of
               ``1.5 f`` pixels per image
thicken        stroke thickening: ``x + f (dilate(x) - x)``, dilation = 3x3 max-pool
thin           stroke thinning: ``x + f (erode(x) - x)``, erosion = 3x3 min-pool
erase          random erasing: a ``round(14 f)``-pixel square (at least 1), uniformly placed inside
               the image, set to 0 (blank paper)
noise          additive Gaussian noise of standard deviation ``0.3 f`` (intensity in [0, 1]), clipped
=============  ==================================================================================

Magnitude bins ``m = 0 .. N_MAGNITUDES - 1`` (10) give ``f = (m + 1) / N_MAGNITUDES`` (0.1 .. 1), so
every bin of a non-identity operation changes the image; probability bins ``b = 0 ..
N_PROBABILITIES - 1`` (11) give probabilities ``b / 10`` (0, 0.1, .. 1).

Policies (AutoAugment, Cubuk et al. 2019): a policy is an ``(S, 3)`` integer tensor, one row per
sub-policy ``(operation, magnitude bin, probability bin)``. Each augmented image picks one
sub-policy uniformly at random and applies its operation with its probability (else stays as it
is): :func:`apply_policy`. AutoAugment's sub-policies chain two operations; here a sub-policy is
one operation, so every augmented image differs from its original by one transformation.

Random draws, in order (part of the protocol): :func:`sample_policy` draws the sub-policy index
``randint(S, (n,))`` then ``rand(n)`` against its probability; :func:`apply_ops` then, for the
images with a non-identity operation only (in batch order), draws one sign per image
(``randint(2, (k,))``), the elastic fields ``randn(k_elastic, 2, H, W)``, the erasing positions
``rand(k_erase, 2)`` and the noise ``randn(k_noise, 1, H, W)``. Images left unchanged draw
nothing, so applying the operations to a batch or only to its changed images gives the same result.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

OPS = (
    "identity",
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "scale",
    "elastic",
    "thicken",
    "thin",
    "erase",
    "noise",
)
IDENTITY = 0
N_MAGNITUDES = 10
N_PROBABILITIES = 11

#: The magnitude of each operation at the top bin (f = 1), in the units of the module's table.
MAX_MAGNITUDE = {
    "rotate": 30.0,  # degrees
    "shear_x": 0.3,  # shear factor
    "shear_y": 0.3,
    "translate_x": 5.0,  # pixels
    "translate_y": 5.0,
    "scale": 1.3,  # zoom factor
    "elastic": 1.5,  # RMS displacement, pixels
    "thicken": 1.0,  # blend weight towards the 3x3 dilation
    "thin": 1.0,  # blend weight towards the 3x3 erosion
    "erase": 14.0,  # square side, pixels
    "noise": 0.3,  # standard deviation, intensity in [0, 1]
}
ELASTIC_SIGMA = 4.0

_GEOMETRIC = tuple(OPS.index(name) for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "scale"))
_WARPS = (*_GEOMETRIC, OPS.index("elastic"))


def magnitude_fraction(bins: torch.Tensor) -> torch.Tensor:
    """Magnitude bins ``0 .. N_MAGNITUDES - 1`` as fractions ``(m + 1) / N_MAGNITUDES`` of the maximum."""
    return (bins.to(torch.float32) + 1) / N_MAGNITUDES


def probability(bins: torch.Tensor) -> torch.Tensor:
    """Probability bins ``0 .. N_PROBABILITIES - 1`` as probabilities ``b / (N_PROBABILITIES - 1)``."""
    return bins.to(torch.float32) / (N_PROBABILITIES - 1)


def check_policy(policy: torch.Tensor) -> torch.Tensor:
    """Check an ``(S, 3)`` integer policy tensor (bins in range) and return it as int64 on the CPU."""
    if policy.dtype.is_floating_point or policy.dtype.is_complex or policy.dtype == torch.bool:
        raise ValueError(f"a policy is an integer tensor (S, 3), got dtype {policy.dtype}")
    if policy.dim() != 2 or policy.shape[1] != 3 or policy.shape[0] < 1:
        raise ValueError(f"a policy has shape (S, 3) with S >= 1, got {tuple(policy.shape)}")
    policy = policy.detach().to("cpu", torch.int64)
    for column, (what, size) in enumerate(
        (("operation", len(OPS)), ("magnitude bin", N_MAGNITUDES), ("probability bin", N_PROBABILITIES))
    ):
        bad = ((policy[:, column] < 0) | (policy[:, column] >= size)).nonzero().flatten()
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"sub-policy {row} has {what} {int(policy[row, column])}, outside 0..{size - 1}"
                + (f" (operations: {', '.join(OPS)})" if column == 0 else "")
            )
    return policy


def policy_from_action(action: Any, sub_policies: int) -> torch.Tensor:
    """Check a flat action ``[op, magnitude bin, probability bin] * sub_policies`` (what the MetaAugment envs'
    ``MultiDiscrete`` spaces hold) and return it as an ``(S, 3)`` int64 policy; ``ValueError`` saying what is wrong."""
    shape = (3 * sub_policies,)
    what = f"an augmentation policy: {sub_policies} x (operation, magnitude bin, probability bin)"
    array = action.detach().cpu().numpy() if isinstance(action, torch.Tensor) else np.asarray(action)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"expected {what}, integers of shape {shape}; got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"expected {what}, integers of shape {shape}; got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("the augmentation policy contains NaN or inf; expected integer bins")
        if (array != np.round(array)).any():
            raise ValueError("the augmentation policy has non-integer entries; expected integer bins")
    return check_policy(torch.from_numpy(array.astype(np.int64)).view(sub_policies, 3))


def sample_policy(policy: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(operation, magnitude bin)`` of ``n`` images augmented by ``policy`` (CPU int64).

    Each image picks a sub-policy uniformly and keeps its operation with its probability, else gets
    the identity (magnitude bin 0).
    """
    policy = check_policy(policy)
    chosen = policy[torch.randint(len(policy), (n,), generator=generator)]
    applied = torch.rand(n, generator=generator) < probability(chosen[:, 2])
    ops = torch.where(applied, chosen[:, 0], IDENTITY)
    magnitudes = torch.where(applied, chosen[:, 1], 0)
    return ops, magnitudes


def apply_policy(images: torch.Tensor, policy: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One augmented copy of every image ``(n, 1, H, W)`` drawn from ``policy`` (see the module doc)."""
    ops, magnitudes = sample_policy(policy, images.shape[0], generator)
    return apply_ops(images, ops, magnitudes, generator)


def apply_ops(
    images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Apply operation ``ops[i]`` at magnitude bin ``magnitudes[i]`` to image ``i`` of ``(n, C, H, W)``.

    Returns a new tensor of the same shape, dtype and device; identity images are copied exactly.
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (n, C, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}")
    n = images.shape[0]
    ops, magnitudes = ops.to("cpu", torch.int64).flatten(), magnitudes.to("cpu", torch.int64).flatten()
    if len(ops) != n or len(magnitudes) != n:
        raise ValueError(f"need one operation and magnitude per image ({n}), got {len(ops)} and {len(magnitudes)}")
    if ((ops < 0) | (ops >= len(OPS))).any() or ((magnitudes < 0) | (magnitudes >= N_MAGNITUDES)).any():
        raise ValueError(f"operations must lie in 0..{len(OPS) - 1} and magnitude bins in 0..{N_MAGNITUDES - 1}")
    out = images.clone()
    active = (ops != IDENTITY).nonzero().flatten()
    if len(active) == 0:
        return out
    ops, fractions = ops[active], magnitude_fraction(magnitudes[active])
    signs = (torch.randint(2, (len(active),), generator=generator) * 2 - 1).to(torch.float32)
    device = images.device
    x = images[active.to(device)]
    x = x.to(torch.float32) / 255 if images.dtype == torch.uint8 else x.to(torch.float32)

    elastic = ops == OPS.index("elastic")
    elastic_fields = torch.randn(int(elastic.sum()), 2, *x.shape[-2:], generator=generator)
    erase = ops == OPS.index("erase")
    erase_positions = torch.rand(int(erase.sum()), 2, generator=generator)
    noise = ops == OPS.index("noise")
    noise_values = torch.randn(int(noise.sum()), *x.shape[1:], generator=generator)

    warp = torch.isin(ops, torch.tensor(_WARPS))
    if warp.any():
        rows = warp.nonzero().flatten()
        fields = torch.zeros(len(rows), 2, *x.shape[-2:])
        fields[elastic[rows]] = elastic_fields
        x[rows.to(device)] = _warp(x[rows.to(device)], ops[rows], fractions[rows] * signs[rows], fields.to(device))
    for name, pool_sign in (("thicken", 1.0), ("thin", -1.0)):
        rows = (ops == OPS.index(name)).nonzero().flatten()
        if len(rows):
            selected, weight = x[rows.to(device)], fractions[rows].to(device).view(-1, 1, 1, 1)
            pooled = pool_sign * F.max_pool2d(pool_sign * selected, 3, stride=1, padding=1)
            x[rows.to(device)] = selected + weight * (pooled - selected)
    if erase.any():
        rows = erase.nonzero().flatten()
        x[rows.to(device)] = _erase(x[rows.to(device)], fractions[rows], erase_positions)
    if noise.any():
        rows = noise.nonzero().flatten()
        std = (MAX_MAGNITUDE["noise"] * fractions[rows]).view(-1, 1, 1, 1)
        x[rows.to(device)] = x[rows.to(device)] + (std * noise_values).to(device)

    x = x.clamp(0, 1)
    out[active.to(device)] = (x * 255).round().to(torch.uint8) if images.dtype == torch.uint8 else x.to(images.dtype)
    return out


def _warp(x: torch.Tensor, ops: torch.Tensor, amounts: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """One ``grid_sample`` for the geometric and elastic operations; ``amounts`` = signed fractions ``+-f``.

    The output pixel at normalised position ``p`` reads the input at ``A p + t + d(p)``: the inverse of
    the named transform (``A``, ``t``) plus the elastic displacement ``d`` (zero for the others).
    """
    n, _, height, width = x.shape

    def where(name: str, value: torch.Tensor, default: float) -> torch.Tensor:
        return torch.where(ops == OPS.index(name), value, torch.full_like(value, default))

    angle = where("rotate", amounts * math.radians(MAX_MAGNITUDE["rotate"]), 0.0)
    shear_x = where("shear_x", amounts * MAX_MAGNITUDE["shear_x"], 0.0)
    shear_y = where("shear_y", amounts * MAX_MAGNITUDE["shear_y"], 0.0)
    shift_x = where("translate_x", amounts * MAX_MAGNITUDE["translate_x"], 0.0) * 2 / width
    shift_y = where("translate_y", amounts * MAX_MAGNITUDE["translate_y"], 0.0) * 2 / height
    inverse_zoom = where("scale", MAX_MAGNITUDE["scale"] ** -amounts, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # A = zoom^-1 * R(angle) @ [[1, shear_x], [shear_y, 1]]: at most one factor differs from the identity
    theta = torch.stack(
        [
            torch.stack([cos - sin * shear_y, cos * shear_x - sin, -shift_x], dim=1),
            torch.stack([sin + cos * shear_y, sin * shear_x + cos, -shift_y], dim=1),
        ],
        dim=1,
    )
    theta[:, :, :2] *= inverse_zoom.view(-1, 1, 1)

    elastic = ops == OPS.index("elastic")
    if elastic.any():
        fields[elastic.to(fields.device)] = _smooth_field(
            fields[elastic.to(fields.device)], amounts[elastic].abs().to(fields.device)
        )
    grid = F.affine_grid(theta.to(x.device), [n, 1, height, width], align_corners=False)
    scale = torch.tensor([2 / width, 2 / height], device=x.device)  # pixels -> normalised coordinates
    grid = grid + fields.permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _smooth_field(noise: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Gaussian-smoothed displacement fields ``(k, 2, H, W)`` in pixels, RMS ``MAX * f`` per image."""
    radius = int(math.ceil(2 * ELASTIC_SIGMA))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=noise.device)
    kernel = torch.exp(-(offsets**2) / (2 * ELASTIC_SIGMA**2))
    kernel = kernel / kernel.sum()
    k, channels, height, width = noise.shape
    field = noise.reshape(k * channels, 1, height, width)
    field = F.conv2d(F.pad(field, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    field = field.view(k, channels, height, width)
    rms = field.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    return field / rms * (MAX_MAGNITUDE["elastic"] * fractions).view(-1, 1, 1, 1)


def _erase(x: torch.Tensor, fractions: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Set a ``round(14 f)``-pixel square (at least 1) at uniform positions ``(k, 2)`` in [0, 1) to 0."""
    height, width = x.shape[-2:]
    sides = (MAX_MAGNITUDE["erase"] * fractions).round().clamp(1, min(height, width)).to(torch.int64)
    top = (positions[:, 0] * (height - sides + 1)).floor().to(torch.int64)
    left = (positions[:, 1] * (width - sides + 1)).floor().to(torch.int64)
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows >= top[:, None]) & (rows < (top + sides)[:, None])  # (k, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + sides)[:, None])  # (k, W)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None].to(x.device)
    return x.masked_fill(mask, 0.0)
