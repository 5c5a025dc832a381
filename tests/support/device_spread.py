"""A model spread over two CUDA devices, simulated on the CPU:
`with spread_over_two_gpus(model): ...`.

Why: `load_placed_model` spreads a model over every visible GPU with `device_map="auto"`, and code
that leaves a tensor on the wrong GPU crashes only there. This harness makes the same code raise
the same `RuntimeError` on a CPU-only machine, without changing any value it computes.

How accelerate's `dispatch_model` places a model (accelerate/big_modeling.py, hooks.py), mirrored
here: every dispatched block (embeddings, each decoder layer, the final norm, the rotary embedding,
the LM head) gets a hook that moves its inputs to its own device; the top-level model (module "",
`io_same_device=True`) moves its inputs to the first GPU and all of its outputs (a nested
`send_to_device`: logits, attentions, hidden states) back to the device of its first input tensor.
The inner decoder (`model.get_decoder()`) has no hook of its own, so when it is called directly its
`last_hidden_state` comes out on the LAST GPU. Here the embeddings and the first half of the
decoder layers sit on cuda:0; the other layers, the norm, the rotary embedding and the LM head on
cuda:1, unless the head is tied to the embeddings (accelerate keeps tied weights together).

Tensors stay real CPU tensors; a `TorchFunctionMode` tags each with a simulated device (host, i.e.
untagged, cuda:0 or cuda:1) and enforces PyTorch's device rules (docs, "CUDA semantics") on every
torch call:
- an op's tensors must share a device ("Expected all tensors to be on the same device"), except
  0-dim host tensors, which CUDA kernels accept as scalars (TensorIterator's CPU-scalar rule;
  0-dim CUDA tensors get no such pass since PyTorch 1.6). The exemption is applied to every op, so
  the harness can miss a 0-dim host tensor given to a non-elementwise op, but never raises falsely;
- indexing (`t[idx]`, `t[idx] = v`) also accepts host index tensors, which PyTorch copies to the
  indexed tensor's device; `index_select` and other ops do not;
- `dst.copy_(src)` and a slice assignment `t[a:b] = v` copy across devices, as on GPUs;
- outputs take their inputs' device, or the `device=` of a factory call (`torch.full(...,
  device=cuda:1)`); `Tensor.device` reports the simulated device, so `.to(x.device)` works;
- `.to(cuda:k)` / `.cuda()` / `.cpu()` return a copy on the other device (never retag the source);
- `.numpy()` of a CUDA tensor raises TypeError as on GPUs (`.tolist()` and `.item()` are fine);
- `torch.autograd.grad` returns each gradient on its input's device (as does `.grad`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils.weak import WeakTensorKeyDictionary

HOST = None  # the tag of an untagged tensor: a real CPU tensor
_INDEXING = (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
_MOVES = (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu)
_DEVICE, _IS_CUDA = torch.Tensor.device.__get__, torch.Tensor.is_cuda.__get__


def _name(tag: int | None) -> str:
    return "cpu" if tag is HOST else f"cuda:{tag}"


def _tag_of_device(device: Any) -> int | None:
    """The tag of a device given as torch.device, string or GPU number."""
    if isinstance(device, int):
        return device
    device = torch.device(device)
    return HOST if device.type == "cpu" else (device.index or 0)


class TwoDevices(TorchFunctionMode):
    """The device rules of two GPUs and a host; `tags` maps a tensor to its simulated GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: WeakTensorKeyDictionary = WeakTensorKeyDictionary()

    def tag(self, t: torch.Tensor) -> int | None:
        return self.tags.get(t, HOST)

    def place(self, out: Any, tag: int | None) -> Any:
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                if tag is HOST:
                    self.tags.pop(t, None)
                else:
                    self.tags[t] = tag
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == _DEVICE and self.tag(args[0]) is not HOST:
            return torch.device("cuda", self.tag(args[0]))
        if func == _IS_CUDA:
            return self.tag(args[0]) is not HOST
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and self.tag(args[0]) is not HOST:
            raise TypeError(
                f"can't convert {_name(self.tag(args[0]))} device type tensor to numpy. "
                "Use Tensor.cpu() to copy the tensor to host memory first."
            )
        if func in _MOVES:
            return self._move(func, args, kwargs)
        if func is torch.autograd.grad:
            inputs = args[1] if len(args) > 1 else kwargs["inputs"]
            inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
            grads = func(*args, **kwargs)
            return tuple(self.place(g, self.tag(x)) for g, x in zip(grads, inputs))
        if (
            kwargs.get("device") is not None
        ):  # a factory call: a CPU tensor tagged with the asked device
            tag = _tag_of_device(kwargs["device"])
            return self.place(func(*args, **{**kwargs, "device": "cpu"}), tag)
        tag = self._common_tag(func, args, kwargs)
        return self.place(func(*args, **kwargs), tag)

    def _common_tag(self, func, args: tuple, kwargs: dict) -> int | None:
        """The one device an op's tensors are on, or RuntimeError as on GPUs."""
        if func == torch.Tensor.copy_:
            return self.tag(args[0])
        checked = pytree.tree_leaves((args, kwargs))
        if func in _INDEXING:
            index = [t for t in pytree.tree_leaves(args[1]) if isinstance(t, torch.Tensor)]
            checked = [args[0]] + [t for t in index if self.tag(t) is not HOST]
            if func is torch.Tensor.__setitem__ and index:  # advanced indexing: index_put_
                checked.append(args[2])
        tensors = [t for t in checked if isinstance(t, torch.Tensor)]
        tags = {self.tag(t) for t in tensors if not (self.tag(t) is HOST and t.dim() == 0)}
        if len(tags) > 1:
            a, b, *_ = sorted(_name(t) for t in tags)
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two "
                f"devices, {a} and {b}! (simulated, in {getattr(func, '__name__', func)})"
            )
        if tags:
            return tags.pop()
        return self.tag(tensors[0]) if tensors else HOST

    def _move(self, func, args: tuple, kwargs: dict) -> torch.Tensor:
        """`.to` / `.cuda` / `.cpu`: a copy on the target device; the source keeps its own."""
        src, dtype, copy = args[0], None, kwargs.get("copy", False)
        if func is torch.Tensor.cpu:
            target = HOST
        elif func is torch.Tensor.cuda:
            target = _tag_of_device(args[1] if len(args) > 1 else kwargs.get("device") or "cuda")
        elif len(args) > 1 and isinstance(
            args[1], torch.Tensor
        ):  # .to(other): its device and dtype
            target, dtype = self.tag(args[1]), args[1].dtype
        else:
            options = {k: v for k, v in kwargs.items() if k != "copy"}
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **options)
            target = self.tag(src) if device is None else _tag_of_device(device)
        out = src if dtype is None else src.to(dtype)
        if out is src and (copy or target != self.tag(src)):
            out = src.clone()
        return self.place(out, target)


