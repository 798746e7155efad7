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


def _status_kb(field: str) -> int | None:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status in kB (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """The peak memory of a training loop (thesis Figure 3.1's memory panels). On a GPU,
    ``torch.cuda.max_memory_allocated`` over the loop, what the thesis reads. On the CPU there is no
    allocator statistic, so the process's peak resident set over the loop (Linux: the high-water mark
    ``VmHWM``, reset at the start by writing 5 to /proc/self/clear_refs) above its resident set at the
    start: the memory the steps and curve evaluations need beyond the data and model already loaded.
    Where neither can be read, it says why instead of giving a number."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.start_kb: int | None = None
        self.problem = None

    def can_measure(self) -> bool:
        """Whether a number will come (CUDA, or a Linux /proc whose peak can be reset): ``start`` succeeds."""
        self.start()
        return self.problem is None

    def start(self) -> None:
        self.problem = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError as error:
            self.problem = f"the peak resident set cannot be reset here ({type(error).__name__})"
            return
        self.start_kb = _status_kb("VmRSS")
        if self.start_kb is None:
            self.problem = "no /proc/self/status"

    def summary(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
                    "peak_memory_measure": "torch.cuda.max_memory_allocated over the training loop"}
        peak = _status_kb("VmHWM") if self.problem is None else None
        if peak is None:
            return {"peak_memory_measure": f"not measured: {self.problem or 'no /proc/self/status'}"}
        return {"peak_memory_mb": max(peak - self.start_kb, 0) / 1024,
                "peak_memory_measure": "peak resident set over the training loop above the set at its start "
                                       "(VmHWM − VmRSS, CPU)"}
