"""Keep freed memory in the process, so that repeated large tensors stop costing page faults.

PyTorch's CPU allocator hands every tensor to ``malloc`` and back. glibc serves allocations above
its mmap threshold (a few MiB: every Conv-4 activation of a 25-task evaluation chunk) with fresh
``mmap`` calls and returns them on ``free``, so each forward pass faults its activations in page by
page again: profiling ``metabench evaluate`` showed as much system time as compute (41 s system
against 38 s user for the ProtoNets 5w1s protocol). Raising glibc's thresholds keeps freed memory
for reuse (``benchmarks/README.md``, "Evaluation speed"); the cost is a process that holds on to
its peak memory, which is what a training or evaluation command wants anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = 4 * 1024**3 - 1  # never mmap, never trim below this many bytes
_TOP_PAD = 512 * 1024**2  # grow the heap in 512 MiB steps


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory (no mmap per large block, no trimming); returns
    whether it applied (False off Linux/glibc, where this is a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    return all(
        mallopt(option, value) == 1
        for option, value in ((_M_MMAP_THRESHOLD, _KEEP), (_M_TRIM_THRESHOLD, _KEEP), (_M_TOP_PAD, _TOP_PAD))
    )
