"""Hardware detection against this machine's real llama.cpp build, and against fake /proc and /sys trees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localseek.planning import backends, hardware
from localseek.errors import UsageError
from localseek.sizes import GiB


@pytest.mark.parametrize(
    "text, value",
    [("24GiB", 24 * GiB), ("24G", 24 * GiB), ("24 GB", 24 * GiB), ("1.5T", int(1.5 * 1024**4)), ("512M", 512 << 20),
     ("0", 0), ("4096", 4096)],
)
def test_parse_size(text: str, value: int) -> None:
    assert hardware.parse_size(text) == value


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(UsageError, match="24GiB"):
        hardware.parse_size("lots")


def test_this_machine() -> None:
    hw = hardware.detect()
    assert not hw.simulated and hw.memory.total > 0 and 0 < hw.memory.available <= hw.memory.total
    assert 1 <= hw.cpu.physical_cores <= hw.cpu.logical_cpus
    assert "CPU" in hw.backends and hw.backends == tuple(backends.registries())
    assert hw.cpu.build_features  # what this llama.cpp build's CPU backend was compiled with
    cpu_dev = [d for d in backends.devices() if d.kind == "CPU"]
    assert cpu_dev and cpu_dev[0].backend == "CPU"
    assert backends.buffer_type_name(backends.cpu_buffer_type()) == "CPU"
    json.dumps(hw.to_dict())


def fake_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


MEMINFO = "MemTotal:       16384000 kB\nMemFree:  1000 kB\nMemAvailable:   12000000 kB\nSwapTotal: 2097152 kB\n" \
    "SwapFree: 1048576 kB\n"


def test_cgroup_limit_caps_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tree(tmp_path, {
        "/proc/meminfo": MEMINFO,
        "/sys/fs/cgroup/memory.max": str(4 * GiB),
        "/sys/fs/cgroup/memory.current": str(1 * GiB),
    })
    monkeypatch.setattr(hardware, "ROOT", tmp_path)
    mem = hardware.memory()
    assert mem.source == "cgroup" and mem.total == 4 * GiB and mem.available == 3 * GiB
    assert mem.swap_total == 2 * GiB and mem.swap_free == 1 * GiB


def test_unlimited_cgroup_uses_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tree(tmp_path, {"/proc/meminfo": MEMINFO, "/sys/fs/cgroup/memory.max": "max\n"})
    monkeypatch.setattr(hardware, "ROOT", tmp_path)
    mem = hardware.memory()
    assert mem.source == "/proc/meminfo" and mem.total == 16384000 * 1024 and mem.cgroup_limit is None


def test_raspberry_pi_and_other_boards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tree(tmp_path, {"/proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00"})
    monkeypatch.setattr(hardware, "ROOT", tmp_path)
    board = hardware._board()
    assert board is not None and board.raspberry_pi == 5
    assert hardware.board_from_model("Raspberry Pi 4 Model B Rev 1.4").raspberry_pi == 4
    assert hardware.board_from_model("Radxa ROCK 5B").raspberry_pi is None
    pi = hardware.simulated(ram=8 * GiB, cores=4, board="Raspberry Pi 5 Model B Rev 1.0", arch="aarch64")
    assert pi.is_small_arm_board


def test_arm_cpu_named_from_its_part_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pi's /proc/cpuinfo has no model name, only implementer and part: 0x41 / 0xd0b is a Cortex-A76."""
    cores = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                    f"atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
                    f"CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n" for i in range(4))
    fake_tree(tmp_path, {"/proc/cpuinfo": cores})
    monkeypatch.setattr(hardware, "ROOT", tmp_path)
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    cpu = hardware._cpu([], {})
    assert cpu.model == "Cortex-A76" and "asimddp" in cpu.features


def test_gpus_the_build_cannot_use_get_a_reinstall_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tree(tmp_path, {
        "/proc/driver/nvidia/gpus/0000:01:00.0/information": "Model: \t NVIDIA GeForce RTX 4090\nIRQ: 1\n",
        "/sys/class/drm/card1/device/vendor": "0x1002\n",
        "/sys/class/drm/card1/device/mem_info_vram_total": str(24 * GiB),
        "/sys/class/drm/card1/device/mem_info_vram_used": str(1 * GiB),
    })
    monkeypatch.setattr(hardware, "ROOT", tmp_path)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)  # no nvidia-smi
    gpus = hardware._unseen_gpus()
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "AMD GPU"]
    assert not any(g.usable for g in gpus) and gpus[1].memory_free == 23 * GiB
    hw = hardware.simulated(ram=64 * GiB)
    hw = hardware.Hardware(system="Linux", cpu=hw.cpu, memory=hw.memory, gpus=(gpus[0],), backends=("CPU",))
    cmd = hardware.gpu_install_hint(hw, python="/venv/bin/python")
    assert cmd == ('CMAKE_ARGS="-DGGML_CUDA=on" /venv/bin/python -m pip install --force-reinstall --no-cache-dir '
                   "--no-binary llama-cpp-python llama-cpp-python==0.3.36")
    assert hardware.gpu_install_hint(hardware.simulated(ram=64 * GiB, vram=24 * GiB)) is None


def test_what_if_replaces_only_what_is_given() -> None:
    base = hardware.detect()
    assert hardware.what_if(base) is base
    hw = hardware.what_if(base, ram=192 * GiB, vram=24 * GiB)
    assert hw.simulated and hw.memory.available == 192 * GiB and hw.vram_free == 24 * GiB
    assert hw.cpu == base.cpu
    no_gpu = hardware.what_if(base, vram=0)
    assert not no_gpu.usable_gpus and no_gpu.memory.available == base.memory.available


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args], check=False, capture_output=True, text=True, timeout=120)


def test_doctor() -> None:
    r = run_cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert "CPU" in data["llama_cpp"]["backends"] and data["llama_cpp"]["llama_cpp_python"] == "0.3.36"
    assert data["hardware"]["cpu"]["physical_cores"] >= 1
    human = run_cli("doctor")
    assert human.returncode == 0 and "backends: CPU" in human.stdout and "physical cores" in human.stdout


def test_ram_override_takes_sizes_as_help_shows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from localseek.errors import UsageError
    from localseek.planning.hardware import memory

    monkeypatch.setenv("LOCALSEEK_RAM_BYTES", "16GiB")  # the example `localseek --help` gives
    assert memory().total == memory().available == 16 * 2**30
    monkeypatch.setenv("LOCALSEEK_RAM_BYTES", "100000")
    assert memory().available == 100000
    monkeypatch.setenv("LOCALSEEK_RAM_BYTES", "lots")
    with pytest.raises(UsageError, match="LOCALSEEK_RAM_BYTES"):
        memory()
