"""A memory model of decoder-only transformers, from a model's config alone (never its weights).

The figures count what a Llama-style decoder layer (RMSNorm, rotary attention with grouped key/value
heads, gated MLP: Llama, Qwen2, Mistral, Gemma) keeps alive, per token, in each kind of pass:

- a scoring pass (`scoring.py`): forward, then backward to the input embeddings with every
  parameter frozen. A linear layer `y = x W` then needs `W` (held anyway), not `x`, for the
  gradient of `x`, so autograd keeps only what non-linear operations need: each RMSNorm's input
  in fp32 (its upcast) and the attention kernel's query, key, value and output, and the MLP's
  gate, up and SiLU(gate).
- a training step (`distill.py`, `pretrain.py`): parameters require gradients, so every linear
  layer's input is kept as well (the normed hidden states, the attention output, SiLU(gate) · up).
- inference (generation, teacher logits, attention analysis): nothing is kept; the peak is one
  layer's largest live set.

Attention is assumed to run in a fused kernel (SDPA's memory-efficient or flash path) that keeps
only its output and one log-sum-exp per head and query, never the [B, H, T, T] matrix; with a
padding mask, transformers repeats the key/value heads to the query heads first (`repeat_kv`), so
key and value count at the query width. The logits count at every position in fp32 — an upper
bound for the passes that keep fewer. Biases and the extra norms of some families (Qwen2's q/k/v
bias, Gemma2's post-norms) are below 0.1 % of the parameters and left out.

Torch-free: the Snakefile imports this module to size jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FP32 = 4
# Families whose config class ties the output head to the embedding by default (a config.json that
# omits `tie_word_embeddings` gets its class's default; Llama, Qwen2 and Mistral default to untied).
_TIED_BY_DEFAULT = ("gemma",)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that fix its parameter count and activations."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool

    @property
    def q_dim(self) -> int:
        """Width of the queries (and of the attention output): heads × head_dim."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values): kv_heads × head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder layer: q and o projections, k and v projections, the gated MLP's three
        matrices (gate, up, down) and two RMSNorm weights."""
        attention = 2 * self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def params(self) -> int:
        """Embedding + layers + final norm + output head (0 when tied to the embedding)."""
        embedding = self.vocab * self.hidden
        head = 0 if self.tied_embeddings else embedding
        return embedding + self.layers * self.layer_params + self.hidden + head


def model_shape(config: Any) -> ModelShape:
    """The shape of a transformers `PretrainedConfig`, or of a config.json read as a dict.

    A multimodal config's language model is read: `get_text_config()` of an object, `text_config`
    of a dict. Missing `num_key_value_heads` means one key/value head per query head (multi-head
    attention); missing `head_dim` means hidden / heads, as the config classes default them.
    """
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    values = config if isinstance(config, Mapping) else vars(config)
    if isinstance(values.get("text_config"), Mapping):
        values = values["text_config"]
    heads = int(values["num_attention_heads"])
    hidden = int(values["hidden_size"])
    tied = values.get("tie_word_embeddings")
    if tied is None:
        tied = str(values.get("model_type", "")).startswith(_TIED_BY_DEFAULT)
    return ModelShape(
        layers=int(values["num_hidden_layers"]),
        hidden=hidden,
        intermediate=int(values["intermediate_size"]),
        heads=heads,
        kv_heads=int(values.get("num_key_value_heads") or heads),
        head_dim=int(values.get("head_dim") or hidden // heads),
        vocab=int(values["vocab_size"]),
        tied_embeddings=bool(tied),
    )


def weight_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    """Bytes of every parameter in `dtype_bytes` (a tied head is stored once)."""
    return shape.params * dtype_bytes


def logits_bytes_per_token(shape: ModelShape, dtype_bytes: int, *, backward: bool) -> int:
    """The head's output at one position: logits in `dtype_bytes`, their fp32 upcast for the loss
    (`logits.float()`), and with a backward the log-softmax kept for it and the fp32 gradient."""
    fp32_copies = 3 if backward else 1
    return shape.vocab * (dtype_bytes + fp32_copies * FP32)


def _attention_kept(shape: ModelShape, dtype_bytes: int) -> int:
    """What the fused attention kernel keeps per token and layer: query, key and value at the query
    width (`repeat_kv`), its output, and one fp32 log-sum-exp per head."""
    return 4 * shape.q_dim * dtype_bytes + shape.heads * FP32


def _layer_transient(shape: ModelShape, dtype_bytes: int) -> int:
    """One layer's largest live set beyond what is kept, per token: the MLP's gate, up, SiLU(gate)
    and their product (4 × intermediate) with the residual stream and its normed copy (2 × hidden).
    In a backward pass the gradients of the same tensors are live at once, so it counts twice
    there."""
    return (4 * shape.intermediate + 2 * shape.hidden) * dtype_bytes


def scoring_bytes_per_token(shape: ModelShape, dtype_bytes: int) -> int:
    """Peak activation bytes per token of one scoring pass: forward, backward to the input
    embeddings with parameters frozen, and the cross-entropy at every position in fp32 (an upper
    bound).

    Kept per layer: both RMSNorm inputs in fp32 (2 × hidden × 4), the attention kernel's tensors,
    and the MLP's gate, up and SiLU(gate) (3 × intermediate) for the backward of SiLU and of the
    product; plus the input embeddings and their gradient, and one layer's forward and backward
    transients while the backward runs through it.
    """
    kept = 2 * shape.hidden * FP32 + _attention_kept(shape, dtype_bytes)
    kept += 3 * shape.intermediate * dtype_bytes
    embeddings = 2 * shape.hidden * dtype_bytes
    transient = 2 * _layer_transient(shape, dtype_bytes)
    logits = logits_bytes_per_token(shape, dtype_bytes, backward=True)
    return shape.layers * kept + embeddings + transient + logits


def training_bytes_per_token(shape: ModelShape, dtype_bytes: int, *, checkpointing: bool) -> int:
    """Peak activation bytes per token of one training step's decoder (parameters require
    gradients), without the head: its logits exist a chunk of tokens at a time
    (`distill.kd.chunk_tokens`), so the caller adds `logits_bytes_per_token` × the chunk.

    Without checkpointing each layer keeps what scoring keeps plus what the weights' gradients
    need: each RMSNorm's normed input for its weight (2 × hidden) and its output, the next linear
    layers' input (2 × hidden), the attention output made contiguous for o_proj (q width), and
    SiLU(gate) · up for down_proj (intermediate). With gradient checkpointing a layer keeps only
    its input (hidden), and the one layer being recomputed holds its full set during its backward.
    """
    full = 2 * shape.hidden * FP32 + _attention_kept(shape, dtype_bytes)
    full += (4 * shape.hidden + shape.q_dim + 4 * shape.intermediate) * dtype_bytes
    kept = shape.hidden * dtype_bytes if checkpointing else full
    recomputed = full if checkpointing else 0
    return shape.layers * kept + recomputed + 2 * _layer_transient(shape, dtype_bytes)


def inference_bytes_per_token(shape: ModelShape, dtype_bytes: int, *, logits: bool = True) -> int:
    """Peak activation bytes per token of a forward pass without gradients: one layer's live set and
    the attention kernel's tensors (freed at the layer's end), and with `logits` the logits at every
    position with their fp32 upcast (an upper bound). `logits=False` for the passes that never form
    them for every token: generation (the last position only) and the teacher's hidden states,
    whose head runs a chunk at a time."""
    layer = _layer_transient(shape, dtype_bytes) + _attention_kept(shape, dtype_bytes)
    return layer + (logits_bytes_per_token(shape, dtype_bytes, backward=False) if logits else 0)


def kv_cache_bytes_per_token(shape: ModelShape, dtype_bytes: int) -> int:
    """Key and value of every layer for one cached token: 2 × layers × kv_heads × head_dim."""
    return 2 * shape.layers * shape.kv_dim * dtype_bytes


# The share of the free GPU memory a batch may plan to use: the rest covers what the per-token
# figures leave out (the allocator's fragmentation, kernels' workspaces).
BUDGET_MARGIN = 0.8


def tokens_within(free_bytes: int, per_token: int, margin: float = BUDGET_MARGIN) -> int:
    """Tokens of `per_token` bytes each that fit in `margin` × `free_bytes`. At least 1: a single
    sample is always tried (and fails loudly when even that cannot fit)."""
    return max(1, int(margin * free_bytes) // per_token)


def token_budget(
    shape: ModelShape,
    free_bytes: int,
    dtype_bytes: int,
    *,
    backward: bool,
    margin: float = BUDGET_MARGIN,
) -> int:
    """Tokens (batch × longest sample) whose activations fit in `margin` × `free_bytes`, the memory
    free once the weights are loaded; `backward` picks a scoring pass over inference."""
    per_token = (scoring_bytes_per_token if backward else inference_bytes_per_token)(
        shape, dtype_bytes
    )
    return tokens_within(free_bytes, per_token, margin)


def attention_analysis_bytes(shape: ModelShape, batch: int, tokens: int, dtype_bytes: int) -> int:
    """Peak extra bytes of the attention analysis forward (eager attention) on [batch, tokens].

    Eager attention materialises each layer's scores [B, H, T, T] in `dtype_bytes`; its softmax
    runs in fp32 and is cast back while the scores are still referenced, so one layer holds three
    copies at once: scores, fp32 probabilities, and their cast. (With fp32 weights the cast is no
    copy: an upper bound then.) Eager attention also takes a 4-D mask [B, 1, T, T]. The forward
    hook reduces the probabilities and frees them before the next layer, so one layer's count, on
    top of the batch's inference activations. The analysis runs the decoder alone: no logits.
    """
    squares = batch * tokens * tokens
    probabilities = squares * shape.heads * (FP32 + 2 * dtype_bytes)
    mask = squares * dtype_bytes
    return (
        probabilities
        + mask
        + batch * tokens * inference_bytes_per_token(shape, dtype_bytes, logits=False)
    )


def topk_cache_host_bytes(rows: int, k: int, *, batch_rows: int | None = None) -> int:
    """Peak host bytes of building a teacher top-k cache of `rows` trained tokens.

    The cache is int32 indices [rows, k] and float32 log-probabilities [rows, k], filled in place
    in preallocated arrays. One batch's top-k arrives from the device before it is copied in:
    int64 indices and float32 values [batch_rows, k]. `batch_rows`: the trained tokens of the
    largest batch (None: all rows, the bound when the batch size is unknown).
    """
    transient_rows = rows if batch_rows is None else min(rows, batch_rows)
    return rows * k * (4 + FP32) + transient_rows * k * (8 + FP32)
