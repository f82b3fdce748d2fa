"""The sentence encoder: a Hugging Face transformer with the pooling its folder's
sentence-transformers modules name (tier1.encoder.sentence_modules), saved in the layout
sentence-transformers loads, with the source's modules."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tier1.encoder import bert
from tier1.encoder.sentence_modules import Head, read_head

# the model folder and its tokenizer, found without torch (the tokenize stage needs no more)
from tier1.encoder.tokenizer import load_tokenizer, resolve_model_path  # noqa: F401
from tier1.runtime.cli import quiet_transformers

# Layers a CPU warms each shape through (first_layers): every layer has the same shapes, and a
# first meeting costs a CPU little (docs/reproduce/first_meeting_cost.py)
CPU_WARM_LAYERS = 1


@contextlib.contextmanager
def first_layers(transformer: torch.nn.Module, layers: int | None):
    """The transformer cut to its embeddings and first `layers` layers for the block's duration
    (BertModel's and tier1's BERT's `encoder.layer`); whole where `layers` is None or it has no
    such stack."""
    stack = getattr(getattr(transformer, "encoder", None), "layer", None)
    if layers is None or not isinstance(stack, torch.nn.ModuleList) or len(stack) <= layers:
        yield
        return
    transformer.encoder.layer = stack[:layers]
    try:
        yield
    finally:
        transformer.encoder.layer = stack


class SentenceEncoder(nn.Module):
    """Token embeddings pooled as `head` says (mean over the attention mask by default, the pooling
    all-MiniLM-L6-v2 was trained with), returned L2-normalised: tier1 compares embeddings by cosine,
    as sentence-transformers' MultipleNegativesRankingLoss and retrieval evaluator do, so whether
    the model ends in a Normalize module changes only what its saved folder outputs."""

    def __init__(self, transformer: nn.Module, head: Head | None = None):
        super().__init__()
        self.transformer = transformer
        self.head = head or Head()

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """`attention_mask` None: a batch without padding (tier1.training.buckets.encode).
        `inputs_embeds`: the tokens' word vectors in place of `input_ids` (tier1.training.buckets.embed)."""
        if inputs_embeds is None:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        else:
            hidden = self.transformer(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        hidden = hidden if isinstance(hidden, torch.Tensor) else hidden.last_hidden_state
        if self.head.pooling == ("mean",):
            if attention_mask is None:  # no padding: the plain mean, without building a mask
                return F.normalize(hidden.mean(1).float(), p=2, dim=-1)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        else:
            if attention_mask is None:
                attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
            pooled = torch.cat([pool(hidden, attention_mask, mode) for mode in self.head.pooling], dim=-1)
        return F.normalize(pooled.float(), p=2, dim=-1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One of sentence-transformers' pooling modes over the tokens the mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    first = attention_mask.to(torch.int).argmax(dim=1)  # the first real token (0 with right padding)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "cls":
        return hidden[rows, first]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = mask.sum(1).clamp(min=1e-9)
        return (hidden * mask).sum(1) / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":  # weights 1, 2, ... from the first real token
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        weights = mask * (positions.view(1, -1) - first.view(-1, 1).to(hidden.dtype)).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if mode == "lasttoken":
        last = hidden.shape[1] - 1 - attention_mask.flip(1).to(torch.int).argmax(dim=1)
        return hidden[rows, last]
    raise ValueError(f"unknown pooling mode {mode!r}")


def load(spec: str, gradient_checkpointing: bool = False, trust_remote_code: bool = False, encoder: str = "auto"):
    """(encoder, tokenizer) for a model spec; `trust_remote_code` (the config key) lets a model
    folder that ships its own code run it, as tier1.input_checks requires. `encoder` (the config
    key): "auto" runs a plain BERT in a local folder on tier1.encoder.bert, without importing
    transformers, and any other model on transformers; "transformers" runs every model on
    transformers' AutoModel (and AutoTokenizer)."""
    path = resolve_model_path(spec)
    tokenizer = load_tokenizer(path, trust_remote_code, encoder)
    head = head_of(path)
    if encoder == "auto" and not trust_remote_code and bert.supports(Path(path)):
        transformer = bert.Bert.from_folder(Path(path))
        transformer.checkpointing = gradient_checkpointing
        return SentenceEncoder(transformer, head), tokenizer
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
    return SentenceEncoder(transformer, head), tokenizer


def identity(encoder: SentenceEncoder, device: torch.device) -> dict[str, str]:
    """Which encoder implementation ran, its version and its attention path: what every record
    and the report state, so that a figure says whose code it measured."""
    attention = bert.attention_record(encoder, device)
    if isinstance(encoder.transformer, bert.Bert):
        from tier1 import __version__

        return {"implementation": "tier1-bert", "version": __version__, "attention": attention}
    import transformers

    return {"implementation": "transformers", "version": transformers.__version__, "attention": attention}


def _hub_modules(repo: str) -> Path:
    """The sentence-transformers files of a hub model (no weights), for read_head."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, allow_patterns=[
        "modules.json", "*/config.json", "sentence_bert_config.json", "config_sentence_transformers.json"]))


def head_of(spec: str) -> Head:
    """The Head of a model spec's folder (a hub model's fetched without its weights)."""
    path = resolve_model_path(spec)
    return read_head(Path(path) if Path(path).is_dir() else _hub_modules(path))


def dropout_probabilities(encoder: SentenceEncoder) -> dict[str, float]:
    """The dropout the transformer trains with (0 where its config names none)."""
    config = encoder.transformer.config
    return {"hidden": float(getattr(config, "hidden_dropout_prob", 0.0) or 0.0),
            "attention": float(getattr(config, "attention_probs_dropout_prob", 0.0) or 0.0)}


def save(encoder: SentenceEncoder, tokenizer, folder: Path, max_seq_length: int,
         weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write `folder` so that both tier1 and sentence_transformers.SentenceTransformer load it: the
    modules of the model folder the encoder was loaded from, copied as they are, or, for a folder
    without modules.json, mean pooling and Normalize. `weights`: the encoder's state dict whole,
    where the encoder itself holds only a shard of it (FSDP2: tier1.training.parallel)."""
    folder.mkdir(parents=True, exist_ok=True)
    transformer = encoder.transformer
    if weights is None:
        transformer.save_pretrained(folder, safe_serialization=True)
    else:
        prefix = "transformer."
        transformer.save_pretrained(folder, safe_serialization=True, state_dict={
            k[len(prefix):]: v.detach().contiguous().cpu() for k, v in weights.items() if k.startswith(prefix)})
    tokenizer.save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))
    modules, source = encoder.head.modules, encoder.head.folder
    if modules is not None and source is not None:
        (folder / "modules.json").write_text(json.dumps(list(modules), indent=2))
        for module in modules[1:]:  # the Transformer is the folder itself, written above
            origin = Path(source) / module["path"]
            if origin.is_dir():  # a Normalize module's folder may be missing: it has no settings
                shutil.copytree(origin, folder / module["path"], dirs_exist_ok=True)
            else:
                (folder / module["path"]).mkdir(exist_ok=True)
        return
    dim = transformer.config.hidden_size
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True,
         "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False}, indent=2))
    (folder / "2_Normalize").mkdir(exist_ok=True)
