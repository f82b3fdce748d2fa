"""The contrastive forward and backward that training and the max-batch probe share."""

from __future__ import annotations

import torch

from tier1.encoder.model import SentenceEncoder
from tier1.measure import host_allocated
from tier1.runtime import device as devices
from tier1.training.buckets import embed
from tier1.training.loss import in_batch_negatives_loss


class PairEncoder(torch.nn.Module):
    """Encodes anchors and positives in one forward, so DDP sees one forward per backward."""

    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, anchors, positives=None) -> tuple[torch.Tensor, ...]:
        """Each side a padded batch (a dict of tensors) or length buckets; both sides' words are
        looked up in one call (tier1.training.buckets.embed). One side alone: its embeddings (the
        shape warm-up's pass through a sharded model, which must enter at its root)."""
        if positives is None:
            return tuple(embed(self.encoder, anchors))
        a, p = embed(self.encoder, anchors, positives)
        return a, p


def forward_backward(model: torch.nn.Module, anchors, positives, dtype: torch.dtype | None,
                     loss_scale: float, gather: bool) -> torch.Tensor:
    """Embed a batch of pairs, score it with in-batch negatives, back-propagate; the loss."""
    device = next(model.parameters()).device
    with devices.autocast(device, dtype):
        a, p = model(anchors, positives)
    loss = in_batch_negatives_loss(a, p, loss_scale, gather)
    on_cpu = device.type == "cpu"
    if on_cpu:  # the activations at their most
        host_allocated.note()
    loss.backward()
    if on_cpu:  # the gradients, before the optimizer's step
        host_allocated.note()
    return loss
