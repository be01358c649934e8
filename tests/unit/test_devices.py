"""lmpipe.devices: the same config picks CUDA precision on GPUs and fp32 on CPUs, with no change."""

import pytest

from lmpipe import devices


@pytest.fixture
def gpu(monkeypatch):
    def install(native_bf16: bool) -> None:
        monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(devices.torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)

    return install


def test_cpu_plan_uses_fp32_and_every_given_core(monkeypatch):
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    plan = devices.plan_device("auto")
    assert (plan.device, plan.precision) == ("cpu", "fp32")
    assert plan.cpu_threads == devices.available_cores() >= 1


def test_cpu_plan_ignores_fp16_but_honours_an_explicit_bf16(monkeypatch):
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
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
