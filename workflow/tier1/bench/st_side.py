"""sentence-transformers' side: SentenceTransformerTrainer with MultipleNegativesRankingLoss, and
SentenceTransformer.encode. Imported only by the benchmark: tier1 itself never needs it."""

from __future__ import annotations

import statistics
import tempfile

import torch
import torch.nn.functional as F

from tier1.bench import floor
from tier1.bench.workload import Workload, bench_device, encode_texts, fingerprint, training_pairs
from tier1.measure import clock


def _model(w: Workload):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(w.model, device=str(bench_device()))
    st.max_seq_length = w.max_seq_length
    return st


class _Recorded:
    """A data collator that keeps what it returns; the trainer reads its other attributes through."""

    def __init__(self, collator, seen: list):
        self.collator, self.seen = collator, seen

    def __call__(self, features):
        self.seen.append(self.collator(features))
        return self.seen[-1]

    def __getattr__(self, name):
        return getattr(self.collator, name)


def train(w: Workload) -> dict:
    """Steps/s over steps 2..N, counted as tier1's side counts them (the device synchronised at
    the end of step 1 and of step N only); the data collator tokenises every batch inside that
    window."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from transformers import TrainerCallback

    torch.set_num_threads(w.threads)
    pairs = training_pairs(w)
    anchors, positives = [p["anchor"] for p in pairs], [p["positive"] for p in pairs]
    torch.manual_seed(w.seed)
    st = _model(w)
    bf16 = w.recipe != "defaults" and w.precision == "bf16"
    # tier1's warm-up is int(warmup_ratio x steps) steps; given as a whole number of steps here,
    # whichever way this transformers release reads a ratio
    recipe = {"learning_rate": w.learning_rate, "weight_decay": w.weight_decay,
              "warmup_steps": int(w.warmup_ratio * w.steps), "max_grad_norm": 0.0} if w.recipe != "defaults" else {}
    ends: list[float] = []
    losses_seen: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            # no wait for the device between
            ends.append(clock.synced(bench_device()) if state.global_step in (1, w.steps) else clock.now())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses_seen.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=w.batch_size, max_steps=w.steps, bf16=bf16,
            seed=w.seed, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
            dataloader_drop_last=True, use_cpu=not torch.cuda.is_available(), **recipe)
        loss = losses.MultipleNegativesRankingLoss(st, scale=w.loss_scale)
        trainer = SentenceTransformerTrainer(model=st, args=args, loss=loss, callbacks=[StepClock()],
                                             train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}))
        seen = []  # the collated batches, kept for the floor (references: no copy inside the window)
        if w.recipe == "host_overhead":
            trainer.data_collator = _Recorded(trainer.data_collator, seen)
        trainer.train()
    timed = ends[-1] - ends[0]
    host = {}
    if seen:  # the same batches' arithmetic alone, as the model is fed them
        batches = [tuple({k[len(c) + 1:]: v.to(st.device) for k, v in b.items() if k.startswith(c + "_") and torch.is_tensor(v)}
                         for c in ("anchor", "positive")) for b in seen[: w.steps]]
        st.train()
        def embed(anchors, positives):  # one side at a time, as its loss feeds the model
            return tuple(F.normalize(st(dict(f))["sentence_embedding"], dim=-1) for f in (anchors, positives))

        floor_s = floor.floor_steps(embed, st.parameters(), batches, w.loss_scale, w.learning_rate, w.weight_decay,
                                    st.device)
        host = floor.host_fields(ends, floor_s, 0.0, st.device)
    return {
        "steps_timed": len(ends) - 1, "seconds": timed, "steps_per_s": (len(ends) - 1) / timed, **host,
        "losses": losses_seen, "encoder": identity(st),
        "inputs": fingerprint(w, anchors, positives, encode_texts(w), str(st.device), torch.get_num_threads(),
                              "bf16" if bf16 else "fp32", learning_rate=args.learning_rate,
                              weight_decay=args.weight_decay, warmup_steps=args.get_warmup_steps(w.steps),
                              loss_scale=loss.scale, grad_clip=args.max_grad_norm or None),
    }


def identity(st) -> dict[str, str]:
    """The encoder sentence-transformers ran (transformers' model under it), in the form of
    tier1.encoder.model.identity."""
    import transformers

    from tier1.encoder.bert import attention_record

    return {"implementation": "transformers", "version": transformers.__version__,
            "attention": attention_record(st[0].auto_model, st.device)}


def encode(w: Workload) -> tuple[dict, torch.Tensor]:
    """Texts/s of SentenceTransformer.encode (it tokenises each batch), the median of
    `w.encode_passes` timed passes, normalised embeddings kept on the device; under "matched" with
    bf16 it runs in the same autocast as tier1."""
    torch.set_num_threads(w.threads)
    texts = encode_texts(w)
    st = _model(w).eval()
    bf16 = w.recipe != "defaults" and w.precision == "bf16"
    autocast = torch.autocast(st.device.type, dtype=torch.bfloat16, enabled=bf16)
    kwargs = {"batch_size": w.eval_batch_size, "convert_to_tensor": True, "normalize_embeddings": True,
              "show_progress_bar": False}
    seconds = []
    with autocast:
        st.encode(texts[: w.eval_batch_size], **kwargs)  # first-call costs, untimed
        for _ in range(w.encode_passes):
            t0 = clock.synced(bench_device())
            emb = st.encode(texts, **kwargs)
            seconds.append(clock.synced(bench_device()) - t0)
    median = statistics.median(seconds)
    return {"texts": len(texts), "passes": w.encode_passes, "seconds": median, "encode_s_all": seconds,
            "texts_per_s": len(texts) / median, "precision": "bf16" if bf16 else "fp32"}, emb.float().cpu()
