"""The machine a job runs on, in one line: CPU model, cores, vector extensions.

Per-core speed differs about 5x between the machines that run EntGAN, so every timing EntGAN
prints or records says which machine it was measured on (`entgan run`'s last line, the
benchmarks' `machine`)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# The vector extensions that decide how fast PyTorch's CPU kernels run, widest last.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "neon", "sve")


@lru_cache(maxsize=1)
def machine() -> dict:
    """{'cpu_model', 'cores', 'vector_extensions'} from /proc/cpuinfo (platform's words elsewhere)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "vector_extensions": [f for f in VECTOR_FLAGS if f in flags],
    }


def machine_line() -> str:
    """e.g. 'AMD EPYC, 2 cores, avx avx2 fma'."""
    m = machine()
    return f"{m['cpu_model']}, {m['cores']} cores, {' '.join(m['vector_extensions']) or 'no vector flags read'}"
