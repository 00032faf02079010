"""What machine a benchmark ran on, for the first line of its output: runs on different CPUs are compared by
ratios measured in one run, never by absolute times."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_line(extra: str) -> str:
    """'# MODEL, N CPUs (T torch threads), flags: ..., torch VERSION, EXTRA'."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    present = set(cpuinfo.split())
    flags = [flag for flag in FLAGS if flag in present]
    return (
        f"# {model or platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({torch.get_num_threads()} torch threads), flags: {' '.join(flags) or 'none of avx2/avx512/amx'}, "
        f"torch {torch.__version__}, {extra}"
    )
