"""The model of a run: built from its preset (new, or continued from a pretrained directory) with
the family's training forward and the preset's speed switches, its optimizer, and the trained
model loaded back for evaluation."""

import dataclasses
from types import MethodType

import torch

from ja_common.errors import UserError


def apply_flag_overrides(preset, options):
    """--torch_compile, --gradient_checkpointing, --attention_implementation, --bf16 and --save_minutes
    override the preset."""
    changes = {name: getattr(options, name) for name in ("torch_compile", "gradient_checkpointing",
                                                        "attention_implementation", "bf16", "save_minutes")
               if getattr(options, name, None) is not None}
    if changes.get("bf16"):
        changes["fp16_type"] = 0
    return dataclasses.replace(preset, **changes) if changes else preset


def set_speed_switches(model, family, preset):
    """Attention implementation and gradient checkpointing, through transformers' public switches."""
    for part in [getattr(model, name) for name in family.parts] or [model]:
        if preset.attention_implementation:
            if not family.attention:
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


def scheduler_for(optimizer, preset):
    """The preset's "lr-scheduler" after "warmup-steps" of linear warmup, through transformers'
    schedules: linear decay to 0 (upstream's), cosine to 0, constant, or warmup-stable-decay (the
    last "decay-steps", default a tenth of the run, decay to 0 on a half cosine, as transformers'
    get_wsd_schedule does). A LambdaLR: its state is the step, so a resumed run continues exactly."""
    import transformers

    warmup, steps = preset.warmup_steps, preset.train_steps
    if preset.lr_scheduler == "linear":
        return transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)
    if preset.lr_scheduler == "cosine":
        return transformers.get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    if preset.lr_scheduler == "constant":
        return transformers.get_constant_schedule_with_warmup(optimizer, warmup)
    return transformers.get_wsd_schedule(optimizer, warmup, decay_steps(preset), num_training_steps=steps)


def decay_steps(preset):
    return preset.decay_steps if preset.decay_steps is not None else max(1, preset.train_steps // 10)


def install(model, training_forward):
    """Give this model instance a forward that takes a batch and returns {name: (sum, count)}."""
    model.forward = MethodType(training_forward, model)
    return model


def build_model(family, preset, vocab, seed):
    """The model, with the family's training forward and the preset's speed switches."""
    from accelerate.utils import set_seed

    set_seed(seed)
    model = family.create(preset, vocab)
    set_speed_switches(model, family, preset)
    if family.training_forward is not None:
        install(model, family.training_forward)
    return model


def load_trained_model(family, model_dir):
    """A trained model directory (final or checkpoint), with the family's training forward."""
    model = family.load(model_dir)
    if family.training_forward is not None:
        install(model, family.training_forward)
    return model
