"""`distill.kd.backend: liger` (`leafpipe.distill.liger_loss`): the mapping onto Liger's arguments,
the scaling of its mean to `kd_loss_sum`'s sum (through a torch stand-in on the CPU, for real on a
CUDA GPU), and the refusals and errors that come before a run's first step."""

import importlib.util
import sys
import types
from dataclasses import replace

import pytest
import torch
from distill_groups import many_groups
from kd_tensors import V, make_tensors, token_mask
from liger_standin import FusedLinearJSDStandIn
from torch import nn

from leafpipe.config import ConfigError, validate_config
from leafpipe.distill.checkpoints import TrainingState
from leafpipe.distill.heads import SoftcappedHead
from leafpipe.distill.kd_loss import kd_loss_sum
from leafpipe.distill.liger_loss import (
    NEEDS_TEACHER,
    check_liger_run,
    liger_arguments,
    liger_weight,
    require_liger,
)
from leafpipe.distill.spec import KD_KINDS, DistillSpec, KDSpec
from leafpipe.distill.summary import training_summary
from leafpipe.distill.topk import teacher_topk
from leafpipe.distill.trainer import distill

MODELS = {"teacher": {}, "student": {}}
# fp32 on both sides: the same arithmetic in another order (the stand-in and Liger take a mean
# and leafpipe multiplies it by N tau**2 again).
FP32_TOL = dict(rtol=1e-5, atol=1e-6)


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.fixture
def standin(monkeypatch) -> list[FusedLinearJSDStandIn]:
    """liger-kernel's fused JSD module replaced by `FusedLinearJSDStandIn`; the instances made."""
    module = types.ModuleType("liger_kernel.transformers.fused_linear_jsd")
    module.LigerFusedLinearJSD = FusedLinearJSDStandIn
    monkeypatch.setitem(sys.modules, module.__name__, module)
    FusedLinearJSDStandIn.made.clear()
    return FusedLinearJSDStandIn.made


# --- the mapping and the scaling --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "jsd_beta"), [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.3)]
)
def test_each_divergence_maps_to_ligers_jsd_beta(kind, jsd_beta):
    """Liger's beta weighs the teacher P in M = beta P + (1 - beta) Q: 0 is KL(P || Q), 1 is
    KL(Q || P); only jsd passes its own beta."""
    spec = KDSpec(kind=kind, beta=0.3, temperature=2.5)
    assert liger_arguments(spec) == {"jsd_beta": jsd_beta, "temperature": 2.5}


@pytest.mark.parametrize("layout", ["right_padding", "nothing"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_ligers_mean_times_n_tau_squared_is_kd_loss_sum(standin, kind, tau, layout):
    """Through the stand-in, loss and gradients equal the chunked loss's, with a teacher head
    larger than the student's (cut to its vocabulary) and with no trained token at all."""
    sh, shead, th, thead = make_tensors(teacher_vocab=V + 5)
    mask = token_mask(layout)
    chunked = KDSpec(kind=kind, temperature=tau, beta=0.3, head_precision="fp32")
    want = kd_loss_sum(sh, shead, th, thead, mask, chunked)
    got = kd_loss_sum(sh, shead, th, thead, mask, replace(chunked, backend="liger"))
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got, want, **FP32_TOL)
    for g, w in zip(_grads(got, sh, shead.weight), _grads(want, sh, shead.weight)):
        torch.testing.assert_close(g, w, **FP32_TOL)
    assert len(standin) == (layout != "nothing")  # Liger divides by its rows: none, no call
    got = kd_loss_sum(sh, shead, th, thead, mask, replace(chunked, backend="liger"))
    assert torch.autograd.grad(got, (th, thead.weight), allow_unused=True) == (None, None)


@pytest.mark.parametrize(("precision", "accum"), [("fp32", None), ("bf16", torch.float32)])
def test_bf16_products_sum_the_weight_gradient_in_fp32(standin, precision, accum):
    """bf16 hands Liger bf16 rows and a bf16 copy of the weight (the stand-in refuses mixed
    dtypes) and asks for fp32 sums; the fp32 master weight still gets an fp32 gradient."""
    sh, shead, th, thead = make_tensors()
    spec = KDSpec(head_precision=precision, backend="liger")
    loss = kd_loss_sum(sh, shead, th, thead, token_mask("full"), spec)
    assert standin[0].accum_dtype == accum
    grad_h, grad_w = _grads(loss, sh, shead.weight)
    assert grad_h.dtype == grad_w.dtype == torch.float32
    # bf16 rounding of logits of a few units: agreement with fp32 to about 1e-2 relative
    chunked = kd_loss_sum(sh, shead, th, thead, token_mask("full"), KDSpec(head_precision="fp32"))
    torch.testing.assert_close(loss, chunked, rtol=2e-2, atol=0.0)


# --- settings and refusals --------------------------------------------------------------------


def test_backend_is_validated_and_read_from_the_config():
    with pytest.raises(ValueError, match="unknown backend 'fused'"):
        KDSpec(backend="fused")
    with pytest.raises(ConfigError, match="backend"):
        validate_config({"models": MODELS, "distill": {"kd": {"backend": "fused"}}})
    for given, backend in (({}, "chunked"), ({"kd": {"backend": "liger"}}, "liger")):
        config = validate_config({"models": MODELS, "distill": given})
        spec = DistillSpec.from_config(config["distill"], objective="kd", seed=0)
        assert spec.kd.backend == backend


def test_config_refuses_liger_with_a_teacher_topk_cache():
    with pytest.raises(ConfigError, match=r"distill\.kd\.backend: liger .*distill\.teacher_topk"):
        validate_config(
            {"models": MODELS, "distill": {"kd": {"backend": "liger"}, "teacher_topk": 8}}
        )


def test_kd_loss_sum_refuses_a_top_k_teacher_with_liger(standin):
    sh, shead, th, thead = make_tensors()
    mask = token_mask("full")
    top = teacher_topk(th, thead, mask, 4, 1.0, 0)
    spec = KDSpec(backend="liger")
    with pytest.raises(ValueError, match="distill.kd.backend: liger"):
        kd_loss_sum(sh, shead, None, None, mask, spec, teacher_topk=top)
    assert standin == []


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (nn.Linear(4, 7, bias=True), "has a bias"),
        (SoftcappedHead(nn.Linear(4, 7, bias=False), 30.0), "soft-caps its logits"),
        (nn.Sequential(nn.Linear(4, 7, bias=False)), "is a Sequential"),
    ],
)
def test_liger_refuses_heads_it_cannot_fuse(head, problem):
    with pytest.raises(ValueError, match=f"distill.kd.backend: liger .*the teacher's {problem}"):
        liger_weight(head, "teacher")
    plain = nn.Linear(4, 7, bias=False)
    assert liger_weight(plain, "student") is plain.weight


