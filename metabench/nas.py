"""The architecture search space of MetaNAS: a chain of cells, and the functional network it describes.

An architecture is a chain of :data:`CELLS` = 4 cells on a 28x28 single-channel image, followed by a
global average pool; the embedding is the pooled output of the last cell. Each cell makes three
decisions, each from :data:`CHOICES` = 4 options, so an architecture is a vector of 12 integers in
``[0, 4)`` laid out cell by cell, ``[op_0, width_0, downsampling_0, op_1, ...]``:

* operation (:data:`OPS`): ``conv3x3``; ``sepconv3x3`` (depthwise-separable: a depthwise 3x3 then a
  pointwise 1x1 convolution); ``dilconv3x3`` (3x3 with dilation 2: a 5x5 receptive field for the cost
  of a 3x3); ``skip`` (the identity, or a 1x1 convolution when the width differs from the cell's
  input channels, the projection shortcut of ResNets). Every convolution is followed by batch norm and
  ReLU, as in Conv-4; a skip that is the identity has neither and no parameters.
* width (:data:`WIDTHS`): 16, 32, 48 or 64 output channels.
* down-sampling (:data:`DOWNSAMPLINGS`): ``maxpool`` or ``avgpool`` (2x2 after the ReLU), ``stride``
  (the cell's convolution, or the identity, with stride 2), ``none``.

Limits: with four cells a 28-pixel image is halved at most four times (28, 14, 7, 3, 1 with pools;
stride rounds up), so every vector gives a valid network, and the first cell always has parameters
(its input has 1 channel, every width is larger), so there is always something to train. The space
has ``4**12`` = 16,777,216 architectures, all distinct networks (a skip's width is meaningful: it
decides whether the cell projects). Conv-4 (Vinyals et al. 2016; Snell et al. 2017) is the point
:data:`CONV4` = 4 x (conv3x3, 64, maxpool): its last feature map is 1x1, so the global average pool
is the identity and :func:`forward` computes exactly :func:`metabench.models.conv4`'s embedding, from
the same parameter names and the same initialisation.

Networks are written functionally in the style of :mod:`metabench.models`: parameters are a dict of
tensors with a leading task dimension ``T``, inputs ``(T, n, C, H, W)``, and each task's examples go
through its own parameters (grouped convolutions). Architectures outside the search space (other
widths, other cell counts) can be built as well, e.g. for ``baselines/protonet.py``; :func:`check`
refuses the ones whose feature maps would vanish.

An architecture is written as a string of cells ``op-width-downsampling`` joined by commas (see
:func:`to_string`, :func:`parse`), e.g. Conv-4 is
``conv3x3-64-maxpool,conv3x3-64-maxpool,conv3x3-64-maxpool,conv3x3-64-maxpool``.

The continuous relaxation of the space (DARTS, Liu et al. 2019) is :func:`relaxed_forward` on
:func:`supernet_init`'s parameters: a softmax per decision; :func:`one_hot` weights give :func:`forward` of
that architecture on its :func:`subnet` parameters, and :func:`argmax` discretises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metabench.models import Params, kaiming_uniform, norm_relu

OPS = ("conv3x3", "sepconv3x3", "dilconv3x3", "skip")
WIDTHS = (16, 32, 48, 64)
DOWNSAMPLINGS = ("maxpool", "avgpool", "stride", "none")
CELLS = 4
CHOICES = 4  # options of every decision
DECISION_KINDS = ("op", "width", "downsampling")
DECISION_NAMES = tuple(f"cell{cell}.{kind}" for cell in range(CELLS) for kind in DECISION_KINDS)
N_DECISIONS = len(DECISION_NAMES)
SPACE_SIZE = CHOICES**N_DECISIONS
IMAGE_SIZE = 28


@dataclass(frozen=True)
class Cell:
    """One cell: an operation from :data:`OPS`, its output channels and its down-sampling."""

    op: str
    width: int
    downsampling: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown operation {self.op!r}; choose from {OPS}")
        if isinstance(self.width, bool) or not isinstance(self.width, int | np.integer) or self.width < 1:
            raise ValueError(f"a cell's width must be a positive integer, got {self.width!r}")
        if self.downsampling not in DOWNSAMPLINGS:
            raise ValueError(f"unknown down-sampling {self.downsampling!r}; choose from {DOWNSAMPLINGS}")


Architecture = tuple[Cell, ...]

CONV4: Architecture = (Cell("conv3x3", 64, "maxpool"),) * CELLS


def conv4(width: int = 64) -> Architecture:
    """The Conv-4 of ``width`` filters (max-pool) as an architecture (a point of the space for widths in WIDTHS)."""
    return (Cell("conv3x3", width, "maxpool"),) * CELLS


# --- the search space: decision vectors <-> architectures ---------------------------------------


def check_decision(index: int, value: Any) -> int:
    """Check one decision (``index`` in ``[0, N_DECISIONS)``) and return it as an int; ValueError if invalid."""
    name = DECISION_NAMES[index]
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size != 1 or array.ndim > 1:
        raise ValueError(f"decision {name} must be one integer in [0, {CHOICES}), got {value!r}")
    number = array.reshape(()).item()
    if not np.isfinite(number) or number != int(number) or not 0 <= number < CHOICES:
        raise ValueError(f"decision {name} must be an integer in [0, {CHOICES}), got {number!r}")
    return int(number)


def decode(decisions: Any) -> Architecture:
    """The architecture of a decision vector of length :data:`N_DECISIONS`; ValueError naming what is wrong."""
    array = np.asarray(decisions)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"an architecture is {N_DECISIONS} integers in [0, {CHOICES}), got dtype {array.dtype}")
    if array.shape != (N_DECISIONS,):
        raise ValueError(
            f"an architecture is {N_DECISIONS} integers in [0, {CHOICES}) ({', '.join(DECISION_NAMES)}), "
            f"got shape {array.shape}"
        )
    values = [check_decision(index, value) for index, value in enumerate(array)]
    return tuple(
        Cell(OPS[op], WIDTHS[width], DOWNSAMPLINGS[down])
        for op, width, down in zip(values[0::3], values[1::3], values[2::3], strict=True)
    )


def encode(architecture: Architecture) -> np.ndarray:
    """The decision vector of an architecture of the search space (inverse of :func:`decode`)."""
    if len(architecture) != CELLS:
        raise ValueError(f"the search space has {CELLS} cells, got {len(architecture)}")
    vector = []
    for cell in architecture:
        if cell.width not in WIDTHS:
            raise ValueError(f"width {cell.width} is not in the search space's widths {WIDTHS}")
        vector += [OPS.index(cell.op), WIDTHS.index(cell.width), DOWNSAMPLINGS.index(cell.downsampling)]
    return np.array(vector, dtype=np.int64)


def to_string(architecture: Architecture) -> str:
    """``"op-width-downsampling,..."``, e.g. ``"conv3x3-64-maxpool,skip-32-none,..."``."""
    return ",".join(f"{cell.op}-{cell.width}-{cell.downsampling}" for cell in architecture)


def parse(text: str) -> Architecture:
    """The architecture written by :func:`to_string`; checked with :func:`check`."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"an architecture is a string of cells 'op-width-downsampling' joined by ',', got {text!r}")
    cells = []
    for part in text.split(","):
        fields = part.strip().split("-")
        if len(fields) != 3 or not fields[1].isdigit():
            raise ValueError(f"a cell is written 'op-width-downsampling' (e.g. 'conv3x3-64-maxpool'), got {part!r}")
        cells.append(Cell(fields[0], int(fields[1]), fields[2]))
    architecture = tuple(cells)
    check(architecture)
    return architecture


