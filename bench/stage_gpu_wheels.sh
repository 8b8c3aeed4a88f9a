#!/usr/bin/env bash
# On a machine with the package index: what a bare GPU machine (Python 3.12, CUDA torch, an older transformers, no
# bitsandbytes, trl, datasets or liger-kernel, no network) needs for `make gpu-check`, into FOLDER (default .gpu):
# FOLDER/whl the wheels, at the versions this checkout's .venv resolved (liger-kernel at LIGER), bitsandbytes cut to
# its CPU and CUDA 13 libraries (7 MB instead of 43); FOLDER/demo the demo model's config and tokenizer (its weights
# are too big to carry: bench/demo_shape.py makes random ones of its shape there). Under 64 MiB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu}; PY=${PY:-.venv/bin/python}; LIGER=${LIGER:-0.8.5}
rm -rf "$dest/whl" "$dest/demo"; mkdir -p "$dest/whl" "$dest/demo"
pins=$("$PY" -m pip freeze | grep -iE '^(transformers|huggingface[-_]hub|httpx2|httpcore2|truststore|click|hf[-_]xet|kernels|tomlkit|peft|accelerate|trl|datasets|dill|multiprocess|bitsandbytes)==')
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$dest/whl" $pins "liger-kernel==$LIGER"
bnb=$(ls "$dest"/whl/bitsandbytes-*.whl); tmp=$(mktemp -d)
(cd "$tmp" && unzip -q "$OLDPWD/$bnb" && rm -f bitsandbytes/libbitsandbytes_cuda1[12]*.so bitsandbytes/libbitsandbytes_rocm*.so \
  bitsandbytes/libbitsandbytes_xpu*.so && grep -vE "libbitsandbytes_(cuda1[12]|rocm|xpu)" bitsandbytes-*.dist-info/RECORD > R \
  && mv R bitsandbytes-*.dist-info/RECORD && rm "$OLDPWD/$bnb" && zip -q -r -9 "$OLDPWD/$bnb" .)
rm -rf "$tmp"
demo=$("$PY" -c 'from trainer.models import demo_model_dir; print(demo_model_dir())')
for f in "$demo"/*; do [ "$(basename "$f")" = model.safetensors ] || cp "$f" "$dest/demo/"; done
du -sh "$dest/whl" "$dest/demo"
