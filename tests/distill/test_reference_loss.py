import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from leafpipe.distill.reference_loss import token_kl
from leafpipe.text.batching import collate
from leafpipe.text.templates import encode_sample


def _logits(seed: int, shape=(2, 5, 7)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


MASK = torch.tensor([[False, True, True, True, False], [False, False, True, False, False]])


def test_zero_for_identical_logits_and_positive_otherwise():
    t, s = _logits(0), _logits(1)
    torch.testing.assert_close(token_kl(t, t.clone(), MASK), torch.zeros(2), atol=1e-6, rtol=0)
    kl = token_kl(t, s, MASK)
    assert kl.shape == (2,)
    assert (kl > 0).all()


def test_matches_categorical_kl_with_temperature():
    t, s, tau = _logits(0), _logits(1), 2.0
    per_token = kl_divergence(Categorical(logits=t / tau), Categorical(logits=s / tau))  # [B, T-1]
    expected = torch.stack([per_token[b][MASK[b]].mean() for b in range(2)]) * tau**2
    torch.testing.assert_close(token_kl(t, s, MASK, temperature=tau), expected)


def test_temperature_squared_scaling():
    # Softening logits scaled by tau with temperature tau gives the unsoftened KL, times tau².
    t, s, tau = _logits(0), _logits(1), 3.0
    torch.testing.assert_close(
        token_kl(t * tau, s * tau, MASK, temperature=tau), tau**2 * token_kl(t, s, MASK)
    )


def test_unmasked_positions_do_not_matter():
    t, s = _logits(0), _logits(1)
    t2, s2 = t.clone(), s.clone()
    t2[~MASK] = float("nan")
    s2[~MASK] = 1e4
    torch.testing.assert_close(token_kl(t2, s2, MASK), token_kl(t, s, MASK))


def test_forward_kl_not_reverse():
    t, s = _logits(0), _logits(1)
    assert not torch.allclose(token_kl(t, s, MASK), token_kl(s, t, MASK))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="share a vocabulary"):
        token_kl(_logits(0), _logits(1, (2, 5, 8)), MASK)
    with pytest.raises(ValueError, match=r"logits\[:, :-1\]"):
        token_kl(_logits(0, (2, 6, 7)), _logits(1, (2, 6, 7)), MASK)


def test_models_zero_for_same_weights_positive_for_different(tokenizer, samples, tiny_llama):
    batch = collate([encode_sample(tokenizer, *s) for s in samples], tokenizer.pad_token_id)

    def logits(model):
        with torch.no_grad():
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return out.logits[:, :-1]

    a, a_again, b = logits(tiny_llama(0)), logits(tiny_llama(0)), logits(tiny_llama(1))
    torch.testing.assert_close(
        token_kl(a, a_again, batch.target_mask), torch.zeros(2), atol=1e-6, rtol=0
    )
    assert (token_kl(a, b, batch.target_mask) > 1e-4).all()
