"""What every kind of price method shares: the Prediction record, prompts in left-padded batches, eval mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prediction:
    price: float | None
    method: str  # one of pricing.METHODS
    text: str  # raw decoded output (greedy) or a short description of the candidates (expected)
    candidates: tuple = ()  # the beam's (price, probability) pairs the point estimate was read from; () for greedy


def device_of(model) -> torch.device:
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device


def left_padded(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


class EvalMode:
    """model.eval() for the block, the previous training mode restored after (the model may be mid-training)."""

    def __init__(self, model):
        self.model = model
        self.was_training = model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False