# --- shapes, parameters, FLOPs -----------------------------------------------------------------


def _layers(cell: Cell, channels: int, project: bool = False) -> list[tuple[str, int, int, int, int, int]]:
    """The convolutions of a cell as (name suffix, in, out, kernel, dilation, groups); empty for an identity
    (``project``: a skip projects even when its width is its input's, as the relaxation's skip candidate does)."""
    if cell.op == "skip":
        return [] if cell.width == channels and not project else [("weight", channels, cell.width, 1, 1, 1)]
    if cell.op == "sepconv3x3":
        return [("depthwise", channels, channels, 3, 1, channels), ("weight", channels, cell.width, 1, 1, 1)]
    return [("weight", channels, cell.width, 3, 2 if cell.op == "dilconv3x3" else 1, 1)]


def _side(size: int, downsampling: str) -> int:
    """The side of a ``size`` x ``size`` feature map after ``downsampling``."""
    if downsampling == "stride":
        return (size + 1) // 2
    return size // 2 if downsampling in ("maxpool", "avgpool") else size


def shapes(architecture: Architecture, image_size: int = IMAGE_SIZE, in_channels: int = 1) -> list[tuple[int, int]]:
    """(channels, side) of each cell's output for square inputs."""
    out, size = [], image_size
    for cell in architecture:
        size = _side(size, cell.downsampling)
        out.append((cell.width, size))
    return out


