"""A BERT encoder in plain PyTorch, with Hugging Face BertModel's parameter names and files.

Importing transformers' BertModel costs about 5 s of CPU beyond `import torch` (it pulls in
torch._dynamo, DTensor, sympy and scipy), in every process of every stage: on a 2-core machine
that was the largest part of the pipeline's overhead. For the architecture the default model
uses, the forward pass is a few dozen lines, so tier1 runs it itself and falls back to
transformers for anything else (`supports`). tests/test_bert.py holds it to transformers'
BertModel on the same weights.
"""

from __future__ import annotations

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

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # one segment: every token has token type 0, as BertModel assumes when given none
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.heads, self.dropout_p = c.num_attention_heads, c.attention_probs_dropout_prob
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, s, h = x.shape
        # one matmul for query, key and value (the same numbers as three, in less time: about 4%
        # of the CPU encoder's time); the parameters stay three, under BertModel's names
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = F.linear(x, weight, bias).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, s, h)


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


class Bert(nn.Module):
    """forward(input_ids, attention_mask) -> the last hidden states (batch, tokens, hidden)."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Stack(config)
        self.checkpointing = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # A batch without padding needs no mask, and attention runs faster without one; asked
        # only on the CPU, where the answer costs no wait for the device.
        unpadded = attention_mask.device.type == "cpu" and bool(attention_mask.all())
        mask = None if unpadded else attention_mask[:, None, None, :].bool()
        for layer in self.encoder.layer:
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x

    @classmethod
    def from_folder(cls, folder: Path) -> Bert:
        from safetensors.torch import load_file

        model = cls(read_config(folder))
        state = load_file(str(Path(folder) / WEIGHTS))
        # a checkpoint with heads (BertForPreTraining, ...) keeps the encoder under "bert."
        if any(k.startswith("bert.") for k in state):
            state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
        state = {_renamed(k): v for k, v in state.items() if not k.startswith(_UNUSED)}
        model.load_state_dict(state, strict=True)
        return model.eval()

    def save_pretrained(self, folder: Path, safe_serialization: bool = True) -> None:
        """config.json and model.safetensors, as BertModel.save_pretrained writes them (no pooler)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = dict(vars(self.config), architectures=["BertModel"])
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})

