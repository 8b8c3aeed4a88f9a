"""Loss on the price tokens only, with the vocabulary projection computed only where a price token is predicted.

The price is 3-6 tokens after a ~200-token prompt, and the LM head (hidden × vocabulary) is a fifth of a small
model's FLOPs per token: projecting every prompt position only to mask its loss away wastes that fifth, forward and
backward. The collator hands the model `logits_to_keep` (the columns that predict a price token, shared by the
batch) and labels cut to those columns, one step ahead as the Trainer expects of a causal LM: logit column j
predicts label column j+1 (column 0 is ignored), so the Trainer's count of price tokens stays exact.

With a trained price head (TrainConfig.head_loss), each example also carries its log price, the collators add where
each example's first price token is predicted (the prompt's "$"), and HeadTrainer adds the head's weighted MSE on
the last hidden state there to the price-token loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer

from .data import IGNORE_INDEX

LOG_PRICE, HEAD_AT = "log_price", "head_at"
"""A trained head's batch keys: each example's log(1+price), and the (row, column) its state is read at."""


def keep_price_columns(batch: dict) -> dict:
    """A collated batch with `logits_to_keep` (the columns that predict a price token) and its labels cut to them;
    with log prices, also HEAD_AT: where each example's first price token is predicted, in example order."""
    labels = batch["labels"]
    if LOG_PRICE in batch:
        priced = labels != IGNORE_INDEX
        first = priced & ~F.pad(priced, (1, 0))[:, :-1]  # a price span's first token; one span per example
        rows, columns = first.nonzero(as_tuple=True)
        batch[HEAD_AT] = torch.stack([rows, columns - 1])
    # Position t predicts token t+1: keep the positions t whose next token is a price token in any row.
    keep = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(-1)
    batch["logits_to_keep"] = keep
    batch["labels"] = torch.cat([labels.new_full((len(labels), 1), IGNORE_INDEX), labels[:, keep + 1]], dim=1)
    return batch


class PriceCollator(DataCollatorForSeq2Seq):
    """Pads like DataCollatorForSeq2Seq, then keeps only the label columns that carry a price token."""

    def __call__(self, features, return_tensors=None):
        rows = [{k: v for k, v in f.items() if k != LOG_PRICE} for f in features]
        return keep_price_columns(with_log_prices(super().__call__(rows, return_tensors), features))


def with_log_prices(batch: dict, features: list[dict]) -> dict:
    """The batch with its examples' log prices, when they carry them (a trained head)."""
    if features and LOG_PRICE in features[0]:
        batch[LOG_PRICE] = torch.tensor([f[LOG_PRICE] for f in features], dtype=torch.float32)
    return batch


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
        return keep_price_columns(with_log_prices(super().__call__(rows, return_tensors, separator_id), features))


class HeadTrainer(Trainer):
    """The Trainer with a price head trained beside the LoRA (the model's `price_head`, a TrainedHead, in its
    optimizer): loss = the price-token cross-entropy + loss_weight · the head's MSE."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_losses: list[torch.Tensor] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        at, log_prices = inputs.pop(HEAD_AT), inputs.pop(LOG_PRICE)
        loss, outputs = super().compute_loss(model, {**inputs, "output_hidden_states": True}, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        head = self.accelerator.unwrap_model(model).price_head
        states = outputs.hidden_states[-1][at[0], at[1]]  # the last layer's, after the final norm
        # The price-token loss is a mean over the whole accumulated batch; the head's is a mean per micro-batch.
        mse = head.loss(states, log_prices)
        self.head_losses.append(mse.detach())
        loss = loss + head.loss_weight * mse / self.args.gradient_accumulation_steps
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, start_time=None) -> None:
        """The Trainer's log, with the head's mean MSE since the last one (standardized log price: 1 is the mean's)."""
        if "loss" in logs and self.head_losses:
            logs = {**logs, "head_mse": round(float(torch.stack(self.head_losses).mean()), 4)}
            self.head_losses.clear()
        super().log(logs, start_time)
