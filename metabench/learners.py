"""The agent contract, and how to find an agent by name.

A :class:`Learner` is the learned part phi of an environment's learning algorithm. For the few-shot
envs (MetaOmniglot, MetaSinusoid) it is the whole learner F_phi: given a task's support set it
returns predictions for the query inputs (logits for classification, values for regression),
batched over tasks (:meth:`Learner.predict`). For the multi-step envs (MetaOptimizer, MetaAugment,
MetaNAS) it is a policy that acts step by step through :meth:`Learner.act`, with :meth:`Learner.reset`
at the start of each episode. The same object is trained by :mod:`metabench.training`, scored by
:mod:`metabench.evaluation`, and plugs into any metabench env through :meth:`Learner.act`.

Learners are found by name through the ``metabench.learners`` entry-point group (the reference
baselines register ``maml``, ``fomaml``, ``anil``, ``reptile``, ``protonet``, ``pretrain``, ...), or by
an import path ``"package.module:ClassName"`` for your own (``examples/own_learner.py`` is a worked
example of both). :func:`load_learner_class` checks the class against the contract
(:func:`check_learner_class`); :func:`learner_reference` is the string that finds a class again (its
registered name, else its import path), what a checkpoint stores to rebuild its learner.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import types
import typing
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import torch

from metabench.envs.common import did_you_mean
from metabench.episodes import Episodes

ENTRY_POINT_GROUP = "metabench.learners"


class Learner:
    """Base class of agents: few-shot learners and step-by-step policies.

    A subclass must define (checked by :func:`check_learner_class` when it is loaded by name or path):

    * ``name`` (class attribute, a non-empty ``str``): the agent's name in checkpoints, evaluation
      summaries and on the leaderboard, e.g. ``"pixel-proto"``. Registering it in the
      ``metabench.learners`` entry-point group under this same name makes it findable by name.
    * ``transductive`` (class attribute, a ``bool``): whether a query's prediction uses statistics of
      the whole query set (e.g. batch norm over it); reported beside every score.
    * ``Config``: a :func:`dataclasses.dataclass` of hyperparameters, every field with a default
      (the harness builds ``Config()`` and overrides fields from ``--config key=value`` or a checkpoint;
      values must be plain Python: numbers, strings, bools, None, lists and dicts of them). A
      subclass without hyperparameters may keep the base's empty ``Config``. An ``int`` field
      ``meta_batch`` (>= 1) sets how many training tasks :func:`metabench.training.train` draws per
      :meth:`train_step`; without it, one (:func:`meta_batch_size`).
    * :meth:`state_dict` and :meth:`load_state_dict`: everything to resume training, as tensors and
      plain Python values (checkpoints are loaded with ``torch.load(weights_only=True)``).
    * :meth:`predict` (few-shot learners; the default :meth:`act` calls it) or :meth:`act` (policies,
      with :meth:`reset` if they keep per-episode state).
    * :meth:`train_step`, for learners trained by :func:`metabench.training.train` (it returns a dict
      of metrics holding at least ``"loss"``).

    The constructor's signature is the harness's: ``Learner(config, task, device, seed)``; call
    ``super().__init__(config, task, device, seed)`` first.

    Args:
        config: hyperparameters (an instance of ``Config``).
        task: the environment id and its protocol, e.g. ``{"env_id": "MetaOmniglot-5w1s-v0",
            "dataset": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 15, ...}``; an agent that
            needs its env builds it with ``metabench.envs.make_env(task["env_id"], ...)``.
        device: where parameters live.
        seed: seeds the parameter initialisation.
    """

    name: ClassVar[str]
    transductive: ClassVar[bool]
    progress: float = 0.0
    """Fraction of the planned training run done before the current step, set by the training harness
    (:func:`metabench.training.train`): what schedules that anneal over a run read."""

    @dataclasses.dataclass
    class Config:
        pass

    def __init__(self, config: Any, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> None:
        self.config = config
        self.task = dict(task)
        self.device = torch.device(device)
        self.seed = seed

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        """Hyperparameters that differ from ``Config``'s defaults for this task (e.g. 20-way settings)."""
        return {}

    def train_env_kwargs(self) -> dict[str, Any]:
        """Env arguments for the training tasks when they differ from the evaluated ones (e.g. a higher way)."""
        return {}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        """Adapt to each task's support set and return its query predictions ``(T, n_query_total, out)``."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement predict(support_inputs, support_targets, query_inputs), "
            "which the few-shot envs' evaluation and the default act() call"
        )

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        """One meta-training iteration on a meta-batch of training tasks; returns metrics to log (with ``"loss"``)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement train_step(episodes), which metabench.training.train calls"
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (tensors and plain Python values only)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement state_dict()")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement load_state_dict(state)")

    def reset(self) -> None:
        """Called at the start of every episode; agents with per-episode state (e.g. an LSTM) clear it here."""

    def act(self, observation: Any) -> Any:
        """The gym contract; by default query predictions for one observation (or a vector env's batch of them)."""
        keys = ("support_images", "support_labels", "query_images")
        if "support_x" in observation:
            keys = ("support_x", "support_y", "query_x")
        tensors = [torch.as_tensor(observation[key], device=self.device) for key in keys]
        single = tensors[0].dim() == (2 if keys[0] == "support_x" else 4)
        if single:
            tensors = [tensor[None] for tensor in tensors]
        with torch.no_grad():
            predictions = self.predict(*tensors)
        return (predictions[0] if single else predictions).float().cpu().numpy()


