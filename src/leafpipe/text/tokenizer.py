"""Build a small byte-level BPE chat tokenizer offline, saved like any Hugging Face tokenizer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    TokenizersBackend,
)

from leafpipe.files.atomic import atomic_path

BOS, EOS, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"

# ChatML, as used by Qwen and SmolLM: content is inserted verbatim, which span finding relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` with ChatML special tokens and template.

    Digits are split one per token so numbers are spelled out digit by digit: small models
    then learn arithmetic on digits instead of memorising one token per number.
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    with atomic_path(out_dir, directory=True) as tmp:
        tokenizer.save_pretrained(tmp)


def load_tokenizer(
    path: str | Path, *, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """AutoTokenizer, unless its class rewrote the folder's own tokenizer.json pipeline.

    transformers 5 forces a model-specific class from `model_type` (Qwen2Tokenizer for qwen2),
    which may replace the saved pre-tokenizer or add tokens; then teacher and student could
    tokenise the same text differently. The saved tokenizer.json is the truth.
    """
    tok = AutoTokenizer.from_pretrained(
        str(path), trust_remote_code=trust_remote_code, revision=revision
    )
    saved_file = Path(path) / "tokenizer.json"
    if not saved_file.is_file():
        return tok
    saved = Tokenizer.from_file(str(saved_file))
    backend = tok.backend_tokenizer
    if (
        saved.get_vocab_size(with_added_tokens=True) != len(tok)
        or repr(saved.pre_tokenizer) != repr(backend.pre_tokenizer)
        or repr(saved.normalizer) != repr(backend.normalizer)
    ):
        tok = TokenizersBackend.from_pretrained(str(path))
    return tok
