"""lmpipe.compute.devices: the same config picks CUDA precision on GPUs and fp32 on CPUs, with no change."""

import functools

import pytest

from lmpipe.compute import cpu as cpu_info
from lmpipe.compute import devices


@pytest.fixture
def gpu(monkeypatch):
    def install(native_bf16: bool) -> None:
        monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(devices.torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)

    return install


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """No GPU, and a CPU with the given feature flags (as /proc/cpuinfo lists them)."""

    read_flags = cpu_info.cpu_flags

    def install(flags: str) -> None:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
        monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(cpu_info, "cpu_flags", functools.partial(read_flags, cpuinfo))

    return install


def test_cpu_plan_uses_fp32_and_every_given_core_without_native_bf16(cpu):
    cpu("fpu sse2 avx2 fma avx512f avx512bw")  # AVX-512 alone only emulates bf16
    plan = devices.plan_device("auto")
    assert (plan.device, plan.precision) == ("cpu", "fp32")
    assert plan.cpu_threads == devices.available_cores() >= 1


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_picks_bf16_on_cpus_that_compute_it_natively(cpu, flag):
    cpu(f"fpu avx2 avx512f {flag} avx512_vnni")
    assert (devices.plan_device("auto").device, devices.plan_device("auto").precision) == ("cpu", "bf16")
    assert devices.plan_device("fp32").precision == "fp32"  # an explicit choice wins


def test_cpu_flags_are_read_from_the_flags_line_and_empty_without_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16\nbugs\t\t: spectre_v1\n")
    assert cpu_info.cpu_flags(cpuinfo) == {"fpu", "avx512_bf16"}
    assert cpu_info.cpu_flags(tmp_path / "missing") == frozenset()


def test_cpu_plan_ignores_fp16_but_honours_an_explicit_bf16(cpu):
    cpu("fpu avx2")
    assert devices.plan_device("fp16").precision == "fp32"
    assert devices.plan_device("bf16").precision == "bf16"


def test_auto_picks_bf16_on_gpus_with_native_bf16(gpu):
    gpu(native_bf16=True)
    assert (devices.plan_device("auto").device, devices.plan_device("auto").precision) == ("cuda", "bf16")


def test_auto_picks_fp16_where_bf16_would_only_be_emulated(gpu):
    gpu(native_bf16=False)  # a T4 or V100
    assert devices.plan_device("auto").precision == "fp16"


def test_explicit_precision_wins_on_gpu(gpu):
    gpu(native_bf16=True)
    assert devices.plan_device("fp32").precision == "fp32"