def task_losses(task: dict[str, Any], predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss per task ``(T,)``: cross-entropy for classification, squared error for regression."""
    if task["dataset"] == "sinusoid":
        return (predictions - targets).square().mean(dim=(1, 2))
    losses = torch.nn.functional.cross_entropy(predictions.flatten(0, 1), targets.flatten(), reduction="none")
    return losses.view_as(targets).mean(dim=1)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits the type ``annotation`` (ints pass as floats; unknown kinds of types pass)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(item, arg) for item, arg in zip(value, args, strict=True))
        return not args or all(_matches(item, args[0]) for item in value)
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return True


def check_config(learner_class: type[Learner], config: dict[str, Any]) -> None:
    """Refuse hyperparameter overrides that ``learner_class.Config`` lacks or whose values have the wrong type.

    Each value is checked against its field's annotation (``int``, ``float``, ``bool``, ``str``, unions such as
    ``str | None``, ``list[int]``, ``dict``; an int passes as a float): ``lr="fast"`` or ``meta_batch=2.5``
    raises ``ValueError`` naming the field and its type.
    """
    name = getattr(learner_class, "name", learner_class.__name__)
    fields = {field.name: field for field in dataclasses.fields(learner_class.Config)}
    unknown = set(config) - set(fields)
    if unknown:
        raise ValueError(f"unknown {name} hyperparameters: {sorted(unknown)}; known: {sorted(fields)}")
    try:
        hints = typing.get_type_hints(learner_class.Config)
    except Exception:  # an annotation that does not resolve: check the fields whose type is a real type
        hints = {key: field.type for key, field in fields.items() if not isinstance(field.type, str)}
    defaults = dataclasses.asdict(learner_class.Config())
    for key, value in config.items():
        if key in hints and not _matches(value, hints[key]):
            expected = _type_name(hints[key])
            hint = f" (quote text that reads as JSON: {key}='\"{value}\"')" if expected == "str" else ""
            raise ValueError(
                f"{name} hyperparameter {key} must be of type {expected}, got {value!r} ({type(value).__name__}){hint}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} hyperparameter {key} must be a finite number, got {value!r}")
        default = defaults.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and value < 0 and isinstance(default, int | float) and not isinstance(default, bool) and default >= 0:
            raise ValueError(f"{name} hyperparameter {key} must be >= 0 (default {default!r}), got {value!r}")


def config_from_dict(learner_class: type[Learner], values: dict[str, Any]) -> Any:
    """Build a learner's ``Config`` from a plain dict (e.g. one stored in a checkpoint)."""
    known = {field.name for field in dataclasses.fields(learner_class.Config)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {learner_class.name} hyperparameters: {sorted(unknown)}; known: {sorted(known)}")
    return learner_class.Config(**values)


def registered(group: str) -> dict[str, str]:
    """Names and import paths registered in the entry-point ``group``."""
    return {entry.name: entry.value for entry in entry_points(group=group)}


def _import_module(module_name: str) -> Any:
    """Import ``module_name``; like ``python -m``, a module that is not found on ``sys.path`` is also looked
    for in the current folder (so ``metabench train mymodule:MyLearner`` works where ``mymodule.py`` is)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        top = module_name.partition(".")[0]
        cwd = os.getcwd()
        searched = {os.path.abspath(entry or os.curdir) for entry in sys.path}
        if error.name != top or cwd in searched or not (Path(cwd, top).is_dir() or Path(cwd, f"{top}.py").is_file()):
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def load_class(group: str, name: str, base: type, what: str) -> type:
    """The ``base`` subclass registered as ``name`` in entry-point ``group``, or at the path ``"module:Class"``."""
    names = registered(group)
    path = names.get(name, name)
    if ":" not in path:
        raise ValueError(
            f"unknown {what} {name!r}{did_you_mean(name, names)}: neither a name registered in the {group!r} "
            f"entry-point group (registered: {', '.join(sorted(names)) or 'none'}) nor an import path "
            "'package.module:ClassName'. "
            f"Give your class's import path (e.g. 'mymodule:MyClass', importable from the current folder or "
            f"sys.path), or register it under {name!r} in the {group!r} entry points of your package (a class's "
            "`name` attribute alone does not make it findable)"
        )
    module_name, _, class_name = path.partition(":")
    try:
        found: Any = _import_module(module_name)
        for attribute in class_name.split("."):
            found = getattr(found, attribute)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"cannot import {what} {path!r}: {error} (install the package that provides it, or run from the folder "
            "holding the module, or add that folder to PYTHONPATH)"
        ) from error
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {what} {path!r}: {error}") from error
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{path!r} is not a {base.__module__}.{base.__qualname__} subclass")
    return found


def _main_module_name() -> str:
    """The importable name of the script being run (``__main__``): its ``-m`` name, else its file's path below
    the first ``sys.path`` folder holding it."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name.removesuffix(".__main__")
    file = getattr(main, "__file__", None)
    if file:
        path = Path(file).resolve().with_suffix("")
        for entry in sys.path:
            folder = Path(entry or os.curdir).resolve()
            if folder in path.parents:
                parts = path.relative_to(folder).parts
                if all(part.isidentifier() for part in parts):
                    return ".".join(parts)
    raise ValueError(
        "the class is defined in the script being run (__main__), which no other process can import: "
        "define it in a module, or run the script as `python -m package.module`"
    )


def class_reference(cls: type, group: str) -> str:
    """The string :func:`load_class` resolves to ``cls``: the name it is registered under in entry-point ``group``
    (when ``cls.name`` is registered there and loads ``cls`` itself), else its import path ``"module:QualName"``."""
    name = getattr(cls, "name", None)
    if isinstance(name, str) and name in registered(group):
        try:
            if load_class(group, name, object, "class") is cls:
                return name
        except ValueError:  # a broken registration elsewhere: fall back to the import path
            pass
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is defined inside a function: define it at module level to import it")
    module = _main_module_name() if cls.__module__ == "__main__" else cls.__module__
    return f"{module}:{cls.__qualname__}"


def available() -> dict[str, str]:
    """Registered learner names and their import paths."""
    return registered(ENTRY_POINT_GROUP)


def check_learner_class(cls: type) -> type[Learner]:
    """Return ``cls`` if it fulfils the :class:`Learner` contract (see its docstring), else raise a ``ValueError``
    that lists every problem: ``name`` a non-empty str, ``transductive`` a bool, ``Config`` a dataclass whose
    fields all have defaults (``meta_batch``, if present, an int >= 1), ``state_dict``/``load_state_dict``
    implemented, and ``predict`` or ``act``."""
    label = f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', repr(cls))}"
    if not (isinstance(cls, type) and issubclass(cls, Learner)):
        raise ValueError(f"{label} is not a metabench.learners.Learner subclass")
    problems = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"class attribute `name` must be a non-empty str (e.g. name = 'my-learner'), got {name!r}")
    transductive = getattr(cls, "transductive", None)
    if not isinstance(transductive, bool):
        problems.append(
            "class attribute `transductive` must be a bool (True if a query's prediction uses the other queries, "
            f"e.g. batch norm over the query set), got {transductive!r}"
        )
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        problems.append(f"`Config` must be a class decorated with @dataclasses.dataclass, got {config!r}")
    else:
        fields = {field.name: field for field in dataclasses.fields(config)}
        missing = [
            field.name
            for field in fields.values()
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        ]
        if missing:
            problems.append(f"every `Config` field needs a default (the harness builds Config()); missing: {missing}")
        elif "meta_batch" in fields:
            field = fields["meta_batch"]
            value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"`Config.meta_batch` must default to an int >= 1, got {value!r}")
    for method in ("state_dict", "load_state_dict"):
        if getattr(cls, method) is getattr(Learner, method):
            problems.append(f"implement {method}() (checkpoints store and restore the learner through it)")
    if cls.predict is Learner.predict and cls.act is Learner.act:
        problems.append("implement predict() (few-shot learners) or act() (step-by-step policies)")
    if problems:
        raise ValueError(f"{label} is not a valid metabench learner:\n  - " + "\n  - ".join(problems))
    return cls


