"""The learners' networks, written functionally so one code path serves a single task and a meta-batch.

Parameters are plain dicts of tensors. Every function takes parameters with a leading *task*
dimension ``T`` and inputs ``(T, n, ...)``: task ``t``'s examples go through task ``t``'s
parameters. For the Conv-4 this is one grouped convolution per layer (``groups=T``), so a meta-batch
of adapted networks runs as a single batched operation with ordinary autograd (second-order
gradients included). Shared (not yet adapted) parameters enter via :func:`expand`.

* :func:`conv4_init` / :func:`conv4` — the Conv-4 backbone of the few-shot literature (Vinyals et
  al. 2016; Finn et al. 2017; Snell et al. 2017): four blocks of 3x3 convolution with ``width``
  filters, batch norm, ReLU and 2x2 down-sampling (max-pool, or stride 2 as in MAML's Omniglot
  model), then an optional linear head.
* :func:`mlp_init` / :func:`mlp` — the 1-40-40-1 ReLU network of MAML's sinusoid experiments.

Batch norm uses the statistics of the examples it is given (per task, per call), as in MAML: a
learner that embeds the query set in one call is then transductive, and says so. Learners with
shared weights can keep running statistics instead and predict non-transductively.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]

DOWNSAMPLING = ("maxpool", "stride")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block torch's global generator is seeded with ``seed``, and restored after: ``torch.nn`` modules
    built there get the same initial weights for the same seed, and the caller's random stream is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def kaiming_uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform in ``+-1/sqrt(fan_in)``, drawn from ``generator`` (seeded initialisations)."""
    bound = 1.0 / math.sqrt(fan_in)  # torch.nn's default for conv and linear layers
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def norm_relu(
    h: torch.Tensor, params: Params, running: Params | None, index: int, training: bool, maxpool: bool = False
) -> torch.Tensor:
    """Batch norm ``norm{index}`` then ReLU on grouped feature maps ``(n, T*C, H, W)``, then 2x2 max-pooling if
    ``maxpool``.

    Normalises with the batch's statistics when ``training`` or when no ``running`` statistics are
    given (training also updates ``running`` in place), else with ``running``. The pool runs before the
    ReLU: the same values and gradients (ReLU is monotone, so it commutes with max), on a quarter of the
    elements (benchmarks/train_throughput.py).
    """
    h = F.batch_norm(
        h,
        None if running is None else running[f"norm{index}.mean"],
        None if running is None else running[f"norm{index}.var"],
        params[f"norm{index}.weight"].flatten(),
        params[f"norm{index}.bias"].flatten(),
        training=training or running is None,
    )
    return F.relu(F.max_pool2d(h, 2) if maxpool else h)


def conv4_init(
    out_features: int | None,
    generator: torch.Generator,
    *,
    in_channels: int = 1,
    width: int = 64,
    image_size: int = 28,
    downsample: str = "maxpool",
) -> Params:
    """Fresh Conv-4 parameters (no task dimension); ``out_features=None`` gives the embedding only."""
    if downsample not in DOWNSAMPLING:
        raise ValueError(f"downsample must be one of {DOWNSAMPLING}, got {downsample!r}")
    params: Params = {}
    channels = in_channels
    for layer in range(4):
        fan_in = channels * 9
        params[f"conv{layer}.weight"] = kaiming_uniform((width, channels, 3, 3), fan_in, generator)
        params[f"conv{layer}.bias"] = kaiming_uniform((width,), fan_in, generator)
        params[f"norm{layer}.weight"] = torch.ones(width)
        params[f"norm{layer}.bias"] = torch.zeros(width)
        channels = width
    if out_features is not None:
        features = conv4_features(width, image_size, downsample)
        params["head.weight"] = kaiming_uniform((out_features, features), features, generator)
        params["head.bias"] = kaiming_uniform((out_features,), features, generator)
    return params


def conv4_features(width: int, image_size: int, downsample: str) -> int:
    """Length of the Conv-4 embedding for square inputs of ``image_size`` pixels."""
    size = image_size
    for _ in range(4):
        size = size // 2 if downsample == "maxpool" else (size + 1) // 2
    return width * size * size


