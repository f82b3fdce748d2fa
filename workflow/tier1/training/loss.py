"""Contrastive loss with in-batch negatives (InfoNCE / MultipleNegativesRanking)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tier1.runtime import distributed


def in_batch_negatives_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float,
                            gather: bool = True) -> torch.Tensor:
    """Cross-entropy of each anchor against every positive in the batch, its own as the label.

    With `gather`, the candidates are the positives of the whole global batch, collected from
    all ranks with gradient. Rank r's loss is then the mean over its b anchors of the same
    per-anchor terms a single process computes for the global batch B = N*b, so the global loss
    is the mean of the N rank losses. DDP averages gradients over ranks, and the gather's
    backward sums, onto each rank's own positives, the gradients that every rank's loss sends
    them; together that is exactly the gradient of the global loss. Without `gather` each rank
    only sees its own b-1 negatives: an easier task, and a different model.
    """
    candidates = distributed.all_gather_with_grad(positives) if gather else positives
    offset = distributed.rank() * anchors.shape[0] if gather else 0
    scores = scale * anchors @ candidates.T  # embeddings are L2-normalised: cosine similarity
    labels = torch.arange(offset, offset + anchors.shape[0], device=anchors.device)
    return F.cross_entropy(scores, labels)


def negatives_per_anchor(per_device_batch: int, world_size: int, gather: bool) -> int:
    return (per_device_batch * world_size if gather else per_device_batch) - 1
