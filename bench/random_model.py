"""A model folder with Llama-3.1-8B's (or Llama-3.2-3B's) architecture and random weights, built offline, plus a product file to train on.

    python bench/random_model.py --out /tmp/llama-3.1-8b-random [--tiny]

No download: the architecture is written out below (the values of meta-llama/Llama-3.1-8B's config.json), the
weights are random (speed and memory do not depend on their values), and the tokenizer is a byte-level BPE trained
here on the sample generator's product texts. `--tiny` keeps the architecture's shape rules at a size a CPU trains
in seconds, so the check itself is tested without a GPU. Also writes products.jsonl next to the model, texts long
enough that every example is cut to the sequence length the check trains at.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMA_31_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
# meta-llama/Llama-3.2-3B's config.json: the course's current model.
LLAMA_32_3B = {**LLAMA_31_8B, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
               "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True,
               "rope_scaling": {**LLAMA_31_8B["rope_scaling"], "factor": 32.0}}
# 3.5 x hidden as in the 8B, and every in_features a multiple of 64: bitsandbytes' 4-bit CPU kernels need whole blocks.
TINY = {**LLAMA_31_8B, "vocab_size": 4096, "hidden_size": 128, "intermediate_size": 448, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}


def train_tokenizer(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 as in the config above
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def main() -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from trainer.data import make_sample_products

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="a few-MB model of the same shape rules, for a CPU test")
    parser.add_argument("--shape", choices=("8b", "3b"), default="8b",
                        help="Llama 3.1 8B (the course's first model) or Llama 3.2 3B (its current one)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    products = make_sample_products(2000, seed=1)
    # Five products' texts per row: longer than any sequence length the check uses, so all examples are cut to it.
    rows = [{"text": " ".join(p.text for p in products[i:i + 5]), "price": products[i].price}
            for i in range(0, len(products) - 5, 2)]
    (args.out / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    values = TINY if args.tiny else LLAMA_32_3B if args.shape == "3b" else LLAMA_31_8B
    train_tokenizer([r["text"] for r in rows], vocab=min(8000, values["vocab_size"])).save_pretrained(args.out)
    config = LlamaConfig(**values)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # random init on the GPU takes seconds where the CPU takes minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out, max_shard_size="5GB")
    print(f"{args.out}: {params / 1e9:.2f} B parameters (random, bf16), {len(rows)} products", flush=True)


if __name__ == "__main__":
    main()