def check(architecture: Architecture, image_size: int = IMAGE_SIZE, in_channels: int = 1) -> None:
    """Raise ValueError unless the architecture is a non-empty chain that keeps feature maps and has parameters."""
    if not architecture or not all(isinstance(cell, Cell) for cell in architecture):
        raise ValueError(f"an architecture is a non-empty tuple of Cells, got {architecture!r}")
    sizes = [image_size] + [size for _, size in shapes(architecture, image_size, in_channels)]
    for index, cell in enumerate(architecture):
        if cell.downsampling in ("maxpool", "avgpool") and sizes[index] < 2:
            raise ValueError(f"cell {index} pools a {sizes[index]}x{sizes[index]} feature map: too many down-samplings")
    if count_params(architecture, in_channels) == 0:
        raise ValueError("the architecture has no parameters (identities only): nothing to learn")


def init(architecture: Architecture, generator: torch.Generator, in_channels: int = 1) -> Params:
    """Fresh parameters (no task dimension): ``conv{i}.*`` and ``norm{i}.*`` for each cell ``i`` that convolves.

    Convolutions draw torch's default uniform initialisation in cell order, weight before bias, as
    :func:`metabench.models.conv4_init` does, so :data:`CONV4` gets Conv-4's parameters from the same seed.
    """
    params: Params = {}
    channels = in_channels
    for index, cell in enumerate(architecture):
        _init_cell(params, "", index, cell, channels, _layers(cell, channels), generator)
        channels = cell.width
    return params