def test_without_cuda_a_liger_run_stops_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"distill\.kd\.backend: liger .*need a CUDA GPU"):
        require_liger()


def test_without_liger_kernel_a_run_stops_with_the_install_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # find_spec: not importable
    with pytest.raises(ImportError, match=r"distill\.kd\.backend: liger .*'leafpipe\[liger\]'"):
        require_liger()


def test_a_liger_run_needs_the_teacher_model_not_its_cache(tiny_llama):
    with pytest.raises(ValueError, match="distill.teacher_topk: null") as err:
        check_liger_run(tiny_llama(1), None)
    assert str(err.value) == NEEDS_TEACHER


def test_the_trainer_stops_before_its_first_step(tokenizer, samples, tiny_llama, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    steps = []
    spec = DistillSpec(kd=KDSpec(backend="liger"), epochs=1, global_batch=2, micro_batch=2)
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        distill(
            tiny_llama(0),
            tiny_llama(1),
            tokenizer,
            many_groups(samples, 2),
            spec,
            1,
            on_step=lambda step, row: steps.append(step),
        )
    assert steps == []


def test_training_json_records_the_backend():
    """The report labels a run by `settings.kd.backend` of training.json."""
    run = dict.fromkeys(
        ("groups_train", "groups_validation", "groups_with_counterfactuals", "steps_per_epoch"), 1
    )
    kept = {"keep": "last", "kept": "last", "kept_epoch": 1}
    for backend in ("chunked", "liger"):
        spec = DistillSpec(kd=KDSpec(backend=backend))
        summary = training_summary(spec, TrainingState(), run=run, kept=kept, environment={})
        assert summary["settings"]["kd"]["backend"] == backend


# --- on a CUDA GPU, against Liger itself ------------------------------------------------------

# bf16: the chunked path rounds the bf16 products' logits to bf16 (8 significant bits: logits of
# a few units move by up to ~1e-2), Liger (0.8.5) keeps them in fp32 and rounds the weight
# gradient to bf16 once more, so loss and gradients agree to a few 1e-2, norm-wise. fp32 (TF32
# off): the same fp32 arithmetic in another order.
PARITY_TOL = {"fp32": 1e-4, "bf16": 3e-2}


def _close_in_norm(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    error = (got.float() - want.float()).norm() / want.float().norm()
    assert error <= rel, f"relative error {error:.2e} > {rel:.0e}"


@pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel not installed"
)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's Triton kernels need a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_liger_matches_the_chunked_loss_on_cuda(kind, tau, precision, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "fp32_precision", "ieee")
    sh, shead, th, thead = make_tensors(teacher_vocab=V + 5)
    sh = sh.detach().cuda().requires_grad_()
    shead, th = shead.cuda(), th.detach().cuda()
    thead = thead.cuda().to(torch.bfloat16 if precision == "bf16" else torch.float32)
    mask = token_mask("right_padding").cuda()
    chunked = KDSpec(kind=kind, temperature=tau, beta=0.3, head_precision=precision)
    want = kd_loss_sum(sh, shead, th, thead, mask, chunked)
    got = kd_loss_sum(sh, shead, th, thead, mask, replace(chunked, backend="liger"))
    _close_in_norm(got, want, PARITY_TOL[precision])
    for g, w in zip(_grads(got, sh, shead.weight), _grads(want, sh, shead.weight)):
        _close_in_norm(g, w, PARITY_TOL[precision])