def conv4_running_stats(width: int = 64) -> Params:
    """Fresh running batch-norm statistics, for learners that predict non-transductively."""
    stats: Params = {}
    for layer in range(4):
        stats[f"norm{layer}.mean"] = torch.zeros(width)
        stats[f"norm{layer}.var"] = torch.ones(width)
    return stats


def conv4(
    params: Params,
    images: torch.Tensor,
    downsample: str = "maxpool",
    running: Params | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Conv-4 on a meta-batch: ``params`` with task dimension ``T``, ``images (T, n, C, H, W)``.

    Returns logits ``(T, n, out_features)`` if the parameters have a head, else embeddings
    ``(T, n, features)``. uint8 images are scaled to [0, 1].

    Batch norm normalises with the statistics of the given examples, unless ``running`` statistics
    (:func:`conv4_running_stats`, single task only) are given: they are updated in place when
    ``training`` and used instead of the batch's otherwise.
    """
    tasks, n = images.shape[:2]
    if running is not None and tasks != 1:
        raise ValueError("running batch-norm statistics need a single task (shared parameters)")
    if images.dtype == torch.uint8:
        images = images.to(params["conv0.weight"].dtype) / 255
    # (T, n, C, H, W) -> (n, T*C, H, W): each task is a channel group
    h = images.transpose(0, 1).reshape(n, -1, *images.shape[-2:])
    stride = 2 if downsample == "stride" else 1
    for layer in range(4):
        weight = params[f"conv{layer}.weight"]
        h = F.conv2d(
            h, weight.flatten(0, 1), params[f"conv{layer}.bias"].flatten(), stride=stride, padding=1, groups=tasks
        )
        h = norm_relu(h, params, running, layer, training, maxpool=downsample == "maxpool")
    features = h.reshape(n, tasks, -1).transpose(0, 1)  # (T, n, features)
    if "head.weight" not in params:
        return features
    return linear(params["head.weight"], params["head.bias"], features)


def linear(weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Per-task linear layer: ``weight (T, out, in)``, ``bias (T, out)``, ``inputs (T, n, in)``."""
    return torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))


def mlp_init(generator: torch.Generator, hidden: tuple[int, ...] = (40, 40), in_features: int = 1) -> Params:
    """Fresh parameters of the ReLU MLP ``in -> hidden... -> 1`` (no task dimension)."""
    params: Params = {}
    sizes = (in_features, *hidden, 1)
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"fc{layer}.weight"] = kaiming_uniform((fan_out, fan_in), fan_in, generator)
        params[f"fc{layer}.bias"] = kaiming_uniform((fan_out,), fan_in, generator)
    return params


def mlp(params: Params, inputs: torch.Tensor) -> torch.Tensor:
    """The MLP on a meta-batch: ``inputs (T, n, in)`` -> ``(T, n, 1)``."""
    layers = len(params) // 2
    h = inputs
    for layer in range(layers):
        h = linear(params[f"fc{layer}.weight"], params[f"fc{layer}.bias"], h)
        if layer < layers - 1:
            h = F.relu(h)
    return h


def class_means(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Per-task mean feature of each class (the prototypes): ``(T, n, D)``, labels ``(T, n)`` -> ``(T, n_way, D)``."""
    one_hot = F.one_hot(labels, n_way).to(features.dtype)  # (T, n, N)
    return one_hot.transpose(1, 2) @ features / one_hot.sum(dim=1).unsqueeze(-1)


def load_params(target: Params, source: Params) -> None:
    """Copy ``source``'s tensors into ``target``'s of the same names, in place (a learner's state loading)."""
    with torch.no_grad():
        for name, value in source.items():
            target[name].copy_(value)


def expand(params: Params, tasks: int) -> Params:
    """View shared parameters as ``tasks`` copies (a task dimension); gradients sum back."""
    return {name: value.expand(tasks, *value.shape) for name, value in params.items()}
