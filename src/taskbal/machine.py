"""Which machine produced a number: float rounding differs between CPU models, GPU models and torch
builds, and training amplifies it, so every training records where it ran (``train.json``'s
``machine``) and every table and the report say it."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def describe(device: str | torch.device = "cpu") -> str:
    """One line naming the device that computed (GPU model or CPU model), the CPU and torch build,
    e.g. ``"CPU AMD EPYC (AVX512 kernels, 1 torch thread); torch 2.14.1"``. The instruction set torch
    dispatches its CPU kernels to is named because two CPUs that report the same model name (a
    virtual machine's "AMD EPYC") may run different kernels, and so round differently."""
    device = torch.device(device)
    threads = torch.get_num_threads()
    host = f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()} kernels, {threads} torch thread" \
           f"{'s' if threads != 1 else ''})"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"GPU {name} ({device}, CUDA {torch.version.cuda}) on CPU {host}; torch {torch.__version__}"
    return f"CPU {host}; torch {torch.__version__}"
