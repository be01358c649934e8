"""Training throughput in the units reviewers compare: tokens per second and, on a GPU, MFU.

MFU (model FLOPs utilisation) = achieved model FLOPs / the device's peak. FLOPs per token follow
nanoGPT's estimate_mfu (after the PaLM paper, appendix B): 6N + 12*L*H*Q*T, with N the parameters
without position embeddings, L layers, H heads, Q head size, T the block size. The peak is measured
on the device itself (a large bf16 matmul), never taken from a data sheet.
"""

from __future__ import annotations

import time

import torch


def flops_per_token(model: torch.nn.Module, block_size: int) -> int:
    """6N + 12*L*H*Q*T for a GPT-2 or RoBERTa style model (tied weights counted once)."""
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    positions = sum(
        module.weight.numel()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Embedding) and name.split(".")[-1] in {"wpe", "position_embeddings"}
    )
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_size = config.hidden_size // heads
    return 6 * (parameters - positions) + 12 * layers * heads * head_size * block_size


def measured_peak_flops(dtype: torch.dtype = torch.bfloat16, size: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of a size x size matmul on the current CUDA device: the peak MFU is measured against."""
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):  # warm-up: cuBLAS picks its kernel
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def mfu(flops_per_token_: int, tokens_per_s: float, peak_flops: float) -> float:
    return flops_per_token_ * tokens_per_s / peak_flops
