"""Tokenizers in the formats of real chat-model families, trained offline for tests.

Each family gets a tiny byte-level BPE with its own special tokens and its model repository's chat
template, character for character.
"""

from typing import NamedTuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

# Real chat templates, character for character as their model repositories ship them. Each family
# gets a tiny byte-level BPE trained offline, with its own special tokens.
QWEN2 = (  # Qwen2-7B-Instruct: ChatML with a default system prompt
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (  # Meta-Llama-3-8B-Instruct: content is trimmed
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
GEMMA = (  # gemma-2-2b-it: content is trimmed, the assistant is "model"
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
MISTRAL = (  # Mistral-7B-Instruct-v0.1: "[INST] " runs straight into the content
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

# family: (template, special tokens, bos, eos = end of turn, whether content is trimmed)
FAMILIES = {
    "qwen2": (QWEN2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", False),
    "llama3": (
        LLAMA3,
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        True,
    ),
    "gemma": (
        GEMMA,
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<end_of_turn>",
        True,
    ),
    "mistral": (MISTRAL, ["<unk>", "<s>", "</s>"], "<s>", "</s>", False),
}


def family_tokenizer(
    family: str, texts: list[str], vocab_size: int = 320
) -> PreTrainedTokenizerFast:
    template, specials, bos, eos, _ = FAMILIES[family]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=specials[0]
    )
    tok.chat_template = template
    return tok


class Shipped(NamedTuple):
    """What a family's model repository ships beside its template: the tokenizer's pad token
    (None: it has none) and the end-of-turn tokens its generation_config.json lists, which
    differ from the tokenizer's one eos."""

    pad: str | None
    generation_eos: tuple[str, ...]


# Meta-Llama-3-8B-Instruct: no pad token; generation_config eos [<|end_of_text|>, <|eot_id|>] while
# the tokenizer's eos is <|eot_id|>. Qwen2-7B-Instruct: pad <|endoftext|>, generation_config eos
# [<|im_end|>, <|endoftext|>] while the tokenizer's eos is <|im_end|>.
SHIPPED = {
    "llama3": Shipped(None, ("<|end_of_text|>", "<|eot_id|>")),
    "qwen2": Shipped("<|endoftext|>", ("<|im_end|>", "<|endoftext|>")),
}


def shipped_tokenizer(
    family: str, texts: list[str], vocab_size: int = 320
) -> PreTrainedTokenizerFast:
    """`family_tokenizer` as its model repository ships it (`SHIPPED`): with its pad token or
    none, and with the generation eos tokens it lacks appended as special tokens, so every id
    `family_tokenizer` gives keeps its meaning."""
    tok = family_tokenizer(family, texts, vocab_size)
    shipped = SHIPPED[family]
    missing = [t for t in shipped.generation_eos if t not in tok.get_vocab()]
    tok.add_special_tokens({"additional_special_tokens": missing})
    tok.pad_token = shipped.pad
    return tok


def shipped_generation_config(family: str, tokenizer) -> GenerationConfig:
    """The family's generation_config.json for `shipped_tokenizer`'s ids: its eos list."""
    eos = [tokenizer.convert_tokens_to_ids(t) for t in SHIPPED[family].generation_eos]
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos)
