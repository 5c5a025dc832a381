import torch

from leafpipe.batching import collate, response_cross_entropy
from leafpipe.templates import encode_sample


def test_padding_does_not_change_a_samples_loss(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    encs = [encode_sample(tokenizer, *s) for s in samples]
    together = collate(encs, tokenizer.pad_token_id)
    with torch.no_grad():
        both = response_cross_entropy(model(input_ids=together.input_ids, attention_mask=together.attention_mask).logits, together)
        for i, enc in enumerate(encs):
            alone = collate([enc], tokenizer.pad_token_id)
            single = response_cross_entropy(model(input_ids=alone.input_ids, attention_mask=alone.attention_mask).logits, alone)
            torch.testing.assert_close(both[i], single[0], rtol=1e-5, atol=1e-5)


def test_targets_are_the_response_tokens_shifted(tokenizer, samples):
    enc = encode_sample(tokenizer, *samples[0])
    batch = collate([enc], tokenizer.pad_token_id)
    targets = batch.input_ids[0, 1:][batch.target_mask[0]].tolist()
    expected = [t for t, m in zip(enc.input_ids, enc.loss_mask()) if m]
    assert targets == expected
    assert targets[-1] == tokenizer.eos_token_id
