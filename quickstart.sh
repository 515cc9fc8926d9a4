#!/usr/bin/env bash
# The main job on the bundled sample corpus, end to end, in a folder of its own:
# train a tokenizer, pretrain a tiny BERT for 200 steps, and fill a mask with it.
set -euo pipefail
cd "$(dirname "$0")"
OUT=quickstart
mkdir -p "$OUT"

python train_tokenizer.py --input_file sample_corpus/sample.txt --model_dir "$OUT/tokenizer" \
    --vocab_size 2000 --num_files 2 --overwrite

python run_pretraining.py --input_file sample_corpus/sample.txt --tokenizer_dir "$OUT/tokenizer" \
    --model_dir "$OUT/bert-tiny" --parameter_file parameter.json --model_type bert-tiny \
    --do_whole_word_mask --dataset_dir "$OUT/examples" --logging_dir "$OUT/runs" --overwrite_output_dir

python - "$OUT/tokenizer" "$OUT/bert-tiny" <<'PY'
import sys
import torch
from transformers import AutoModelForPreTraining, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
text = "朝早く起きて、窓を開けると冷たい空気が部屋に入ってきた。"
print(type(tokenizer).__name__, "->", tokenizer.tokenize(text))
# loaded as what it is (BertForPreTraining): the fill-mask pipeline would load it as
# BertForMaskedLM and report the pooler and next-sentence head as unexpected weights
model = AutoModelForPreTraining.from_pretrained(sys.argv[2]).eval()
inputs = tokenizer("朝早く起きて、窓を[MASK]と冷たい空気が部屋に入ってきた。", return_tensors="pt")
masked = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
with torch.no_grad():
    probabilities = model(**inputs).prediction_logits[0, masked].softmax(-1)
for score, token_id in zip(*probabilities.topk(3)):
    print(f"{score:.3f}  窓を[{tokenizer.decode([token_id])}]と冷たい空気が…")
PY
echo "TensorBoard: tensorboard --logdir $OUT/runs"
