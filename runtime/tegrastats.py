"""Parse NVIDIA Jetson `tegrastats` lines, and sample them in the background while a benchmark runs.

Formats differ by module and JetPack; one line looks like (trimmed):
  Orin (JetPack 5):  RAM 2448/30536MB (lfb 6308x4MB) SWAP 0/15268MB (cached 0MB) CPU [0%@729,0%@729]
                     EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305,305] cpu@44.687C soc2@43.843C
                     VDD_GPU_SOC 1596mW/1596mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2817mW/2817mW
  Orin NX/Nano, JetPack 6: ... VDD_IN 4852mW/4852mW VDD_CPU_GPU_CV 481mW/481mW VDD_SOC 1362mW/1362mW
  Xavier:            ... GPU@40C ... GPU 0/0 CPU 311/311 SOC 1554/1554 CV 0/0 VDDRQ 155/155 SYS5V 2258/2258
  Nano / TX2:        ... GPU@23.5C ... POM_5V_IN 2160/2160 POM_5V_GPU 0/0 POM_5V_CPU 361/361
Rails are `NAME current/average` in mW (with or without the `mW` unit); temperatures `name@<degrees>C`.

Total module power, in order of preference: the input rail (VDD_IN, POM_5V_IN), else the sum of all
rails (AGX Orin under JetPack 5 and AGX Xavier have no input rail; their rails together are the module).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

from runtime.errors import UserError

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")

_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}
_NOT_TEMPS = {"PMIC"}  # the Nano's PMIC "sensor" always reads 100C


@dataclass
class TegraSample:
    time: float  # time.monotonic() when read (0 for parsed text)
    rails_mw: dict[str, int] = field(default_factory=dict)  # rail -> instantaneous mW
    temps_c: dict[str, float] = field(default_factory=dict)  # sensor -> degrees C
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    cpu_load: list[int | None] = field(default_factory=list)  # % per core, None when the core is off
    gpu_load: int | None = None  # GR3D %

    def total_power_mw(self) -> tuple[float | None, str]:
        """(module power in mW, how it was obtained): an input rail, else the sum of the rails."""
        for rail in INPUT_RAILS:
            if rail in self.rails_mw:
                return float(self.rails_mw[rail]), rail
        if self.rails_mw:
            return float(sum(self.rails_mw.values())), "sum(" + "+".join(self.rails_mw) + ")"
        return None, "none"


def parse_line(line: str, t: float = 0.0) -> TegraSample:
    """One tegrastats line -> TegraSample (fields the line lacks stay empty/None)."""
    s = TegraSample(time=t)
    for name, cur, _avg in _RAIL.findall(line):
        if name not in _NOT_RAILS:
            s.rails_mw[name] = int(cur)
    for name, deg in _TEMP.findall(line):
        value = float(deg)
        if value > -200 and name not in _NOT_TEMPS:  # tegrastats prints -256C for absent sensors
            s.temps_c[name] = value
    if m := _RAM.search(line):
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)), int(m.group(2))
    if m := _CPU.search(line):
        for core in m.group(1).split(","):
            load = re.match(r"\s*(\d+)%", core)
            s.cpu_load.append(int(load.group(1)) if load else None)
    if m := _GPU.search(line):
        s.gpu_load = int(m.group(1))
    return s


def summarize(samples: list[TegraSample], t0: float | None = None, t1: float | None = None) -> dict[str, object]:
    """Mean/max power (W) and max temperature over the samples taken in [t0, t1]."""
    window = [s for s in samples if (t0 is None or s.time >= t0) and (t1 is None or s.time <= t1)]
    powers = [(p, src) for p, src in (s.total_power_mw() for s in window) if p is not None]
    temps = [max(s.temps_c.values()) for s in window if s.temps_c]
    gpu = [s.gpu_load for s in window if s.gpu_load is not None]
    return {
        "samples": len(window),
        "power_source": powers[-1][1] if powers else None,
        "power_w_mean": sum(p for p, _ in powers) / len(powers) / 1000.0 if powers else None,
        "power_w_max": max(p for p, _ in powers) / 1000.0 if powers else None,
        "temp_c_max": max(temps) if temps else None,
        "gpu_load_mean": sum(gpu) / len(gpu) if gpu else None,
    }


class TegrastatsMonitor:
    """Run `tegrastats --interval N` in a subprocess and parse its lines in a thread.

        with TegrastatsMonitor(100) as mon:
            ...                      # the work to measure
        summarize(mon.samples, t0, t1)
    """

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats") -> None:
        exe = shutil.which(command)
        if exe is None:
            raise UserError(f"{command} was not found: power is measured on a Jetson (JetPack); use "
                            "--no-power to benchmark without it, or python -m runtime.bench elsewhere")
        self.cmd = [exe, "--interval", str(int(interval_ms))]
        self.samples: list[TegraSample] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TegrastatsMonitor:
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                      bufsize=1)
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                self.samples.append(parse_line(line, time.monotonic()))

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def __enter__(self) -> TegrastatsMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
