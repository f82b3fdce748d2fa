"""A BERT encoder in plain PyTorch, with Hugging Face BertModel's parameter names and files.

Importing transformers' BertModel costs about 5 s of CPU beyond `import torch` (it pulls in
torch._dynamo, DTensor, sympy and scipy), in every process of every stage: on a 2-core machine
that was the largest part of the pipeline's overhead. For the architecture the default model
uses, the forward pass is a few dozen lines, so tier1 runs it itself and falls back to
transformers for anything else (`supports`). tests/test_bert.py holds it to transformers'
BertModel on the same weights.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

WEIGHTS = "model.safetensors"
# Checkpoint entries this encoder does not use: the pooler (the loss never reads it), the
# pre-training heads, and the position-id buffer older releases saved.
_UNUSED = ("pooler.", "cls.", "embeddings.position_ids")


# BertConfig's defaults, for a config.json that leaves a key out
DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "type_vocab_size": 2, "max_position_embeddings": 512,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
            "position_embedding_type": "absolute", "initializer_range": 0.02}


def read_config(folder: Path) -> SimpleNamespace | None:
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    return SimpleNamespace(**{**DEFAULTS, **json.loads(path.read_text())})


def supports(folder: Path) -> bool:
    """True when `folder` holds a plain BERT encoder in safetensors that this module reproduces."""
    config = read_config(folder)
    return (config is not None and (Path(folder) / WEIGHTS).is_file()
            and getattr(config, "model_type", None) == "bert"
            and getattr(config, "hidden_act", "gelu") == "gelu"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False) and not getattr(config, "add_cross_attention", False)
            and config.hidden_size % config.num_attention_heads == 0)


def _renamed(key: str) -> str:
    """Older checkpoints name LayerNorm's parameters gamma and beta."""
    if ".LayerNorm." in key:
        return key.replace(".gamma", ".weight").replace(".beta", ".bias")
    return key


class _Embeddings(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=getattr(c, "pad_token_id", 0))
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor | None, words: torch.Tensor | None = None) -> torch.Tensor:
        """`words`: the tokens' word vectors, already looked up (BertModel's `inputs_embeds`)."""
        words = self.word_embeddings(input_ids) if words is None else words
        positions = torch.arange(words.shape[1], device=words.device)
        # one segment: every token has token type 0, as BertModel assumes when given none
        x = words + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    """Query, key and value as one (3h, h) parameter: one matrix product and no concatenation per
    forward. Checkpoints keep BertModel's three names (query, key, value): loading merges them,
    `state_dict` splits them again (tests/test_bert.py: the round trip equals the file)."""

    NAMES = ("query", "key", "value")

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.heads, self.dropout_p = c.num_attention_heads, c.attention_probs_dropout_prob
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_merge_qkv)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        # the kernel choice is Bert.forward's (and a checkpointed layer's recompute's)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, s, h)


def _split_qkv(module, state_dict, prefix, local_metadata) -> None:
    """state_dict hook: qkv.weight/bias as BertModel's query, key and value entries (copies, so a
    safetensors file never holds tensors that share memory)."""
    for kind in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}qkv.{kind}", None)
        if fused is None:
            continue
        for name, part in zip(_SelfAttention.NAMES, fused.chunk(3)):
            state_dict[f"{prefix}{name}.{kind}"] = part.clone()


def _merge_qkv(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: BertModel's query, key and value entries as one qkv entry."""
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in _SelfAttention.NAMES]
        if all(k in state_dict for k in keys):
            state_dict[f"{prefix}qkv.{kind}"] = torch.cat([state_dict.pop(k) for k in keys])


