"""runtime.machine: what the machine is, parsed from recorded /proc/cpuinfo, sysfs, device-tree, L4T and
nvidia-smi text, and the environment block that reports embed (without torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import machine
from runtime.machine import (
    ARM_FLAGS,
    X86_FLAGS,
    Jetson,
    cpu_feature_table,
    cpu_flags,
    cpu_has_amx,
    cpu_has_bf16,
    cpu_has_vnni,
    cpu_model,
    is_x86,
    looks_like_jetson,
    parse_cpu_flags,
    parse_cpu_model,
    parse_device_tree_model,
    parse_l4t_release,
    parse_nvidia_smi,
    physical_cores,
)

ROOT = Path(__file__).resolve().parents[2]

# Recorded /proc/cpuinfo excerpts (one CPU each).
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
vmx flags\t: vnmi preemption_timer
bugs\t\t: spectre_v1
"""
AVX2_ONLY = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma
"""
ORIN = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""
L4T_R36 = ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 "
           "04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n")
ORIN_MODEL = "NVIDIA Jetson AGX Orin Developer Kit\x00"


def test_cpu_flags_and_model_from_recorded_cpuinfo():
    flags = parse_cpu_flags(SAPPHIRE_RAPIDS)
    assert {"avx2", "avx512_vnni", "amx_tile"} <= flags and "vnmi" not in flags and "spectre_v1" not in flags
    assert parse_cpu_model(SAPPHIRE_RAPIDS) == "Intel(R) Xeon(R) Platinum 8480+"  # not `model : 143`
    assert parse_cpu_flags(ORIN) >= {"asimd", "asimddp"} and "fp" in parse_cpu_flags(ORIN)
    assert parse_cpu_model(ORIN) is None and parse_cpu_flags("") == set() and parse_cpu_model("") is None


def test_readers_take_a_path_and_are_empty_without_the_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    assert cpu_flags(info) == {"fpu", "sse", "sse2", "avx", "avx2", "fma"}
    assert cpu_model(info) == "AMD EPYC 7B12"
    assert cpu_flags(tmp_path / "absent") == set()
    assert cpu_model(tmp_path / "absent")  # falls back to platform's name, never empty


def test_feature_predicates():
    spr, epyc, orin = parse_cpu_flags(SAPPHIRE_RAPIDS), parse_cpu_flags(AVX2_ONLY), parse_cpu_flags(ORIN)
    assert cpu_has_vnni(spr) and cpu_has_bf16(spr) and cpu_has_amx(spr)
    assert not cpu_has_vnni(epyc) and not cpu_has_bf16(epyc) and not cpu_has_amx(epyc)
    assert cpu_has_vnni({"avx_vnni"}) and cpu_has_bf16({"avx512_bf16"}) and not cpu_has_bf16({"bf16"})
    assert not cpu_has_vnni(orin) and not cpu_has_bf16(orin)
    assert is_x86("x86_64") and is_x86("AMD64") and not is_x86("aarch64")
    assert cpu_feature_table("x86_64") is X86_FLAGS and cpu_feature_table("aarch64") is ARM_FLAGS


def test_physical_cores_counts_package_core_pairs(tmp_path):
    for cpu, (package, core) in enumerate([(0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]):  # hyperthread pairs
        topo = tmp_path / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    assert physical_cores(tmp_path, {0, 1, 2, 3, 4}) == 3
    assert physical_cores(tmp_path, {0, 1}) == 1
    assert physical_cores(tmp_path, {0, 7}) is None  # cpu7's topology is unreadable


def test_usable_and_logical_cores():
    assert 1 <= machine.usable_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert machine.usable_cores() == len(os.sched_getaffinity(0))
    assert machine.logical_cores() == os.cpu_count()


def test_jetson_strings():
    assert parse_device_tree_model(ORIN_MODEL) == "NVIDIA Jetson AGX Orin Developer Kit"
    assert parse_device_tree_model("\x00") is None
    assert parse_l4t_release(L4T_R36).startswith("R36 (release), REVISION: 4.0, GCID: 37537400")
    assert parse_l4t_release("") is None
    assert looks_like_jetson("NVIDIA Jetson AGX Orin Developer Kit", None)
    assert looks_like_jetson("Jetson-AGX", None) and looks_like_jetson(None, "R35 (release), REVISION: 4.1")
    assert not looks_like_jetson("Raspberry Pi 4 Model B Rev 1.4", None) and not looks_like_jetson(None, None)


def test_jetson_reads_the_device_tree_and_l4t_release(tmp_path, monkeypatch):
    model, release = tmp_path / "model", tmp_path / "nv_tegra_release"
    monkeypatch.setattr(machine, "jetpack_version", lambda: "6.1+b123")
    assert machine.jetson(model, release) is None  # neither file
    model.write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    assert machine.jetson(model, release) is None
    model.write_text(ORIN_MODEL)
    release.write_text(L4T_R36)
    j = machine.jetson(model, release)
    assert j == Jetson(model="NVIDIA Jetson AGX Orin Developer Kit", l4t=parse_l4t_release(L4T_R36),
                       jetpack="6.1+b123")


def test_nvidia_smi_csv():
    csv = ("NVIDIA H200, 9.0, 143771 MiB, 550.54.15\nNo devices were found\n"
           "Orin (nvgpu), 8.7, [N/A], 540.4.0\n")
    assert parse_nvidia_smi(csv) == [
        {"name": "NVIDIA H200", "compute_capability": "9.0", "memory": "143771 MiB", "driver": "550.54.15",
         "via": "nvidia-smi"},
        {"name": "Orin (nvgpu)", "compute_capability": "8.7", "memory": "[N/A]", "driver": "540.4.0",
         "via": "nvidia-smi"}]
    assert parse_nvidia_smi("") == []


def test_gpus_prefer_nvidia_smi_then_cuda_then_the_jetson_device_tree(monkeypatch):
    smi = [{"name": "NVIDIA H200", "compute_capability": "9.0", "memory": "1 MiB", "driver": "1",
            "via": "nvidia-smi"}]
    cuda = [{**smi[0], "via": "pycuda"}]
    monkeypatch.setattr(machine, "nvidia_smi_gpus", lambda: smi)
    monkeypatch.setattr(machine, "pycuda_gpus", lambda: cuda)
    monkeypatch.setattr(machine, "device_tree_model", lambda: "NVIDIA Jetson Orin Nano Developer Kit")
    monkeypatch.setattr(machine, "l4t_release", lambda: None)
    assert machine.gpus(probe_cuda=True) == smi
    monkeypatch.setattr(machine, "nvidia_smi_gpus", lambda: [])
    assert machine.gpus(probe_cuda=True) == cuda
    (board,) = machine.gpus()
    assert board == {"name": "NVIDIA Jetson Orin Nano Developer Kit", "compute_capability": "", "memory": "",
                     "driver": "", "via": "device-tree"}
    monkeypatch.setattr(machine, "device_tree_model", lambda: "Raspberry Pi 4 Model B Rev 1.4")
    assert machine.gpus() == []


def test_tool_output():
    assert machine.tool_output(["no-such-tool-lfd-edge"]) is None
    assert machine.tool_output([sys.executable, "-c", "print(' hi ')"]) == "hi"
    assert machine.tool_output([sys.executable, "-c", "import sys; print('no'); sys.exit(3)"]) is None
    assert machine.tool_output([sys.executable, "-c", "pass"]) is None


def test_environment_has_the_machine_and_versions_without_torch():
    code = ("import json, sys; sys.modules['torch'] = None\n"
            "from runtime.machine import environment\n"
            "env = environment(3)\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None], 'torch imported'\n"
            "print(json.dumps(env))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    assert env["threads"] == 3 and env["cpu_affinity"] >= 1 and env["cpu_count"] >= env["cpu_affinity"]
    assert set(env["cpu_features"]) <= {*X86_FLAGS, *ARM_FLAGS} and isinstance(env["gpus"], list)
    assert env["python"] == sys.version.split()[0] and env["numpy"] and env["opencv"]
    assert {"onnxruntime", "torch", "tensorrt", "openvino", "nncf", "jetson", "cpu", "os", "time"} <= set(env)


@pytest.mark.parametrize("module", ["runtime.report", "runtime.check", "runtime.jetson_bench", "calib.int8"])
def test_the_old_homes_use_runtime_machine(module):
    """No module keeps its own copy of a machine fact: every function it holds under a name that
    runtime.machine defines is runtime.machine's."""
    import importlib

    mod = importlib.import_module(module)
    own = {name for name, value in vars(mod).items()
           if callable(value) and hasattr(machine, name) and value is not getattr(machine, name)}
    assert own == set()
    assert not hasattr(mod, "gpu_info") and not hasattr(mod, "X86_FLAGS")
