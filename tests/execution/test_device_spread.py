"""Code paths that run on a model spread over two GPUs (`device_map="auto"`), simulated on the CPU
by `device_spread`: the harness raises where two real GPUs would, and each path gives, spread, the
numbers it gives on one device."""

from __future__ import annotations

import copy

import accelerate
import numpy as np
import pandas as pd
import pytest
import torch
from cache_settings import cache_settings
from device_spread import TwoDevices, device_map, spread_over_two_gpus
from safetensors.torch import load_file

from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.distill.heads import output_head, response_hidden
from leafpipe.distill.kd_loss import ce_loss_sum, kd_loss_sum
from leafpipe.distill.spec import KDSpec
from leafpipe.distill.teacher_cache import build_teacher_cache
from leafpipe.distill.topk import teacher_topk
from leafpipe.evaluation.attention import AttentionSample, attention_shares
from leafpipe.evaluation.generation import SamplingSpec, generate
from leafpipe.prune.validity import token_nlls
from leafpipe.text.batching import collate
from leafpipe.text.templates import encode_sample

DEVICE_ERROR = "Expected all tensors to be on the same device"
CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


TIES = pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])


def _llama(make, tied: bool = False):
    """Four layers, so that each simulated GPU holds two. Untied, the LM head sits on the last GPU;
    tied to the embeddings (Llama-3.2-1B, small Qwen2.5), it stays with them on the first."""
    return make(0, num_hidden_layers=4, tie_word_embeddings=tied)


@pytest.fixture
def llama(tiny_llama):
    return _llama(tiny_llama)


@pytest.fixture(params=[False, True], ids=["untied", "tied"])
def model(request, tiny_llama):
    """For the paths that call the LM head themselves: a head on either GPU."""
    return _llama(tiny_llama, request.param)


def _batch(tokenizer, samples, device):
    return collate([encode_sample(tokenizer, *s) for s in samples], tokenizer.pad_token_id).to(
        device
    )


# --- the harness itself ---------------------------------------------------------------------------


def test_ops_mixing_devices_raise_as_on_two_gpus():
    with TwoDevices():
        x = torch.arange(12.0, device="cuda:1").view(6, 2)
        assert x.device == CUDA1 and x.is_cuda
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            x.index_select(0, torch.tensor([1, 2], device="cuda:0"))
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            x.index_select(
                0, torch.tensor([1, 2])
            )  # a host index: index_select wants its own device
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            x + torch.ones(2)
        with pytest.raises(TypeError, match="cuda:1 device type tensor to numpy"):
            x.numpy()
        host = torch.zeros(6, 2)
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            host[torch.tensor([1, 2], device="cuda:1")]  # CUDA indices into a host tensor
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            host[torch.tensor([1, 2])] = x[:2]  # advanced assignment: index_put_ on the host
        host[:2] = x[:2]  # a slice assignment is a copy_, which crosses devices
        assert host.copy_(x).device.type == "cpu" and host.sum().item() == 66.0
        # What CUDA allows: host index tensors in indexing, CPU scalars, explicit copies and moves.
        assert x[torch.tensor([1, 2])].device == CUDA1
        assert (x * torch.tensor(2.0)).device == CUDA1
        moved = x.to(CUDA0)
        assert moved.device == CUDA0 and x.device == CUDA1
        assert x.cpu().device.type == "cpu" and x.sum().item() == 66.0
        assert (moved + torch.ones(2).to(moved.device)).device == CUDA0


def test_hf_logits_to_keep_with_a_first_gpu_index_raises(llama):
    ids = torch.randint(0, llama.config.vocab_size, (2, 9))
    with spread_over_two_gpus(llama), pytest.raises(RuntimeError, match=DEVICE_ERROR):
        llama(
            input_ids=ids.to(llama.device), logits_to_keep=torch.arange(3, 8, device=llama.device)
        )


@TIES
def test_a_spread_forward_gives_the_same_logits_on_the_input_device(tiny_llama, tied):
    llama = _llama(tiny_llama, tied)
    ids = torch.randint(0, llama.config.vocab_size, (2, 9))
    reference = llama(input_ids=ids).logits
    with spread_over_two_gpus(llama):
        assert llama.device == CUDA0 and llama.lm_head.weight.device == (CUDA0 if tied else CUDA1)
        logits = llama(input_ids=ids.to(llama.device)).logits
        assert logits.device == CUDA0  # the top-level model returns to its input's device
        assert llama.get_decoder()(input_ids=ids.to(llama.device)).last_hidden_state.device == CUDA1
        logits = logits.cpu()
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)
    assert llama.device.type == "cpu" and not llama._forward_hooks and not llama._forward_pre_hooks


def test_the_harness_places_outputs_as_accelerates_own_hooks_do(llama):
    """The same model dispatched by accelerate itself (its hooks, run under the harness's device
    rules) returns every output on the device the harness returns it on, with the same values."""
    llama.set_attn_implementation("eager")  # only eager attention returns its weights
    dispatched = copy.deepcopy(llama)
    ids = torch.randint(0, llama.config.vocab_size, (2, 9))

    def outputs(model):
        out = model(input_ids=ids.to(model.device), output_attentions=True)
        hidden = model.get_decoder()(input_ids=ids.to(model.device)).last_hidden_state
        return [t.device for t in (out.logits, *out.attentions, hidden)], out.logits.cpu()

    with spread_over_two_gpus(llama):
        ours = outputs(llama)
    with TwoDevices():
        placement = {name: torch.device("cuda", gpu) for name, gpu in device_map(llama).items()}
        accelerate.dispatch_model(
            dispatched, placement, skip_keys=dispatched._skip_keys_device_placement
        )
        theirs = outputs(dispatched)
    # Logits and attentions come back to the input's GPU; the decoder's own output stays on the
    # last.
    assert ours[0] == theirs[0] == [CUDA0] * (1 + llama.config.num_hidden_layers) + [CUDA1]
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)


