"""PriceTune's training library: data, models, the background job, evaluation, charts. No UI."""
