"""What the numbers were measured on: CPU, memory, Python, OS, filesystem, fsync latency.

The fsync latency (median of ``FSYNC_SAMPLES`` writes of 4 KiB, each followed by an
fsync, in the scratch directory) is the floor under every durable single-writer number.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FSYNC_SAMPLES = 50
FSYNC_BLOCK = 4096


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_bytes() -> int | None:
    """Total memory from /proc/meminfo, or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def filesystem(path: Path) -> dict[str, str]:
    """Type, device and mount point of the filesystem holding ``path``.

    Reads /proc/mounts (longest mount point that contains ``path``); falls back to
    ``stat -f`` where /proc is missing.
    """
    target = os.path.realpath(path)
    best: dict[str, str] = {}
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype, options = line.split()[:4]
            mount = mount.replace("\\040", " ")
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best.get("mount", "")):
                best = {"type": fstype, "device": device, "mount": mount, "options": options}
    except (OSError, ValueError):
        pass
    if best:
        return best
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", target], capture_output=True, text=True, check=True
        )
        return {"type": out.stdout.strip(), "device": "?", "mount": "?", "options": ""}
    except (OSError, subprocess.CalledProcessError):
        return {"type": "unknown", "device": "?", "mount": "?", "options": ""}


def fsync_latency_us(directory: Path, samples: int = FSYNC_SAMPLES) -> dict[str, float]:
    """Median and p90 of ``samples`` (write 4 KiB + fsync) in ``directory``, microseconds."""
    block = os.urandom(FSYNC_BLOCK)
    timings = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-probe-") as probe:
        fd = probe.fileno()
        for _ in range(samples):
            began = time.perf_counter_ns()
            os.write(fd, block)
            os.fsync(fd)
            timings.append((time.perf_counter_ns() - began) / 1000)
    timings.sort()
    return {
        "median_us": round(statistics.median(timings), 1),
        "p90_us": round(timings[int(0.9 * (len(timings) - 1))], 1),
        "samples": samples,
    }


def machine_info(scratch: Path) -> dict[str, Any]:
    """Everything results.json records about the machine, with the scratch filesystem."""
    memory = ram_bytes()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(memory / 2**30, 1) if memory else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "scratch": str(scratch),
        "filesystem": filesystem(scratch),
        "fsync_4k": fsync_latency_us(scratch),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for the terminal and report: CPU, cores, RAM, filesystem, fsync latency."""
    fs = info["filesystem"]
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; {info['python']}; "
        f"{info['os']}; scratch on {fs['type']} ({fs['mount']}); "
        f"fsync of 4 KiB: {info['fsync_4k']['median_us']:.0f} us median"
    )