# --- the paths that run on a spread model --------------------------------------------------------


def test_scoring_a_spread_model_gives_the_same_scores(model, tokenizer, samples):
    rows = [{"id": f"s{i}", "instruction": a, "response": b} for i, (a, b) in enumerate(samples)]
    spec = ScoreSpec(max_tokens=10**6)  # the same batches on a CPU and a (simulated) GPU
    alone = score_samples(model, tokenizer, rows, spec)
    with spread_over_two_gpus(model):
        spread = score_samples(model, tokenizer, rows, spec)
    pd.testing.assert_frame_equal(spread, alone, rtol=1e-5, atol=1e-6)


def test_validity_losses_of_a_spread_model_are_the_same(model, tokenizer, samples):
    encoded = [encode_sample(tokenizer, *s) for s in samples]
    alone = token_nlls(model, encoded, tokenizer.pad_token_id, max_tokens=10**6)
    with spread_over_two_gpus(model):
        spread = token_nlls(model, encoded, tokenizer.pad_token_id, max_tokens=10**6)
    for a, b in zip(spread, alone):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_teacher_cache_built_on_a_spread_teacher_is_the_same(model, tokenizer, samples, tmp_path):
    encoded = [encode_sample(tokenizer, *s) for s in samples]

    def build(path):
        settings = cache_settings(tokenizer, batch_size=2, chunk_tokens=8)
        build_teacher_cache(model, encoded, path, **settings)
        return load_file(path)

    alone = build(tmp_path / "alone.safetensors")
    with spread_over_two_gpus(model):
        spread = build(tmp_path / "spread.safetensors")
    assert spread.keys() == alone.keys()
    for name in alone:
        torch.testing.assert_close(spread[name], alone[name], rtol=1e-5, atol=1e-6)


def _losses(student, teacher, batch):
    """CE, full-teacher KD and top-k KD sums from `response_hidden`, and the KD gradient of the
    student's head; `batch` and the top-k rows stay where the caller put them (the first GPU).
    The head runs in fp32 both ways: "auto" would choose bf16 on the (simulated) GPU."""
    spec = KDSpec(kind="jsd", temperature=2.0, chunk_tokens=32, head_precision="fp32")
    hidden = response_hidden(student, batch.input_ids, batch.attention_mask)
    with torch.no_grad():
        t_hidden = response_hidden(teacher, batch.input_ids, batch.attention_mask)
        top = teacher_topk(t_hidden, output_head(teacher), batch.target_mask, 6, 2.0, 32)
    top = top.to(batch.input_ids.device)  # as `distill` puts a cached top-k next to the batch
    head = output_head(student)
    ce = ce_loss_sum(hidden, head, batch.input_ids, batch.target_mask, 32, head_precision="fp32")
    kd = kd_loss_sum(hidden, head, t_hidden, output_head(teacher), batch.target_mask, spec)
    kd_top = kd_loss_sum(hidden, head, None, None, batch.target_mask, spec, teacher_topk=top)
    (grad,) = torch.autograd.grad(kd + kd_top + ce, head.weight)
    return [x.detach().cpu() for x in (ce, kd, kd_top, grad)]


@TIES
def test_distillation_losses_of_spread_models_are_the_same(tiny_llama, tokenizer, samples, tied):
    student = tiny_llama(1, num_hidden_layers=4, tie_word_embeddings=tied)
    teacher = _llama(tiny_llama, tied)
    alone = _losses(student, teacher, _batch(tokenizer, samples, "cpu"))
    with spread_over_two_gpus(student, teacher):
        spread = _losses(student, teacher, _batch(tokenizer, samples, student.device))
    for a, b in zip(spread, alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_attention_shares_of_a_spread_model_are_the_same(llama, tokenizer, samples):
    attention = [AttentionSample(a, b, [(0, 9)], planted_spans=[(0, 9)]) for a, b in samples]
    alone = attention_shares(llama, tokenizer, attention, batch_size=2)
    with spread_over_two_gpus(llama):
        spread = attention_shares(llama, tokenizer, attention, batch_size=2)
    pd.testing.assert_frame_equal(spread, alone, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "sampling",
    [SamplingSpec(), SamplingSpec(n=2, temperature=1.0, stop=("\n",), seed=3)],
    ids=["greedy", "sampled"],
)
def test_generation_on_a_spread_model_is_the_same(llama, tokenizer, samples, tmp_path, sampling):
    rows = [{"id": f"r{i}", "instruction": a} for i, (a, _) in enumerate(samples)]

    def run(name):
        return generate(
            llama,
            tokenizer,
            rows,
            max_new_tokens=6,
            batch_size=2,
            sampling=sampling,
            partial_path=tmp_path / f"{name}.partial.jsonl",
        )

    alone = run("alone")
    with spread_over_two_gpus(llama):
        spread = run("spread")
    assert spread == alone