def load_learner_class(name: str) -> type[Learner]:
    """The learner class registered as ``name``, or at the import path ``"module:Class"``, checked by
    :func:`check_learner_class`; a registered class must be registered under its own ``name``."""
    learner_class = check_learner_class(load_class(ENTRY_POINT_GROUP, name, Learner, "learner"))
    if ":" not in name and learner_class.name != name:
        raise ValueError(
            f"{available()[name]!r} is registered as {name!r} in the {ENTRY_POINT_GROUP!r} entry points but is named "
            f"{learner_class.name!r}: register it under its name (checkpoints and the leaderboard find it by that name)"
        )
    return learner_class


def learner_reference(learner_class: type[Learner]) -> str:
    """What finds ``learner_class`` again through :func:`load_learner_class`, in this or another process: its
    registered name (when it is the class registered under its ``name``), else its import path ``"module:Class"``.
    A checkpoint stores it to rebuild its learner."""
    return class_reference(learner_class, ENTRY_POINT_GROUP)


def meta_batch_size(learner: Learner) -> int:
    """Training tasks per :meth:`Learner.train_step`: the config's ``meta_batch``, or 1 if it has none."""
    value = getattr(learner.config, "meta_batch", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{learner.name}: config.meta_batch must be an int >= 1, got {value!r}")
    return value
