#!/usr/bin/env bash
# The main job on the bundled sample corpus, end to end, in a folder of its own.
set -euo pipefail
cd "$(dirname "$0")"
OUT=quickstart
mkdir -p "$OUT"

python train_tokenizer.py --input_file sample_corpus/sample.txt --model_dir "$OUT/tokenizer" \
    --vocab_size 2000 --num_files 2 --overwrite

python - "$OUT/tokenizer" <<'PY'
import sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
text = "朝早く起きて、窓を開けると冷たい空気が部屋に入ってきた。"
print(type(tokenizer).__name__, "->", tokenizer.tokenize(text))
print("ids:", tokenizer(text)["input_ids"])
PY
