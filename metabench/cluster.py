"""Parallel work on Ray: the one place that starts or joins Ray and runs copies of a worker.

A :class:`Pool` holds ``workers`` copies of a plain Python class (a *worker*: it builds its env once
in ``__init__`` and answers method calls). With ``workers=1`` the one copy lives in this process and
calls run in submission order, so serial runs need neither Ray nor processes. With more, each copy
is a Ray actor holding one CPU (its torch threads set to ``threads``); with no address that is a
local Ray instance on this machine's cores, with ``address`` (or ``RAY_ADDRESS``) an existing
cluster, whose nodes need metabench installed and its data reachable.

Faults: an actor whose process dies is restarted and its unfinished calls are run again
(``max_restarts=-1``, ``max_task_retries=-1``), so a call's result arrives exactly once. Workers
must therefore be idempotent: a call's result depends only on its arguments.

Ray is optional: ``pip install 'metabench[ray]'``.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

RAY_HINT = "parallel workers need Ray: pip install 'metabench[ray]' (or run with --workers 1)"


def require_ray() -> Any:
    """The ``ray`` module, or a ``ValueError`` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_HINT) from None
    return ray


def connect(address: str | None = None, cpus: int | None = None) -> Any:
    """Start or join Ray once per process and return the ``ray`` module.

    ``address`` (default ``$RAY_ADDRESS``) joins an existing cluster; without one a local instance starts
    with ``cpus`` CPUs (default: this machine's cores). A process already connected stays connected.
    """
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a local instance unless asked
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
        if address is None:
            options["num_cpus"] = cpus or os.cpu_count() or 1
            # Ray adds 15 to its workers' niceness, so on a machine shared with other work they got 19% of a core
            # beside a nice-5 process's 91%: a local instance's workers keep this process's priority instead
            os.environ.setdefault("RAY_worker_niceness", "0")
            # Ray >= 2.5x turns token authentication on for a new local instance and logs a warning saying so:
            # the instance stays as Ray makes it, without the warning
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address=address, **options)
    return ray


def check_capacity(ray: Any, workers: int, gpus: float) -> None:
    """Refuse ``workers`` Ray workers of one CPU and ``gpus`` GPUs each that the cluster can never place all at
    once (they would wait forever); raises ``ValueError`` naming what fits."""
    resources = ray.cluster_resources()
    cpus, gpu_total = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if workers > cpus:
        raise ValueError(
            f"{workers} workers need {workers} CPUs, but the Ray cluster has {cpus}: use --workers {max(cpus, 1)} or "
            "fewer, or join a larger cluster (--address / $RAY_ADDRESS)"
        )
    if gpus and workers * gpus > gpu_total + 1e-9:
        raise ValueError(
            f"{workers} workers of {gpus:g} GPU each need {workers * gpus:g} GPUs, but the Ray cluster has "
            f"{gpu_total:g}: use fewer workers or a smaller --gpus-per-worker"
        )


def _start_worker(worker_class: type, threads: int, args: tuple, kwargs: dict) -> Any:
    """Build one worker in this (actor) process: its torch threads, the allocator setting of the command line,
    and metabench's env registrations (``import metabench``), so that plain env ids resolve there too."""
    import torch

    import metabench  # noqa: F401  (registers the envs in this worker process)
    from metabench import allocator

    torch.set_num_threads(threads)
    allocator.keep_freed_memory()
    return worker_class(*args, **kwargs)


def gpu_share(device: str, workers: int, gpus_per_worker: float | None = None) -> float:
    """GPUs each Ray worker asks for: ``gpus_per_worker`` if given, else for a CUDA device ``1 / workers`` (the
    workers share one GPU), else 0."""
    if gpus_per_worker is not None:
        return gpus_per_worker
    return 1.0 / workers if str(device).startswith("cuda") and workers > 1 else 0.0


class _Actor:
    """The Ray actor around one worker: ``call(setup, method, *args)`` runs ``worker.method(*args)``, building
    the worker from ``setup`` (a list holding the object reference of its arguments) on the first call."""

    def __init__(self) -> None:
        self.worker: Any = None

    def call(self, setup: list[Any], method: str, *args: Any) -> Any:
        if self.worker is None:
            import ray

            self.worker = _start_worker(*ray.get(setup[0]))
        return getattr(self.worker, method)(*args)

    def where(self) -> tuple[str, int]:
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()


