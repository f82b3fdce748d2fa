"""The sentence-transformers modules of a model folder, read without torch: which pooling the model
uses, whether a Normalize module follows, and the sequence length the folder asks for.

tier1 trains, evaluates and saves exactly the model the folder describes. It reproduces a
Transformer module at the folder's root, one Pooling module (any of sentence-transformers' modes,
several concatenated as it does) and an optional Normalize module after it. Anything else (a
Dense head, a custom module, a Router) would be dropped silently, so `read_head` refuses it with a
ConfigError naming the module and the folder; tier1.input_checks calls it while Snakemake plans, before
any job. A plain Hugging Face folder without modules.json gets tier1's mean pooling and
normalisation, and says so (`source`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tier1.config import ConfigError

# sentence-transformers' pooling modes and the boolean keys older configs use for each, in the
# order it concatenates them when read from those keys (a `pooling_mode` list keeps its own order).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Similarity functions that rank as tier1's cosine does (dot equals cosine only on unit vectors).
COSINE_RANKED = {"cosine": False, "dot": True}  # name -> needs a Normalize module
DEFAULT_SOURCE = "tier1 default (the folder has no modules.json)"


@dataclass(frozen=True)
class Head:
    """What follows the transformer: `pooling` (modes, concatenated in this order) and `normalize`."""

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = True
    source: str = DEFAULT_SOURCE  # where the pooling was read from
    folder_max_seq_length: int | None = None  # sentence_bert_config.json's, if the folder has one
    modules: tuple[dict, ...] | None = None  # modules.json as read, written back on save
    folder: str | None = None  # the folder holding them, whose module folders the saved model copies

    @property
    def name(self) -> str:
        """One line for records and the report, e.g. 'cls + normalize'."""
        return "+".join(self.pooling) + (" + normalize" if self.normalize else " (not normalized)")

    def record(self) -> dict:
        """The JSON-plain fields a run record keeps."""
        out = asdict(self)
        out["pooling"] = list(self.pooling)
        del out["modules"], out["folder"]
        return out


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"model: {path} ({what}) does not parse as JSON ({err}); "
                          f"replace it with the file sentence-transformers saved") from None


def _kind(module: dict) -> str:
    """'Transformer', 'Pooling' or 'Normalize' for sentence-transformers' own classes (old and new
    module paths), else the full type name."""
    kind = str(module.get("type", ""))
    last = kind.rsplit(".", 1)[-1]
    if kind.startswith("sentence_transformers.") and last in ("Transformer", "Pooling", "Normalize"):
        return last
    return kind or "a module without type"


def _pooling_modes(config: dict, path: Path) -> tuple[str, ...]:
    mode = config.get("pooling_mode")
    if mode is not None:  # sentence-transformers >= 6 writes one name or a list
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(name for key, name in LEGACY_KEYS.items() if config.get(key))
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise ConfigError(
            f"model: {path} asks for pooling {', '.join(map(str, unknown)) or '(none)'}, which tier1 cannot "
            f"reproduce; tier1 pools with {', '.join(POOLING_MODES)}")
    # include_prompt: False changes nothing here, since tier1 encodes no prompts
    return modes


def read_head(folder: Path) -> Head:
    """The Head of the model in `folder`; a ConfigError for a module tier1 cannot reproduce."""
    folder = Path(folder)
    length = _folder_max_seq_length(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return Head(folder_max_seq_length=length)
    modules = _read_json(modules_file, "the sentence-transformers modules")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ConfigError(f"model: {modules_file} is not a list of modules; replace it with the file "
                          f"sentence-transformers saved")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [_kind(m) for m in modules]
    for module, kind in zip(modules, kinds):
        if kind not in ("Transformer", "Pooling", "Normalize"):
            raise ConfigError(
                f"model: {folder} has a {kind} module ({module.get('path') or module.get('name')!r} in modules.json) "
                f"that tier1 cannot reproduce (it trains a Transformer, one Pooling and an optional Normalize); "
                f"remove the module or use a model without it")
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ConfigError(
            f"model: {modules_file} lists the modules {' -> '.join(kinds)}; tier1 reproduces only "
            f"Transformer -> Pooling (-> Normalize)")
    for module in modules[1:]:  # the saved model copies these folders: they must lie inside this one
        where = Path(str(module.get("path", "")))
        if not str(module.get("path", "")) or where.is_absolute() or ".." in where.parts:
            raise ConfigError(
                f"model: {modules_file} places the {kinds[modules.index(module)]} module at "
                f"{module.get('path')!r}, not in a folder inside {folder}; give it a folder name such as 1_Pooling")
    if modules[0].get("path", "") not in ("", "."):
        raise ConfigError(
            f"model: {folder}'s Transformer module lies in {modules[0]['path']!r}, not at the folder's root; "
            f"point model at that folder")
    pooling_file = folder / str(modules[1].get("path", "")) / "config.json"
    if not pooling_file.is_file():
        raise ConfigError(f"model: {pooling_file} is missing (modules.json lists a Pooling module there); "
                          f"restore it from the model's original folder")
    config = _read_json(pooling_file, "the pooling configuration")
    if not isinstance(config, dict):
        raise ConfigError(f"model: {pooling_file} is not a JSON object; restore it from the model's original folder")
    head = Head(pooling=_pooling_modes(config, pooling_file), normalize=len(kinds) == 3,
                source=str(pooling_file), folder_max_seq_length=length, modules=tuple(modules), folder=str(folder))
    _check_similarity(folder, head)
    return head


def _folder_max_seq_length(folder: Path) -> int | None:
    """sentence_bert_config.json's max_seq_length; where it names none (sentence-transformers 6.2
    saves none), the length sentence-transformers then reads the folder with: the tokenizer's
    model_max_length, at most the model's positions."""
    path = folder / "sentence_bert_config.json"
    if not path.is_file():
        return None
    config = _read_json(path, "the sentence-transformers transformer settings")
    length = config.get("max_seq_length") if isinstance(config, dict) else None
    if isinstance(length, int):
        return length
    limits = [_int_setting(folder / "tokenizer_config.json", "model_max_length"),
              _int_setting(folder / "config.json", "max_position_embeddings")]
    return min(limits) if all(limits) else None


def _int_setting(path: Path, key: str) -> int | None:
    config = _read_json(path, key) if path.is_file() else None
    value = config.get(key) if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def _check_similarity(folder: Path, head: Head) -> None:
    """tier1 ranks by cosine, as sentence-transformers does unless the model names another function."""
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return
    config = _read_json(path, "the sentence-transformers settings")
    name = config.get("similarity_fn_name") if isinstance(config, dict) else None
    if name is None or (name in COSINE_RANKED and (head.normalize or not COSINE_RANKED[name])):
        return
    raise ConfigError(
        f"model: {path} names the similarity function {name!r}, which ranks differently from the cosine "
        f"tier1 trains and evaluates with; use a model scored by cosine (or dot product after a Normalize module)")
