"""Loss on the price tokens only, with the vocabulary projection computed only where a price token is predicted.

The price is 3-6 tokens after a ~200-token prompt, and the LM head (hidden × vocabulary) is a fifth of a small
model's FLOPs per token: projecting every prompt position only to mask its loss away wastes that fifth, forward and
backward. The collator hands the model `logits_to_keep` (the columns that predict a price token, shared by the
batch) and labels cut to those columns, one step ahead as the Trainer expects of a causal LM: logit column j
predicts label column j+1 (column 0 is ignored), so the Trainer's count of price tokens stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

from .data import IGNORE_INDEX


def keep_price_columns(batch: dict) -> dict:
    """A collated batch with `logits_to_keep` (the columns that predict a price token) and its labels cut to them."""
    labels = batch["labels"]
    # Position t predicts token t+1: keep the positions t whose next token is a price token in any row.
    keep = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(-1)
    batch["logits_to_keep"] = keep
    batch["labels"] = torch.cat([labels.new_full((len(labels), 1), IGNORE_INDEX), labels[:, keep + 1]], dim=1)
    return batch


class PriceCollator(DataCollatorForSeq2Seq):
    """Pads like DataCollatorForSeq2Seq, then keeps only the label columns that carry a price token."""

    def __call__(self, features, return_tensors=None):
        return keep_price_columns(super().__call__(features, return_tensors))


def price_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Mean cross-entropy over the price tokens of the whole (accumulated) batch; the Trainer's compute_loss_func."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels[:, 1:].flatten().to(logits.device),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    # The Trainer counts the price tokens over all gradient-accumulation micro-batches, so the mean is over them all.
    count = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE_INDEX).sum()
    return loss / torch.as_tensor(count, device=loss.device).clamp(min=1)


class PackedPriceCollator(DataCollatorWithFlattening):
    """The batch's examples end to end in one row, no padding, position ids restarting at each example (the attention
    implementation reads them as example boundaries); then only the price columns, as PriceCollator keeps."""

    def __init__(self):
        super().__init__(return_position_ids=True)

    def __call__(self, features, return_tensors=None, separator_id=None):
        rows = [{k: f[k] for k in ("input_ids", "labels")} for f in features]
        return keep_price_columns(super().__call__(rows, return_tensors, separator_id))
