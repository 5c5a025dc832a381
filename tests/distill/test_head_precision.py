"""The student head's matrix products in bf16 (`KDSpec.head_precision`) against fp32, on the CPU.

The tolerance is derived, not tuned. bf16 keeps 8 significant bits, so rounding a value to bf16
moves it by at most u = 2^-9 of itself. A bf16 product of two rounded factors is off by at most
2u = 2^-8 of |a| |b| per term (the "2^-8 per product"); its terms are summed in fp32 (rounding
2^-24, negligible here) and the result is rounded to bf16 once more (u). So every bf16 matrix
product A B differs from the exact one by at most C |A| |B| elementwise, C = 3u. Propagated to first
order through the loss (with the fp32 derivatives of the per-token divergence D(z) of the student's
logits z, gradient G and Hessian K):
- logits: |dz| <= eps_z = C |h| |W|^T;
- loss: |dL| <= sum |G| eps_z;
- dL/dz: |dG| <= |K| eps_z + C |G| (the logits' error, then G rounded to bf16 for its products);
- hidden-state gradient G W: |dG| |W|; weight gradient G^T h: |dG|^T |h|.
The neglected terms are smaller by a further factor of about max eps_z (asserted below 0.1).
"""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from device_spread import TwoDevices
from kd_tensors import B, T, V, make_tensors, reference_divergence, token_mask
from torch import nn
from torch.func import grad, hessian, vmap

from leafpipe.distill.kd_loss import ce_loss_sum, kd_loss_sum
from leafpipe.distill.spec import KD_KINDS, KDSpec

C = 3 * 2.0**-9  # a bf16 matrix product's error, relative to |A| |B| (module docstring)
FP32_SLACK = 1e-5  # both paths' own fp32 rounding, on values of order 1
KINDS = (*KD_KINDS, "ce")


def _ids() -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))


def _loss(
    kind: str, precision: str, head: nn.Module, sh, th, thead, mask, chunk: int
) -> torch.Tensor:
    if kind == "ce":
        return ce_loss_sum(sh, head, _ids(), mask, chunk, precision)
    return kd_loss_sum(
        sh, head, th, thead, mask, KDSpec(kind=kind, chunk_tokens=chunk, head_precision=precision)
    )


def _bounds(kind: str, sh, shead, th, thead, mask):
    """First-order bounds on |bf16 - fp32| of the loss, of the hidden-state gradient's trained rows
    [N, H] and of the head weight's gradient [V, H], and max eps_z (module docstring)."""
    h = sh.detach().double()[:, :-1][mask]
    w = shead.weight.detach().double()
    with torch.no_grad():
        log_p = torch.log_softmax(thead(th)[:, :-1][mask].double(), -1)
    onehot = F.one_hot(_ids()[:, 1:][mask], V).double()

    def divergence(z, log_p, onehot):  # D of one token's student logits z [V]
        log_q = torch.log_softmax(z, -1)
        if kind == "ce":
            return -(onehot * log_q).sum()
        return reference_divergence(kind, log_p[None], log_q[None], 0.5)[0]

    z = h @ w.T
    g = vmap(grad(divergence))(z, log_p, onehot)  # [N, V]
    k = vmap(hessian(divergence))(z, log_p, onehot)  # [N, V, V]
    eps_z = C * (h.abs() @ w.abs().T)
    eps_g = (k.abs() @ eps_z[..., None])[..., 0] + C * g.abs()
    return (g.abs() * eps_z).sum(), eps_g @ w.abs(), eps_g.T @ h.abs(), eps_z.max()


