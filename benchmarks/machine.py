"""The machine a benchmark ran on, in one line for its table: the CPU's name, family and model (two CPUs of one
name can be different generations), how many CPUs this process may use, whether it computes bfloat16 natively,
and the load average -- a speed ratio is a property of these as much as of the code."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def describe_machine() -> str:
    """E.g. ``AMD EPYC (family 26, model 2), 2 CPUs, AVX512-BF16, load 0.31 / 0.52 / 1.10`` (the load averages of
    the last 1 / 5 / 15 minutes: a busy machine slows both arms of a benchmark, not always alike)."""
    info = Path("/proc/cpuinfo")
    fields = cpu_fields(info.read_text()) if info.is_file() else {}
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    flags = set(fields.get("flags", "").split())
    native = [label for flag, label in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in flags]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [name, f"{cpus} CPUs", ", ".join(native) or "no native bf16"]
    if hasattr(os, "getloadavg"):
        parts.append("load " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    return ", ".join(parts)
