"""What decides float32 results bit for bit on a CPU: the torch build, the SIMD level its kernels dispatch
to, the CPU (MKL and oneDNN choose kernels by vendor, family and ISA) and the thread count (reductions
split by thread). ``tools/make_model_goldens.py`` records it with the goldens; the bit-level parity tests
(``TopDownEstimator.set_exact``) run only where it matches, the tolerance tests everywhere."""
from __future__ import annotations

import platform

import torch

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")
GOLDEN_THREADS = 2  # the goldens' torch.set_num_threads


def cpu_signature() -> dict:
    """Vendor, family, model and ISA flags from /proc/cpuinfo (Linux); elsewhere the processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return dict(processor=platform.processor())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return dict(vendor=fields.get("vendor_id"), family=fields.get("cpu family"), model=fields.get("model"),
                isa=[f for f in ISA_FLAGS if f in flags])


def signature() -> dict:
    return dict(torch=torch.__version__, capability=torch.backends.cpu.get_cpu_capability(),
                threads=GOLDEN_THREADS, cpu=cpu_signature())
