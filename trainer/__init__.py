"""PriceTune's training library: data, models, the background job, evaluation, charts. No UI."""

import warnings

from .hub import import_bitsandbytes_offline

# First, before any module here imports peft or transformers' quantizers (which import bitsandbytes).
import_bitsandbytes_offline()
# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` each time it wraps a model: a note for
# peft's authors that a PriceTune user would otherwise see at every model load.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
