"""The sentence encoder: a Hugging Face transformer with mean pooling and L2 normalisation,
saved in the layout sentence-transformers loads."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tier1 import bert
from tier1.cli import quiet_transformers

# the model folder and its tokenizer, found without torch (the tokenize stage needs no more)
from tier1.tokenizer import load_tokenizer, resolve_model_path  # noqa: F401


class SentenceEncoder(nn.Module):
    """Token embeddings, mean-pooled over the attention mask, then L2-normalised
    (the pooling all-MiniLM-L6-v2 was trained with)."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        hidden = hidden if isinstance(hidden, torch.Tensor) else hidden.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), p=2, dim=-1)


def load(spec: str, gradient_checkpointing: bool = False, trust_remote_code: bool = False):
    """(encoder, tokenizer) for a model spec; `trust_remote_code` (the config key) lets a model
    folder that ships its own code run it, as tier1.checks requires. A plain BERT in a local
    folder runs on tier1.bert, without importing transformers; any other model on transformers."""
    path = resolve_model_path(spec)
    tokenizer = load_tokenizer(path, trust_remote_code)
    if not trust_remote_code and bert.supports(Path(path)):
        transformer = bert.Bert.from_folder(Path(path))
        transformer.checkpointing = gradient_checkpointing
        return SentenceEncoder(transformer), tokenizer
    from transformers import AutoModel

    quiet_transformers()
    transformer = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    # The pooler is never used by the loss; DDP would stop at the second step on a parameter
    # that gets no gradient, so it is removed rather than hiding it with find_unused_parameters.
    if getattr(transformer, "pooler", None) is not None:
        transformer.pooler = None
    if gradient_checkpointing:
        # transformers renamed the switch; older releases (as on some GPU images) have only the old name
        kwargs = {"use_reentrant": False}
        if hasattr(transformer, "activation_checkpointing_enable"):
            transformer.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return SentenceEncoder(transformer), tokenizer


def dropout_probabilities(encoder: SentenceEncoder) -> dict[str, float]:
    """The dropout the transformer trains with (0 where its config names none)."""
    config = encoder.transformer.config
    return {"hidden": float(getattr(config, "hidden_dropout_prob", 0.0) or 0.0),
            "attention": float(getattr(config, "attention_probs_dropout_prob", 0.0) or 0.0)}


def save(encoder: SentenceEncoder, tokenizer, folder: Path, max_seq_length: int) -> None:
    """Write `folder` so that both tier1 and sentence_transformers.SentenceTransformer load it."""
    folder.mkdir(parents=True, exist_ok=True)
    transformer = encoder.transformer
    transformer.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    dim = transformer.config.hidden_size
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True,
         "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False}, indent=2))
    (folder / "2_Normalize").mkdir(exist_ok=True)