def _to(tree: Any, device: torch.device) -> Any:
    """Every tensor of a nested structure moved to `device` (accelerate's `send_to_device`)."""
    return pytree.tree_map_only(torch.Tensor, lambda t: t.to(device), tree)


def _move_inputs(device: torch.device):
    """A forward pre-hook that moves a block's inputs to its device (accelerate's `pre_forward`)."""
    return lambda module, args, kwargs: _to((args, kwargs), device)


def device_map(model: nn.Module) -> dict[str, int]:
    """The simulated spread as accelerate's `device_map`, {block name: GPU}: the decoder's children
    before its layers and the first half of the layers on GPU 0, the rest of the decoder and every
    other child of the model (the LM head) on GPU 1, unless tied to a block of GPU 0."""
    decoder = model.get_decoder()
    prefix = next(name for name, module in model.named_children() if module is decoder)
    placed: dict[str, int] = {}
    gpu = 0
    for name, child in decoder.named_children():
        if isinstance(child, nn.ModuleList):
            placed.update(
                {f"{prefix}.{name}.{i}": int(2 * i >= len(child)) for i in range(len(child))}
            )
            gpu = 1
        else:
            placed[f"{prefix}.{name}"] = gpu
    # A head tied to the embeddings stays with them: accelerate keeps tied weights on one device.
    first = {
        p for name, on in placed.items() if on == 0 for p in model.get_submodule(name).parameters()
    }
    placed.update(
        {
            name: int(not first.intersection(child.parameters()))
            for name, child in model.named_children()
            if child is not decoder
        }
    )
    return placed


def _dispatch(model: nn.Module, mode: TwoDevices) -> list[Any]:
    """Tag `model`'s blocks with their GPU and add accelerate's hooks; returns the hook handles."""
    handles = []
    for name, gpu in device_map(model).items():
        block = model.get_submodule(name)
        for t in (*block.parameters(), *block.buffers()):
            mode.tags[t] = gpu
        handles.append(
            block.register_forward_pre_hook(
                _move_inputs(torch.device("cuda", gpu)), with_kwargs=True
            )
        )
    input_device: list[
        torch.device
    ] = []  # the device of the first input tensor of the current call

    def record_and_move(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        input_device[:] = [t.device for t in tensors[:1]]
        return _to((args, kwargs), torch.device("cuda", 0))

    def move_back(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        return _to(output, input_device[0]) if input_device else output

    handles.append(model.register_forward_pre_hook(record_and_move, with_kwargs=True))
    handles.append(model.register_forward_hook(move_back, with_kwargs=True))
    return handles


@contextlib.contextmanager
def spread_over_two_gpus(*models: nn.Module, free_bytes: int = 80 * 2**30) -> Iterator[TwoDevices]:
    """Run the block as if each of `models` had been dispatched over cuda:0 and cuda:1; on exit the
    hooks are removed and every tensor is a plain CPU tensor again (tags die with the mode).

    Code that sees a CUDA device may ask the CUDA runtime for its free memory (to size batches):
    `torch.cuda.mem_get_info` answers `free_bytes` of an 80 GiB GPU meanwhile.
    """
    mode = TwoDevices()
    handles = [h for model in models for h in _dispatch(model, mode)]
    try:
        with (
            mode,
            mock.patch.object(
                torch.cuda, "mem_get_info", lambda device=None: (free_bytes, 80 * 2**30)
            ),
        ):
            yield mode
    finally:
        for handle in handles:
            handle.remove()
