"""Beside the retrieval-quality table: which model ran (its pooling, normalisation and sequence
length against what its folder asks for), and whether training lowered retrieval quality."""

from __future__ import annotations

from tier1.report.collect import Results

# A trained model whose nDCG@10 is this much below the base model's is reported as lowered. The
# evaluation is deterministic for one model and test set, and the N-rank evaluation ranks as the
# 1-rank one does (tests/test_evaluation.py), so a smaller gap is rounding, and anything above it
# is what the trained model does on this test set (whether it holds on other data is another matter).
QUALITY_DROP_TOLERANCE = 0.001


def _unit(n: int, unit: str) -> str:
    return f"{n} {unit}{'s' if n > 1 else ''}"


def model_lines(r: Results) -> list[str]:
    """The pooling that ran and the sequence length, from the base model's evaluation record."""
    base = r.eval_base.get(1) or next(iter(r.eval_base.values()), None)
    if base is None:
        return []
    head = base.model_head
    pooling = " + ".join(head["pooling"])
    normalized = "then L2-normalised (a Normalize module)" if head["normalize"] else "not normalised (no Normalize module)"
    source = head.get("source", "")
    where = f"read from `{source}`" if source.endswith(".json") else source
    lines = [f"- Pooling: {pooling}, {normalized}; {where}. Training and retrieval compare embeddings by cosine, "
             f"as sentence-transformers does; the trained models are saved with the same modules."]
    ran, asked = base.max_seq_length, head.get("folder_max_seq_length")
    if ran is not None:
        if asked is None:
            lines.append(f"- Sequence length: {ran} tokens (`max_seq_length`); the model folder names none.")
        elif asked == ran:
            lines.append(f"- Sequence length: {ran} tokens, as the model folder asks (sentence_bert_config.json).")
        else:
            lines.append(f"- Sequence length: {ran} tokens (`max_seq_length` in the config), while the model folder "
                         f"asks for {asked} (sentence_bert_config.json): texts were cut at {ran}, so the base scores "
                         f"are not the model's scores at its own length; set `max_seq_length: {asked}` to run that.")
    return lines


def change_lines(r: Results, unit: str) -> list[str]:
    """Each trained model's nDCG@10 against the base model's, said plainly when it went down."""
    base = r.eval_base.get(1) or next(iter(r.eval_base.values()), None)
    if not base:
        return []
    before = base.metrics["ndcg@10"]
    lines = []
    for n, m in sorted(r.eval_trained.items()):
        after = m.metrics["ndcg@10"]
        if after < before - QUALITY_DROP_TOLERANCE:
            over = f", over {m.queries_judged} judged queries" if m.queries_judged else ""
            lines.append(f"- **Training on {_unit(n, unit)} lowered retrieval quality**: nDCG@10 {before:.4f} before, "
                         f"{after:.4f} after ({after - before:+.4f}{over}). The timings stand; the fine-tuned model "
                         f"is worse than the one it started from on this test set.")
        elif after > before + QUALITY_DROP_TOLERANCE:
            lines.append(f"- Training on {_unit(n, unit)} raised nDCG@10 from {before:.4f} to {after:.4f} "
                         f"({after - before:+.4f}).")
        else:
            lines.append(f"- Training on {_unit(n, unit)} left nDCG@10 where it was ({before:.4f} -> {after:.4f}, "
                         f"within {QUALITY_DROP_TOLERANCE}).")
    if lines:
        lines.append(f"\nA change within {QUALITY_DROP_TOLERANCE} nDCG@10 is rounding (the evaluation is deterministic "
                     f"for one model and test set); beyond it, the change is what training did on this test set.")
    return lines
