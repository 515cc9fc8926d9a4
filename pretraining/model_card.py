"""The model card of a final model directory: README.md in the Hugging Face format."""

import json
import os


def write_model_card(model_dir, family, preset, info, record, evaluator):
    """README.md in the Hugging Face model-card format, through huggingface_hub's ModelCard;
    ``record`` is the run's RunRecord at its end."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(language="ja", library_name="transformers", pipeline_tag=family.pipeline,
                         tags=["japanese", "pretraining", family.name, "ja-pretraining"])
    trained_on = ", ".join(os.path.basename(p) for p in info.get("corpus", [])) or "prepared examples"
    lines = [f"# {os.path.basename(os.path.abspath(model_dir))}", "",
             f"A {family.title} model pretrained from scratch on Japanese text with ja-pretraining "
             f"(preset `{preset.model_type}`).", "", "## Training", "",
             f"- Preset: `{json.dumps(preset.raw, ensure_ascii=False)}`",
             f"- Tokenizer: {info.get('vocab_size')} entries, fingerprint `{record.tokenizer[:16]}`",
             f"- Corpus: {trained_on}; {info.get('tokens', 0):,} tokens, {info.get('examples', 0):,} "
             f"{info['spec']['kind']} examples (examples fingerprint `{info.get('fingerprint')}`)",
             f"- Steps: {preset.train_steps:,}, global batch {record.global_batch}, examples seen "
             f"{record.examples_seen:,}, seed {record.seed}"
             + (f", {record.masking} masking" if family.masked_lm else "")]
    if record.last_train:
        lines.append("- Final training figures: " + ", ".join(f"{k} {v:.4g}" for k, v in record.last_train.items()))
    if evaluator is not None and evaluator.last is not None:
        lines += ["", "## Held-out evaluation", "", f"On {evaluator.last['examples']:,} held-out examples, at step "
                  f"{evaluator.last['step']:,} (best loss {evaluator.best:.4f}):", ""]
        lines += [f"- {k}: {v:.4f}" for k, v in evaluator.last.items() if k not in ("step", "examples")]
    lines += ["", "## Use", "", *family.usage_lines()]
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n").save(os.path.join(model_dir, "README.md"))