def _init_cell(
    params: Params,
    prefix: str,
    index: int,
    cell: Cell,
    channels: int,
    layers: list[tuple[str, int, int, int, int, int]],
    generator: torch.Generator,
) -> None:
    """Draw cell ``index``'s parameters (its convolutions ``layers``, bias and batch norm) into ``params`` under
    ``prefix`` (:func:`init` and :func:`supernet_init`)."""
    for suffix, fan_in_channels, out, kernel, _, groups in layers:
        fan_in = fan_in_channels // groups * kernel * kernel
        params[f"{prefix}conv{index}.{suffix}"] = kaiming_uniform(
            (out, fan_in_channels // groups, kernel, kernel), fan_in, generator
        )
    if layers:
        fan_in = channels * (1 if cell.op in ("skip", "sepconv3x3") else 9)
        params[f"{prefix}conv{index}.bias"] = kaiming_uniform((cell.width,), fan_in, generator)
        params[f"{prefix}norm{index}.weight"] = torch.ones(cell.width)
        params[f"{prefix}norm{index}.bias"] = torch.zeros(cell.width)


def running_stats(architecture: Architecture, in_channels: int = 1) -> Params:
    """Fresh running batch-norm statistics of every cell that convolves (for non-transductive learners)."""
    stats: Params = {}
    channels = in_channels
    for index, cell in enumerate(architecture):
        if _layers(cell, channels):
            stats[f"norm{index}.mean"] = torch.zeros(cell.width)
            stats[f"norm{index}.var"] = torch.ones(cell.width)
        channels = cell.width
    return stats


def count_params(architecture: Architecture, in_channels: int = 1) -> int:
    """Number of learned parameters (convolutions and batch-norm affine terms)."""
    return sum(value.numel() for value in init(architecture, torch.Generator(), in_channels).values())


def flops(architecture: Architecture, image_size: int = IMAGE_SIZE, in_channels: int = 1) -> int:
    """Floating-point operations of one image's forward pass through the convolutions (2 per multiply-add)."""
    total, channels, size = 0, in_channels, image_size
    for cell, (_, out_size) in zip(architecture, shapes(architecture, image_size, in_channels), strict=True):
        conv_size = out_size if cell.downsampling == "stride" else size  # pools come after the convolution
        for _, fan_in_channels, out, kernel, _, groups in _layers(cell, channels):
            total += 2 * conv_size * conv_size * out * (fan_in_channels // groups) * kernel * kernel
        channels, size = cell.width, out_size
    return total


# --- the network ----------------------------------------------------------------------------


def forward(
    architecture: Architecture,
    params: Params,
    images: torch.Tensor,
    running: Params | None = None,
    training: bool = True,
    pool: bool = True,
) -> torch.Tensor:
    """Embeddings ``(T, n, width of the last cell)`` of images ``(T, n, C, H, W)``; ``params`` with task dimension T.

    Batch norm as in :func:`metabench.models.conv4`: batch statistics of the given examples, unless
    ``running`` statistics (single task only) are given, updated in place when ``training``.
    uint8 images are scaled to [0, 1]. ``pool=False`` returns the last cell's feature maps ``(T, n, C, H, W)``
    instead of their global average (Relation Networks compare maps).
    """
    tasks, n = images.shape[:2]
    if running is not None and tasks != 1:
        raise ValueError("running batch-norm statistics need a single task (shared parameters)")
    h = _grouped(images, params)
    channels = images.shape[2]
    for index, cell in enumerate(architecture):
        stride = 2 if cell.downsampling == "stride" else 1
        layers = _layers(cell, channels)
        if not layers and stride == 2:
            h = h[:, :, ::2, ::2]
        h = _convolve(h, params, index, layers, tasks, stride)
        h = _finish(h, params, running, index, training, cell.downsampling, bool(layers))
        channels = cell.width
    if not pool:
        return h.view(n, tasks, -1, *h.shape[-2:]).transpose(0, 1)
    return h.mean(dim=(2, 3)).view(n, tasks, -1).transpose(0, 1)  # global average pool


def _grouped(images: torch.Tensor, params: Params) -> torch.Tensor:
    """Images ``(T, n, C, H, W)`` as grouped maps ``(n, T*C, H, W)`` (each task a channel group), uint8 scaled to
    [0, 1] in the parameters' dtype."""
    if images.dtype == torch.uint8:
        images = images.to(next(iter(params.values())).dtype) / 255
    return images.transpose(0, 1).reshape(images.shape[1], -1, *images.shape[-2:])


def _convolve(
    h: torch.Tensor,
    params: Params,
    index: int,
    layers: list[tuple[str, int, int, int, int, int]],
    tasks: int,
    stride: int,
) -> torch.Tensor:
    """Cell ``index``'s convolutions ``layers`` on grouped maps (the first with ``stride``); ``h`` if none."""
    for layer, (suffix, _, _, kernel, dilation, groups) in enumerate(layers):
        last = layer == len(layers) - 1
        h = F.conv2d(
            h,
            params[f"conv{index}.{suffix}"].flatten(0, 1),
            params[f"conv{index}.bias"].flatten() if last else None,
            stride=stride if layer == 0 else 1,
            padding=dilation * (kernel - 1) // 2,
            dilation=dilation,
            groups=tasks * groups,
        )
    return h


def _finish(
    h: torch.Tensor,
    params: Params,
    running: Params | None,
    index: int,
    training: bool,
    downsampling: str,
    convolved: bool,
) -> torch.Tensor:
    """What follows a cell's convolutions: batch norm and ReLU if it ``convolved``, then its pool (a stride is the
    convolution's, already applied)."""
    if convolved:
        h = norm_relu(h, params, running, index, training, maxpool=downsampling == "maxpool")
    elif downsampling == "maxpool":  # an identity cell: the pool alone
        h = F.max_pool2d(h, 2)
    if downsampling == "avgpool":
        h = F.avg_pool2d(h, 2)
    return h


# --- the continuous relaxation (DARTS) ------------------------------------------------------------


def proxy_widths(width: int) -> tuple[int, ...]:
    """:data:`WIDTHS` scaled so that the widest is ``width`` (a multiple of 4): the width options of a narrower proxy
    relaxation, as DARTS searches a network of fewer channels than it trains (``proxy_widths(64)`` is WIDTHS)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < CHOICES or width % CHOICES:
        raise ValueError(f"a proxy's width must be a positive multiple of {CHOICES}, got {width!r}")
    return tuple(option * width // max(WIDTHS) for option in WIDTHS)


def supernet_init(generator: torch.Generator, widths: tuple[int, ...] = WIDTHS, in_channels: int = 1) -> Params:
    """Fresh parameters of the relaxation (no task dimension): for each cell ``i`` and operation ``op``, that
    operation at ``max(widths)`` channels from the cell's input (``in_channels`` for the first cell, else
    ``max(widths)``) as ``{op}.conv{i}.*`` and ``{op}.norm{i}.*``; the skip's is its 1x1 projection."""
    params: Params = {}
    for index in range(CELLS):
        channels = in_channels if index == 0 else max(widths)
        for op in OPS:
            cell = Cell(op, max(widths), "none")
            _init_cell(params, f"{op}.", index, cell, channels, _layers(cell, channels, project=True), generator)
    return params


def subnet(params: Params, architecture: Architecture, in_channels: int = 1) -> Params:
    """The parameters of ``architecture`` (a point of the space) inside the relaxation's ``params`` (no task
    dimension): each cell's operation sliced to its input channels and width, named as :func:`init` names them."""
    out: Params = {}
    channels = in_channels
    for index, cell in enumerate(architecture):
        layers = _layers(cell, channels)
        for suffix, fan_in_channels, width, _, _, groups in layers:
            out[f"conv{index}.{suffix}"] = params[f"{cell.op}.conv{index}.{suffix}"][
                :width, : fan_in_channels // groups
            ]
        if layers:
            for name in (f"conv{index}.bias", f"norm{index}.weight", f"norm{index}.bias"):
                out[name] = params[f"{cell.op}.{name}"][: cell.width]
        channels = cell.width
    return out


def one_hot(architecture: Architecture, widths: tuple[int, ...] = WIDTHS) -> torch.Tensor:
    """The relaxation's weights ``(CELLS, 3, CHOICES)`` that put all mass on ``architecture`` (its widths among
    ``widths``)."""
    scaled = tuple(Cell(cell.op, WIDTHS[widths.index(cell.width)], cell.downsampling) for cell in architecture)
    return F.one_hot(torch.as_tensor(encode(scaled)), CHOICES).view(CELLS, len(DECISION_KINDS), CHOICES).float()


def argmax(weights: torch.Tensor) -> np.ndarray:
    """The decision vector of the relaxation's most likely architecture: each decision's argmax (DARTS's
    discretisation), laid out as :func:`decode` reads it."""
    return weights.detach().argmax(dim=-1).flatten().cpu().numpy().astype(np.int64)


def relaxed_forward(
    params: Params, weights: torch.Tensor, images: torch.Tensor, widths: tuple[int, ...] = WIDTHS
) -> torch.Tensor:
    """Embeddings ``(T, n, max(widths))`` of images ``(T, n, C, H, W)`` by the continuous relaxation of the space.

    H. Liu, K. Simonyan, Y. Yang. DARTS: Differentiable Architecture Search. ICLR 2019. ``weights`` are
    ``(CELLS, 3, CHOICES)`` probabilities (a softmax per decision, in :data:`DECISION_KINDS` order); ``params``
    are :func:`supernet_init`'s (of the same ``widths``: :data:`WIDTHS`, or a :func:`proxy_widths`) with a task
    dimension ``T``. Each cell outputs the expectation of its 64 candidate outputs under the product of its three
    distributions, each candidate at ``max(widths)`` channels:

    * operation: every operation runs with its own parameters (:func:`supernet_init`);
    * width: a width keeps the first ``width`` channels of the operation's output and zeroes the rest, so the
      mixture over widths is a soft channel mask (a skip whose width equals its input's is the identity, the
      others its 1x1 projection, as in the space; the input's width is the previous cell's most likely one);
    * down-sampling: the candidates' sides differ (a pool halves, rounding down; a stride halves, rounding up;
      ``none`` keeps), so each is computed exactly (the stride as every other pixel of the stride-1
      convolution, batch-normalised on its own) and resampled by adaptive average pooling to the side of the
      cell's most likely down-sampling. The resolution of the network follows the argmax, and the mixture sees
      the other sides only through that resampling (``none`` resampled to a halved side is close to ``avgpool``).

    Batch norm uses the batch's statistics. With :func:`one_hot` weights of an architecture the first
    ``width`` features equal :func:`forward`'s with :func:`subnet` parameters (batch statistics) and the rest
    are zero: the relaxation contains the space.
    """
    tasks, n = images.shape[:2]
    h = _grouped(images, params)
    views = {
        op: {name[len(op) + 1 :]: value for name, value in params.items() if name.startswith(f"{op}.")} for op in OPS
    }
    masks = (torch.arange(max(widths), device=h.device) < torch.tensor(widths, device=h.device)[:, None]).to(h.dtype)
    channels = images.shape[2]  # the input's width (the previous cell's most likely one)
    for index in range(CELLS):
        op_weights, width_weights, down_weights = weights[index]
        _, width_choice, down_choice = (int(value) for value in weights[index].argmax(dim=-1))
        side = _side(h.shape[-1], DOWNSAMPLINGS[down_choice])
        identity = torch.tensor([width == channels for width in widths], device=h.device)
        out = torch.zeros(())
        for op_index, op in enumerate(OPS):
            layers = _layers(Cell(op, max(widths), "none"), h.shape[1] // tasks, project=True)
            candidates = [(width_weights * ~identity if op == "skip" else width_weights, layers)]
            if op == "skip" and identity.any():
                candidates.append((width_weights * identity, []))
            for mask_weights, candidate_layers in candidates:
                z = _convolve(h, views[op], index, candidate_layers, tasks, 1)
                mixed = _mix_downsamplings(z, views[op], index, down_weights, bool(candidate_layers), side)
                mask = (mask_weights @ masks).repeat(tasks).view(1, -1, 1, 1)
                out = out + op_weights[op_index] * mask * mixed
        h, channels = out, widths[width_choice]
    return h.mean(dim=(2, 3)).view(n, tasks, -1).transpose(0, 1)


def _mix_downsamplings(
    z: torch.Tensor, params: Params, index: int, weights: torch.Tensor, convolved: bool, side: int
) -> torch.Tensor:
    """The ``weights``-mixture of a cell's stride-1 output ``z`` finished by each down-sampling, each resampled to
    ``side`` by adaptive average pooling where its own side differs."""
    mixed = torch.zeros(())
    for down_index, down in enumerate(DOWNSAMPLINGS):
        out = _finish(z[:, :, ::2, ::2] if down == "stride" else z, params, None, index, True, down, convolved)
        mixed = mixed + weights[down_index] * (out if out.shape[-1] == side else F.adaptive_avg_pool2d(out, side))
    return mixed
