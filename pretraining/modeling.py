"""The model of a run: built from its preset (new, or continued from a pretrained directory) with
the family's training forward and the preset's speed switches, its optimizer, and the trained
model loaded back for evaluation."""

import dataclasses
import os

import torch

from ja_common.errors import UserError

from . import objectives


def apply_speed_flags(preset, options):
    """--torch_compile, --gradient_checkpointing, --attention_implementation and --bf16 override the preset."""
    changes = {name: getattr(options, name) for name in ("torch_compile", "gradient_checkpointing",
                                                        "attention_implementation", "bf16")
               if getattr(options, name, None) is not None}
    if changes.get("bf16"):
        changes["fp16_type"] = 0
    return dataclasses.replace(preset, **changes) if changes else preset


def set_speed_switches(model, family, preset):
    """Attention implementation and gradient checkpointing, through transformers' public switches."""
    for part in [getattr(model, name) for name in family.parts] or [model]:
        if preset.attention_implementation:
            if not family.transformer:
                raise UserError(f"--model_type {preset.model_type}: the {family.name} family has no attention; drop "
                                "\"attention-implementation\"")
            try:
                part.set_attn_implementation(preset.attention_implementation)
            except (ValueError, ImportError) as error:
                raise UserError(f"\"attention-implementation\" {preset.attention_implementation}: "
                                f"{str(error).splitlines()[0]}") from None
        if preset.gradient_checkpointing:
            if not part.supports_gradient_checkpointing:
                raise UserError(f"--model_type {preset.model_type}: the {family.name} family does not support "
                                "gradient checkpointing; drop \"gradient-checkpointing\"")
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def optimizer_for(model, preset):
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": preset.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel (CPU and GPU in recent torch) is what the stock Trainer uses too
        return torch.optim.AdamW(groups, lr=preset.learning_rate, betas=(0.9, 0.999), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=preset.learning_rate, betas=(0.9, 0.999), eps=1e-6)


def build_model(family, preset, vocab, seed):
    """The model, with the family's training forward (objectives.py) and the preset's speed switches."""
    model = _new_or_pretrained_model(family, preset, vocab, seed)
    set_speed_switches(model, family, preset)
    if family.training_forward is not None:
        objectives.install(model, family.training_forward)
    return model


def _new_or_pretrained_model(family, preset, vocab, seed):
    from accelerate.utils import set_seed

    if family.create is not None:
        set_seed(seed)
        return family.create(preset, vocab)
    model_class = family.model_class()
    if preset.pretrained_model_name_or_path:
        path = preset.pretrained_model_name_or_path
        if not os.path.isdir(path):
            raise UserError(f"pretrained_model_name_or_path {path} is not a directory")
        model = model_class.from_pretrained(path)
        if model.config.vocab_size != vocab.size:
            raise UserError(f"{path} has a vocabulary of {model.config.vocab_size}, the tokenizer {vocab.size}: "
                            "continue pretraining with the tokenizer the model was trained with")
        if preset.frozen_layers >= 0:
            for module in family.frozen_modules(model, preset.frozen_layers):
                module.requires_grad_(False)
        return model
    set_seed(seed)
    return model_class(family.build_config(preset, vocab))


def load_trained_model(family, model_dir):
    """A trained model directory (final or checkpoint), with the family's training forward."""
    model = family.load(model_dir) if family.load else family.model_class().from_pretrained(model_dir)
    if family.training_forward is not None:
        objectives.install(model, family.training_forward)
    return model
