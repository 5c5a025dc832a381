import torch

from leafpipe.text.batching import collate, pack, response_cross_entropy
from leafpipe.text.templates import encode_sample


def test_padding_does_not_change_a_samples_loss(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    encs = [encode_sample(tokenizer, *s) for s in samples]
    together = collate(encs, tokenizer.pad_token_id)
    with torch.no_grad():
        both = response_cross_entropy(
            model(input_ids=together.input_ids, attention_mask=together.attention_mask).logits,
            together,
        )
        for i, enc in enumerate(encs):
            alone = collate([enc], tokenizer.pad_token_id)
            single = response_cross_entropy(
                model(input_ids=alone.input_ids, attention_mask=alone.attention_mask).logits, alone
            )
            torch.testing.assert_close(both[i], single[0], rtol=1e-5, atol=1e-5)


def test_targets_are_the_response_tokens_shifted(tokenizer, samples):
    enc = encode_sample(tokenizer, *samples[0])
    batch = collate([enc], tokenizer.pad_token_id)
    targets = batch.input_ids[0, 1:][batch.target_mask[0]].tolist()
    expected = [t for t, m in zip(enc.input_ids, enc.loss_mask()) if m]
    assert targets == expected
    assert targets[-1] == tokenizer.eos_token_id


def test_length_grouped_batches_cover_each_sample_once_with_little_padding():
    import random

    from leafpipe.text.batching import length_grouped

    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(1000)]
    order = random.Random(1).sample(range(1000), 1000)
    batches = length_grouped(order, lengths, 8, random.Random(2), chunk_batches=10)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert [len(b) for b in batches].count(8) == 125
    assert all(lengths[b[0]] == max(lengths[i] for i in b) for b in batches)  # longest first

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    unsorted = [order[k : k + 8] for k in range(0, 1000, 8)]
    assert padding(batches) < 0.2 * padding(unsorted)
    # Batches stay within their chunk of 80 samples of `order`, shuffled there.
    assert all({order.index(i) // 80 for i in b} == {k // 10} for k, b in enumerate(batches))
    assert [lengths[b[0]] for b in batches[:10]] != sorted(
        (lengths[b[0]] for b in batches[:10]), reverse=True
    )
    assert length_grouped(order, lengths, 8, random.Random(2), chunk_batches=10) == batches


def _mixed_lengths(tokenizer, samples):
    """Samples of very different lengths: the two fixtures, shortened and lengthened."""
    (i0, r0), (i1, r1) = samples
    pairs = [
        (i0, r0),
        ("Hi.", "7"),
        (i1 + " " + i0, r1 + "\n" + r0),
        ("Add 3 and 4.", "The answer is 7."),
        (i1, r1),
    ]
    return [encode_sample(tokenizer, *p) for p in pairs]


def test_pack_places_every_sample_once_in_fewer_rows(tokenizer, samples):
    encs = _mixed_lengths(tokenizer, samples)
    batch, order = pack(encs, tokenizer.pad_token_id)
    assert sorted(order) == list(range(len(encs)))
    width = max(len(e) for e in encs)
    assert batch.input_ids.shape[1] == width and batch.attention_mask is None
    assert batch.input_ids.shape[0] < len(encs)  # the short samples share rows
    # The trained targets, row-major, are each sample's trained tokens in `order`.
    targets = batch.input_ids[:, 1:][batch.target_mask].tolist()
    expected = [t for i in order for t, m in zip(encs[i].input_ids, encs[i].loss_mask()) if m]
    assert targets == expected
    # Position ids restart at 0 at every sample.
    starts = (batch.position_ids == 0).sum().item()
    assert starts >= len(encs)


def test_packing_does_not_change_a_samples_hidden_states(
    tokenizer, samples, tiny_llama, tiny_qwen2
):
    from leafpipe.distill.heads import response_hidden

    encs = _mixed_lengths(tokenizer, samples)
    for make in (tiny_llama, tiny_qwen2):
        model = make(0)
        padded = collate(encs, tokenizer.pad_token_id)
        packed, order = pack(encs, tokenizer.pad_token_id)
        with torch.no_grad():
            h_pad = response_hidden(model, padded.input_ids, padded.attention_mask)
            h_pack = response_hidden(model, packed.input_ids, None, packed.position_ids)
        rows_pad = h_pad[:, :-1][padded.target_mask]
        # The padded batch's trained rows in sample order, reordered to the packed order.
        per_sample = torch.split(rows_pad, padded.target_mask.sum(1).tolist())
        torch.testing.assert_close(
            h_pack[:, :-1][packed.target_mask],
            torch.cat([per_sample[i] for i in order]),
            rtol=1e-5,
            atol=1e-5,
        )