@pytest.mark.parametrize("head_kind", ["linear", "module"])
@pytest.mark.parametrize("chunk", [0, 4])
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_head_matches_fp32_within_bf16_rounding(kind, chunk, head_kind):
    # "module": a head that is not a plain nn.Linear takes the checkpointed path, under bf16
    # autocast.
    sh, shead, th, thead = make_tensors(40)
    head = shead if head_kind == "linear" else nn.Sequential(shead)
    mask = token_mask("right_padding")
    out = {}
    for precision in ("fp32", "bf16"):
        loss = _loss(kind, precision, head, sh, th, thead, mask, chunk)
        out[precision] = (loss.detach(), *torch.autograd.grad(loss, (sh, shead.weight)))
    (l32, gh32, gw32), (l16, gh16, gw16) = out["fp32"], out["bf16"]
    loss_bound, rows_bound, weight_bound, eps_z = _bounds(kind, sh, shead, th, thead, mask)
    assert eps_z < 0.1  # the premise of a first-order bound
    assert not torch.equal(gw16, gw32)  # the products did run in bf16
    assert abs(l16 - l32).item() <= loss_bound + FP32_SLACK
    trained = torch.cat([mask, torch.zeros(B, 1, dtype=torch.bool)], 1)
    assert not gh16[~trained].any()
    assert ((gh16[trained] - gh32[trained]).abs() <= rows_bound + FP32_SLACK).all()
    assert ((gw16 - gw32).abs() <= weight_bound + FP32_SLACK).all()


@pytest.mark.parametrize("head_kind", ["linear", "module"])
def test_bf16_weight_gradient_is_summed_over_chunks_in_fp32(head_kind):
    """One token per chunk: the weight gradient is the sum of the one-token gradients (each one
    token's bf16 product) to within fp32 summation, N terms each rounding by at most 2^-24 of the
    running sum. Summed in bf16 it would be off by up to 2^-9 of the running sum at every chunk."""
    sh, shead, th, thead = make_tensors(41)
    head = shead if head_kind == "linear" else nn.Sequential(shead)
    mask = token_mask("full")
    spec = KDSpec(chunk_tokens=1, head_precision="bf16")
    (whole,) = torch.autograd.grad(kd_loss_sum(sh, head, th, thead, mask, spec), shead.weight)
    parts = []
    for b, t in mask.nonzero().tolist():
        one = torch.zeros_like(mask)
        one[b, t] = True
        parts.append(
            torch.autograd.grad(kd_loss_sum(sh, head, th, thead, one, spec), shead.weight)[
                0
            ].double()
        )
    terms = torch.stack(parts)
    bound = len(parts) * 2.0**-24 * terms.abs().sum(0)
    assert ((whole.double() - terms.sum(0)).abs() <= bound).all()


@pytest.mark.parametrize("kind", KINDS)
def test_auto_is_fp32_on_the_cpu_bit_for_bit(kind):
    sh, shead, th, thead = make_tensors(42)
    mask = token_mask("right_padding")
    auto, fp32 = (_loss(kind, p, shead, sh, th, thead, mask, 3) for p in ("auto", "fp32"))
    assert torch.equal(auto, fp32)
    for a, b in zip(
        torch.autograd.grad(auto, (sh, shead.weight)), torch.autograd.grad(fp32, (sh, shead.weight))
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_auto_is_bf16_on_cuda(kind):
    # A simulated GPU (tests/support/device_spread.py): the tensors report cuda:0 and compute on the
    # CPU.
    sh, shead, th, thead = make_tensors(43)
    mask = token_mask("right_padding")
    bf16 = _loss(kind, "bf16", shead, sh, th, thead, mask, 3).detach()
    with TwoDevices() as gpus:
        for t in (sh, th, shead.weight, thead.weight):
            gpus.tags[t] = 0
        auto = _loss(kind, "auto", shead, sh, th, thead, mask, 3).detach()
        assert auto.device == torch.device("cuda", 0)
    assert torch.equal(auto, bf16)


def test_bench_prints_the_fp32_over_bf16_time_ratio(capsys):
    path = Path(__file__).resolve().parents[2] / "bench" / "head_precision.py"
    spec = importlib.util.spec_from_file_location("bench_head_precision", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    times = bench.main(
        [
            "--tokens",
            "16",
            "--hidden",
            "8",
            "--vocab",
            "50",
            "--chunk-tokens",
            "4",
            "--repeats",
            "1",
            "--threads",
            "1",
        ]
    )
    assert set(times) == {"fp32", "bf16"} and all(t > 0 for t in times.values())
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"fp32/bf16 time ratio: {times['fp32'] / times['bf16']:.2f}x"
