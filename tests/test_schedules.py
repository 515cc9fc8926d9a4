"""The learning-rate schedules: their curves, and a resumed schedule continuing exactly."""

import math

import pytest
import torch

from ja_common.errors import UserError
from pretraining.modeling import scheduler_for
from pretraining.presets import parse_preset
from test_pretraining import TINY

WARMUP, STEPS = 10, 100


def preset(kind, **extra):
    return parse_preset("bert-x", dict(TINY, **{"lr-scheduler": kind, "warmup-steps": WARMUP, "train-steps": STEPS,
                                                **extra}))


def curve(kind, start=0, state=None, **extra):
    """The learning rate (of a base rate 1) at each step from ``start``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_for(optimizer, preset(kind, **extra))
    if state is not None:
        scheduler.load_state_dict(state)
    rates = []
    for _ in range(start, STEPS):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates, scheduler


@pytest.mark.parametrize("kind,expected", [
    ("linear", lambda s: (STEPS - s) / (STEPS - WARMUP)),
    ("cosine", lambda s: 0.5 * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP)))),
    ("constant", lambda s: 1.0),
    ("warmup-stable-decay", lambda s: 1.0 if s < STEPS - 20 else 0.5 * (1 + math.cos(math.pi * (s - 80) / 20))),
])
def test_each_schedule_warms_up_then_follows_its_curve(kind, expected):
    rates, _ = curve(kind, **({"decay-steps": 20} if kind == "warmup-stable-decay" else {}))
    assert rates[:WARMUP] == pytest.approx([s / WARMUP for s in range(WARMUP)])
    assert rates[WARMUP:] == pytest.approx([expected(s) for s in range(WARMUP, STEPS)], abs=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant", "warmup-stable-decay"])
def test_a_resumed_schedule_continues_exactly(kind):
    whole, _ = curve(kind)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    first = scheduler_for(optimizer, preset(kind))
    for _ in range(37):
        optimizer.step()
        first.step()
    rest, _ = curve(kind, start=37, state=first.state_dict())
    assert rest == whole[37:]


def test_warmup_stable_decay_defaults_to_a_tenth_of_the_run():
    rates, _ = curve("warmup-stable-decay")
    assert rates[STEPS - 11] == 1.0 and rates[STEPS - 5] < 1.0


def test_schedule_keys_are_checked():
    with pytest.raises(UserError, match='"lr-scheduler" must be one of linear, cosine, constant, warmup-stable-decay'):
        preset("exponential")
    with pytest.raises(UserError, match='"decay-steps" must be between 1 and train-steps less warmup-steps'):
        preset("warmup-stable-decay", **{"decay-steps": 95})
