"""The teacher's top-k log-probs cached to disk stand in for the teacher in the kd variants."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from cache_settings import cache_settings
from distill_groups import many_groups, mixed_groups, same, weights
from safetensors.torch import load_file

from leafpipe.distill.data import MODES, DistillGroup, Text, encode_groups, n_trained
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.teacher_cache import (
    TeacherCache,
    build_teacher_cache,
    every_sample,
    sample_key,
)
from leafpipe.distill.trainer import distill
from leafpipe.text.templates import encode_sample

# Two optimiser steps of two micro-batches, originals and counterfactuals both trained.
SPEC = DistillSpec(
    lam=1.0, epochs=1, global_batch=4, micro_batch=2, lr=3e-3, warmup_ratio=0.0, seed=0
)


def cache_of(teacher, tokenizer, groups, path, k, temperature=1.0) -> TeacherCache:
    samples = every_sample(encode_groups(tokenizer, groups))
    build_teacher_cache(teacher, samples, path, **cache_settings(tokenizer, k, temperature))
    return TeacherCache(path)


def test_cache_holds_every_sample_and_trained_token(tokenizer, samples, tiny_llama, tmp_path):
    groups = many_groups(samples, 8)
    cache = cache_of(tiny_llama(0), tokenizer, groups, tmp_path / "c.safetensors", k=7)
    encoded = encode_groups(tokenizer, groups)
    assert len(cache.rows) == sum(1 + len(e.counterfactuals) for e in encoded)
    tensors = load_file(tmp_path / "c.safetensors")
    assert tensors["indices"].dtype == torch.int32 and tensors["logprobs"].dtype == torch.float32
    assert tensors["indices"].shape == (int(tensors["offsets"][-1]), 7)
    assert (tensors["logprobs"].exp().sum(1) <= 1 + 1e-5).all()
    cache.check(groups, encoded)


@pytest.mark.parametrize("mode", MODES)
def test_full_vocabulary_cache_trains_like_the_teacher(
    tokenizer, samples, tiny_llama, tmp_path, mode
):
    groups = many_groups(samples, 8)
    cache = cache_of(tiny_llama(0), tokenizer, groups, tmp_path / "c.safetensors", k=len(tokenizer))
    spec = DistillSpec(**{**SPEC.__dict__, "counterfactuals": mode})
    live = weights(distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1))
    cached = weights(distill(None, tiny_llama(1), tokenizer, groups, spec, 1, teacher_cache=cache))
    assert not same(live, weights(tiny_llama(1)))
    for a, b in zip(live, cached):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_packed_batches_read_the_cache_in_their_own_order(tokenizer, samples, tiny_llama, tmp_path):
    groups = mixed_groups(samples)
    cache = cache_of(tiny_llama(0), tokenizer, groups, tmp_path / "c.safetensors", k=len(tokenizer))
    spec = DistillSpec(**{**SPEC.__dict__, "global_batch": 8, "micro_batch": 8})
    live = weights(distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1))
    packed = DistillSpec(**{**spec.__dict__, "packing": True})
    cached = weights(
        distill(None, tiny_llama(1), tokenizer, groups, packed, 1, teacher_cache=cache)
    )
    for a, b in zip(live, cached):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_smaller_k_trains_and_differs(tokenizer, samples, tiny_llama, tmp_path):
    groups = many_groups(samples, 8)
    full = cache_of(
        tiny_llama(0), tokenizer, groups, tmp_path / "full.safetensors", k=len(tokenizer)
    )
    small = cache_of(tiny_llama(0), tokenizer, groups, tmp_path / "small.safetensors", k=4)
    a = weights(distill(None, tiny_llama(1), tokenizer, groups, SPEC, 1, teacher_cache=full))
    b = weights(distill(None, tiny_llama(1), tokenizer, groups, SPEC, 1, teacher_cache=small))
    assert all(torch.isfinite(w).all() for w in b)
    assert not same(b, weights(tiny_llama(1)))
    assert max((x - y).abs().max().item() for x, y in zip(a, b)) > 1e-5


def test_missing_sample_is_a_clear_error_naming_it(tokenizer, samples, tiny_llama, tmp_path):
    groups = many_groups(samples, 8)
    # g0's counterfactual is absent from the cache: it was built from the originals alone.
    originals = [DistillGroup(g.original, source_id=g.source_id) for g in groups]
    cache = cache_of(tiny_llama(0), tokenizer, originals, tmp_path / "c.safetensors", k=4)
    with pytest.raises(ValueError, match=r"no entry for the counterfactual 0 of sample 'g0'"):
        distill(None, tiny_llama(1), tokenizer, groups, SPEC, 1, teacher_cache=cache)


def test_cache_settings_must_match_the_run(tokenizer, samples, tiny_llama, tmp_path):
    groups = many_groups(samples, 4)
    cache = cache_of(
        tiny_llama(0), tokenizer, groups, tmp_path / "c.safetensors", k=4, temperature=2.0
    )
    with pytest.raises(ValueError, match="temperature 2.0"):
        distill(None, tiny_llama(1), tokenizer, groups, SPEC, 1, teacher_cache=cache)


def test_sft_ignores_the_cache(tokenizer, samples, tiny_llama, tmp_path):
    groups = many_groups(samples, 4)
    sft = DistillSpec(**{**SPEC.__dict__, "objective": "ce"})
    cache = cache_of(
        tiny_llama(0), tokenizer, groups[:1], tmp_path / "c.safetensors", k=4
    )  # misses samples
    a = weights(distill(None, tiny_llama(1), tokenizer, groups, sft, 1))
    b = weights(distill(None, tiny_llama(1), tokenizer, groups, sft, 1, teacher_cache=cache))
    assert same(a, b)


def test_another_cache_changes_the_run_fingerprint(tokenizer, samples, tiny_llama, tmp_path):
    """A work folder left by a run on one cache is not resumed by a run on another."""
    groups = many_groups(samples, 4)
    prints = []
    for k in (4, 5):
        cache = cache_of(tiny_llama(0), tokenizer, groups, tmp_path / f"c{k}.safetensors", k=k)
        distill(
            None,
            tiny_llama(1),
            tokenizer,
            groups,
            SPEC,
            1,
            work_dir=tmp_path / f"w{k}",
            teacher_cache=cache,
        )
        info = json.loads((tmp_path / f"w{k}" / "training.json").read_text())
        assert info["teacher_cache"]["k"] == k and info["teacher_cache"]["digest"] == cache.digest
        prints.append(info["fingerprint"])
    assert prints[0] != prints[1]


def test_stages_build_the_cache_and_train_without_the_teacher(
    tokenizer, samples, tiny_llama, tmp_path
):
    """teacher_logits then distill, as the rules run them: the kd job trains from the cache
    alone."""
    from leafpipe import stages
    from leafpipe.config import validate_config
    from leafpipe.files.atomic import write_jsonl
    from leafpipe.models.pretrain import save_model

    save_model(tiny_llama(0), tokenizer, tmp_path / "teacher")
    save_model(tiny_llama(1), tokenizer, tmp_path / "student")
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(
        [{"id": f"s{i}", "instruction": q, "response": a} for i, (q, a) in enumerate(samples)],
        corpus,
    )
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "seed": 0,
            "distill": {
                "teacher_topk": 6,
                "epochs": 1,
                "global_batch": 2,
                "micro_batch": 2,
                "val_fraction": 0,
            },
        }
    )
    cache = tmp_path / "teacher_logits" / "corpus.safetensors"
    stages.teacher_logits(
        config, tmp_path / "teacher", tmp_path / "student", corpus, cache, "corpus"
    )
    assert TeacherCache(cache).k == 6 and len(TeacherCache(cache).rows) == len(samples)
    (tmp_path / "teacher").rename(tmp_path / "gone")  # the distill job must not need the teacher
    stages.distill(
        config,
        "kd",
        tmp_path / "teacher",
        tmp_path / "student",
        corpus,
        tmp_path / "kd",
        teacher_cache=cache,
    )
    info = json.loads((tmp_path / "kd" / "training.json").read_text())
    assert info["teacher_cache"]["k"] == 6 and info["teacher_cache"]["path"] == str(cache)


def test_response_level_counterfactuals_cache_only_their_later_steps(
    tokenizer, samples, tiny_llama, tmp_path
):
    """A counterfactual whose pruned first step is context: the cache holds its trained tokens
    only, and training from the cache equals training with the teacher."""
    groups = many_groups(samples, 4)
    for g in groups:
        response = g.original[1]
        later = response.index("Step 2")
        g.counterfactuals.append(
            Text(g.original[0], "Step 1: pruned.\n" + response[later:], len("Step 1: pruned.\n"))
        )
    cache = cache_of(tiny_llama(0), tokenizer, groups, tmp_path / "c.safetensors", k=len(tokenizer))
    for g, enc in zip(groups, encode_groups(tokenizer, groups)):
        span = cache.rows[sample_key(enc.counterfactuals[-1])]
        whole = encode_sample(tokenizer, *g.counterfactuals[-1][:2])  # the same text trained from 0
        assert span[1] - span[0] == n_trained(enc.counterfactuals[-1]) < n_trained(whole)
    live = weights(distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, SPEC, 1))
    cached = weights(distill(None, tiny_llama(1), tokenizer, groups, SPEC, 1, teacher_cache=cache))
    for a, b in zip(live, cached):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _bench():
    """bench/teacher_cache_memory.py, whose `plain_cache` is the way the cache was built before."""
    path = Path(__file__).resolve().parents[2] / "bench" / "teacher_cache_memory.py"
    spec = importlib.util.spec_from_file_location("bench_teacher_cache_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n_groups", [0, 6])
def test_the_cache_file_is_the_one_built_the_plain_way(
    tokenizer, samples, tiny_llama, tmp_path, n_groups
):
    """Same tensors, layout and digest as before the arrays were preallocated: existing caches stay
    valid. The header is compared parsed: safetensors writes the metadata in a random order."""
    teacher = tiny_llama(0)
    samples_ = every_sample(encode_groups(tokenizer, many_groups(samples, 8)[:n_groups]))
    settings = cache_settings(tokenizer)
    bench = _bench()
    build_teacher_cache(teacher, samples_, tmp_path / "new.safetensors", **settings)
    bench.plain_cache(teacher, samples_, tmp_path / "plain.safetensors", **settings)
    new, plain = (
        bench.header_and_data(tmp_path / f"{way}.safetensors") for way in ("new", "plain")
    )
    assert bool(samples_) == bool(n_groups)
    assert plain[0]["indices"]["shape"] == [sum(n_trained(s) for s in samples_), 5]
    assert new == plain