class _Output(nn.Module):
    """dense, dropout, then LayerNorm over the residual: the end of both halves of a layer."""

    def __init__(self, c: SimpleNamespace, width: int):
        super().__init__()
        self.dense = nn.Linear(width, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Output(c, c.hidden_size)


class _Intermediate(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Output(c, c.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        return self.output(self.intermediate(x), x)


class _Stack(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


# On CUDA the attention kernel is chosen, not left to SDPA's default order: on torch 2.11 with
# H100/H200 that order puts cuDNN first for a masked call, and cuDNN builds an execution plan per
# new shape (0.4-0.55 s each, pytorch/pytorch and modelscope/FunASR#3704), returns NaN gradients
# for widths with width % 128 == 64 under a mask (pytorch/pytorch#196678: 64 and 192 are on the
# ladder) and misreads a mask of another dtype (pytorch/pytorch#191612). The memory-efficient
# kernel takes an additive mask, builds nothing per shape and is clean on all three; MATH is the
# fallback for inputs it refuses.
CUDA_BACKENDS = ("EFFICIENT_ATTENTION", "MATH")


def attention_backend(device: torch.device):
    """The SDPA kernels allowed on this device (a context manager): CUDA_BACKENDS on a GPU,
    SDPA's own choice elsewhere (on a CPU: its fused kernel, masked or not)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name) for name in CUDA_BACKENDS], set_priority=True)


def backend_name(device: torch.device) -> str:
    """What records and the report say about the attention kernel on `device`."""
    if device.type == "cuda":
        return "SDPA " + " then ".join(n.lower() for n in CUDA_BACKENDS) + ", additive mask"
    return "SDPA default (CPU), boolean mask; none on a batch without padding"


def attention_record(encoder: nn.Module, device: torch.device) -> str:
    """The attention kernel a (sentence) encoder runs, for records and the report. A transformers
    model runs the attention its config names (`_attn_implementation`, set when it loads: "sdpa"
    where the architecture has it, else "eager"), without tier1's kernel choice."""
    transformer = getattr(encoder, "transformer", encoder)
    if isinstance(transformer, Bert):
        return backend_name(device)
    used = getattr(transformer.config, "_attn_implementation", None) or "eager"
    return f"transformers {used}" + (", SDPA's own kernel choice" if used == "sdpa" else "")


def attention_mask_for(attention_mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The mask every layer's attention uses, built once per forward. On a GPU: additive, in the
    dtype the attention runs in (autocast's or the activations'), as the memory-efficient kernel
    requires; elsewhere boolean."""
    keep = attention_mask[:, None, None, :].bool()
    if x.device.type != "cuda":
        return keep
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
    return torch.zeros(keep.shape, dtype=dtype, device=x.device).masked_fill_(~keep, torch.finfo(dtype).min)


def _chosen_kernel(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A checkpointed layer: its recompute runs in backward, after Bert.forward's kernel choice
    has closed, so it makes the choice itself."""
    with attention_backend(x.device):
        return layer(x, mask)


class Bert(nn.Module):
    """forward(input_ids, attention_mask) -> the last hidden states (batch, tokens, hidden)."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Stack(config)
        self.checkpointing = False
        # the folder's pooler, unused and untrained, written back on save: without it transformers
        # reloads the saved model with a report of newly initialised weights
        self.pooler: dict[str, torch.Tensor] = {}

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """`attention_mask` None: no padding (the caller knows it from the lengths); attention then
        runs unmasked, which is faster on a CPU. `inputs_embeds`: word vectors in place of
        `input_ids`, as BertModel takes them."""
        x = self.embeddings(input_ids, inputs_embeds)
        mask = None if attention_mask is None else attention_mask_for(attention_mask, x)
        # the attention kernel chosen once per forward, not once per layer
        with attention_backend(x.device):
            for layer in self.encoder.layer:
                if self.checkpointing and self.training:
                    x = checkpoint(_chosen_kernel, layer, x, mask, use_reentrant=False)
                else:
                    x = layer(x, mask)
        return x

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    @classmethod
    def from_folder(cls, folder: Path) -> Bert:
        from safetensors.torch import load_file

        model = cls(read_config(folder))
        state = load_file(str(Path(folder) / WEIGHTS))
        # a checkpoint with heads (BertForPreTraining, ...) keeps the encoder under "bert."
        if any(k.startswith("bert.") for k in state):
            state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
        model.pooler = {k: v for k, v in state.items() if k.startswith("pooler.")}
        state = {_renamed(k): v for k, v in state.items() if not k.startswith(_UNUSED)}
        model.load_state_dict(state, strict=True)
        return model.eval()

    def save_pretrained(self, folder: Path, safe_serialization: bool = True,
                        state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """config.json and model.safetensors, as BertModel.save_pretrained writes them (with the
        pooler the folder came with, if any); `state_dict` in place of the module's own (a sharded
        module's, gathered whole)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = dict(vars(self.config), architectures=["BertModel"])
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in (state_dict or self.state_dict()).items()}
        state |= {k: v.contiguous() for k, v in self.pooler.items()}
        save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})

