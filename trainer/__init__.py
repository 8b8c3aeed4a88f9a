"""PriceTune's training library: data, models, the background job, evaluation, charts. No UI."""

from .hub import import_bitsandbytes_offline

# First, before any module here imports peft or transformers' quantizers (which import bitsandbytes).
import_bitsandbytes_offline()
