"""Where a run's figures go: --report_to tensorboard (the default), wandb, mlflow, trackio, several at
once, or none, through accelerate's trackers.

TensorBoard writes to --logging_dir/<run name> as before. W&B and Trackio file the run under the
project "ja-pretraining" (WANDB_PROJECT, TRACKIO_PROJECT change it), MLflow under the experiment
of that name (MLFLOW_EXPERIMENT_NAME), each run named as the TensorBoard one. Their own variables
say where the data goes (WANDB_MODE=offline, MLFLOW_TRACKING_URI, TRACKIO_DIR, ...). Every tracker
gets the run's preset and flags as its configuration and the same scalars.
"""

import importlib.util
import json
import os

from ja_common.errors import UserError

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
PROJECT = "ja-pretraining"


def chosen_trackers(report_to):
    """--report_to's names, checked: a list of tracker names (empty for none)."""
    names = list(dict.fromkeys(report_to or ()))
    if "none" in names:
        if len(names) > 1:
            raise UserError(f"--report_to none with {', '.join(n for n in names if n != 'none')}: give one or the other")
        return []
    if "all" in names:
        names = list(TRACKERS)
    for name in names:
        if importlib.util.find_spec(name) is None:  # each tracker's module and extra have its name
            raise UserError(f"--report_to {name}: the {name} package is not installed; pip install "
                            f"\"ja-pretraining[{name}]\" (or pip install {name}), or leave {name} out")
    return names


def log_with(names, run_name):
    """What Accelerator(log_with=...) takes: TensorBoard by name (its folder is the run's name),
    the others as trackers filed under the project with the run's name."""
    from accelerate.tracking import MLflowTracker, TrackioTracker, WandBTracker

    made = {
        "tensorboard": lambda: "tensorboard",
        "wandb": lambda: WandBTracker(os.environ.get("WANDB_PROJECT", PROJECT), name=run_name),
        "mlflow": lambda: MLflowTracker(experiment_name=PROJECT, run_name=run_name),
        "trackio": lambda: TrackioTracker(os.environ.get("TRACKIO_PROJECT", PROJECT), name=run_name),
    }
    return [made[name]() for name in names] or None


def run_config(preset, options):
    """The run's preset keys and flags, as the scalars every tracker's configuration takes."""
    values = {"model_type": preset.model_type, "family": preset.family,
              **{f"preset/{key}": value for key, value in preset.raw.items()},
              **{f"flag/{key}": value for key, value in vars(options).items()
                 if value is not None and key not in ("model_type", "process_start", "local_rank")}}
    return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value, ensure_ascii=False)
            for key, value in values.items()}
