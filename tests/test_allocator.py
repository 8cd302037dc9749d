"""metabench.allocator: freed memory is reused instead of faulted in again (Linux/glibc)."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from metabench import allocator
    applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.ones(8 << 20)  # warm up: 32 MiB allocated and freed once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(8 << 20)  # 32 MiB: above glibc's default mmap threshold
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def page_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_on_repeated_large_tensors():
    default_applied, default_faults = page_faults("default")
    kept_applied, kept_faults = page_faults("keep")
    assert (default_applied, kept_applied) == ("False", "True")
    pages = 20 * (32 << 20) // 4096
    assert default_faults > pages // 2  # every 32 MiB block faulted in again
    # most blocks reuse the same memory (measured 1 to 7 of the 20 blocks faulted in again, depending on the
    # machine's state); the default faults in every one
    assert kept_faults < default_faults // 2
