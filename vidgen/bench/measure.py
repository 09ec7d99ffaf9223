"""Shared measuring helpers of the benchmarks (no flags, so any bench module can import them).

Memory of this process: current and peak RSS, peak reset, physical memory,
from Linux /proc where there is one (VmRSS, VmHWM, clear_refs, MemTotal),
getrusage's ru_maxrss elsewhere; sizes in MiB, GiB for physical memory.
`line_fit`: least squares for growth figures.
"""

from __future__ import annotations

import re
import statistics
import resource
import sys

MB = 2.0 ** 20


def status_mb(field: str) -> float | None:
  """VmRSS / VmHWM of this process in MiB, or None without /proc."""
  try:
    with open("/proc/self/status") as f:
      m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
  except OSError:
    return None
  return int(m.group(1)) / 1024 if m else None


def ru_maxrss_mb() -> float:
  """This process's peak RSS in MiB from getrusage (kB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / MB if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
  current = status_mb("VmRSS")
  return current if current is not None else ru_maxrss_mb()


def peak_rss_mb() -> float:
  """The high-water RSS since the last `reset_peak` (or since start) in MiB."""
  hwm = status_mb("VmHWM")
  return hwm if hwm is not None else ru_maxrss_mb()


def reset_peak() -> bool:
  """Resets the high-water RSS to the current RSS (Linux >= 4.0); False where it cannot."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def physical_memory_gb() -> float | None:
  """MemTotal of /proc/meminfo in GiB, or None without it."""
  try:
    with open("/proc/meminfo") as f:
      m = re.search(r"^MemTotal:\s+(\d+) kB", f.read(), re.M)
  except OSError:
    return None
  return int(m.group(1)) / 2 ** 20 if m else None


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
  """Least-squares (slope, intercept); slope 0 when every x is the same."""
  mx, my = statistics.fmean(xs), statistics.fmean(ys)
  sxx = sum((x - mx) ** 2 for x in xs)
  slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
  return slope, my - slope * mx