class Pool:
    """``workers`` copies of ``worker_class(*args, **kwargs)`` (a class or a factory) that run method calls in
    parallel. ``local``, if given, is the worker used when ``workers == 1`` (e.g. one built on objects this
    process already holds), instead of a new one.

    Each Ray worker holds one CPU and ``gpus`` GPUs: a fraction shares one GPU between workers (e.g. 0.25:
    four NAS evaluations on one card at once), see :func:`gpu_share`.

    :meth:`submit` queues a call with a tag; :meth:`next` returns ``(tag, result)`` of a finished call
    (the oldest in the serial case, whichever finishes first on Ray). A call waits while every worker is
    busy, so submitting ahead is allowed; :meth:`idle` says whether a worker is free now.
    """

    def __init__(
        self,
        worker_class: type,
        *args: Any,
        workers: int = 1,
        address: str | None = None,
        threads: int = 1,
        gpus: float = 0.0,
        local: Any = None,
        **kwargs: Any,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._queue: deque[tuple[Any, str, tuple]] = deque()
        if workers == 1:
            self._local = local if local is not None else worker_class(*args, **kwargs)
            return
        ray = connect(address)
        check_capacity(ray, workers, gpus)
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)(_Actor)
        self._ray = ray
        # the workers' arguments: in the object store once and held here, so that a restarted actor can rebuild
        # its worker; given with each call rather than to the constructor (see ray#53727 on restarts)
        self._setup = [ray.put((worker_class, threads, args, kwargs))]
        self._actors = [remote.remote() for _ in range(workers)]
        self._free = list(self._actors)
        self._running: dict[Any, tuple[Any, Any]] = {}  # object ref -> (tag, actor)

    def submit(self, tag: Any, method: str, *args: Any) -> None:
        """Queue ``worker.method(*args)``; its result comes back from :meth:`next` with ``tag``."""
        self._queue.append((tag, method, args))
        self._dispatch()

    def _dispatch(self) -> None:
        if self.workers == 1:
            return
        while self._queue and self._free:
            tag, method, args = self._queue.popleft()
            actor = self._free.pop()
            self._running[actor.call.remote(self._setup, method, *args)] = (tag, actor)

    def idle(self) -> bool:
        """Whether a submitted call would start now (a worker is free and nothing is queued)."""
        if self.workers == 1:
            return not self._queue
        return bool(self._free) and not self._queue

    def pending(self) -> int:
        """Calls submitted and not yet returned by :meth:`next`."""
        return len(self._queue) + (0 if self.workers == 1 else len(self._running))

    def next(self) -> tuple[Any, Any]:
        """``(tag, result)`` of a finished call; raises what the call raised."""
        if not self.pending():
            raise RuntimeError("no call pending")
        if self.workers == 1:
            tag, method, args = self._queue.popleft()
            return tag, getattr(self._local, method)(*args)
        (ready,), _ = self._ray.wait(list(self._running), num_returns=1)
        tag, actor = self._running.pop(ready)
        self._free.append(actor)
        try:
            return tag, self._ray.get(ready)
        finally:
            self._dispatch()

    def map(self, method: str, calls: list[tuple], progress: Callable[[Any], None] | None = None) -> list[Any]:
        """Run ``worker.method(*call)`` for every call; results in the order of ``calls``."""
        for index, call in enumerate(calls):
            self.submit(index, method, *call)
        results: list[Any] = [None] * len(calls)
        while self.pending():
            index, result = self.next()
            results[index] = result
            if progress is not None:
                progress(result)
        return results

    def pids(self) -> list[int]:
        """The worker processes' ids (this process's in the serial case)."""
        return [pid for _, pid in self.placement()]

    def placement(self) -> list[tuple[str, int]]:
        """``(Ray node id, process id)`` of every worker (``("local", pid)`` in the serial case)."""
        if self.workers == 1:
            return [("local", os.getpid())]
        return self._ray.get([actor.where.remote() for actor in self._actors])

    def describe(self) -> str:
        """One line for the user: how many workers on how many nodes."""
        if self.workers == 1:
            return "1 worker (this process)"
        nodes = {node for node, _ in self.placement()}
        return f"{self.workers} Ray workers on {len(nodes)} node{'s' if len(nodes) > 1 else ''}"

    def close(self) -> None:
        """End the Ray actors (the local worker is simply dropped)."""
        if self.workers > 1:
            for actor in self._actors:
                self._ray.kill(actor)
            self._actors, self._free, self._running = [], [], {}

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
