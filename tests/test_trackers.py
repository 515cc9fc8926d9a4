"""--report_to: one run logs the same figures to TensorBoard, W&B, MLflow and Trackio (all offline),
read back from what each wrote."""

import glob
import json
import sqlite3
import subprocess

import pytest

from conftest import ROOT, write_presets
from test_pretraining import TINY, logged, pretrain_command

pytest.importorskip("wandb")
pytest.importorskip("mlflow")
pytest.importorskip("trackio")

WANDB_BLOCK = 32768


def wandb_history(run_file):
    """The history rows of an offline W&B run. Its .wandb file is LevelDB's log format after a 7-byte
    ":W&B" header: 32 KiB blocks of records (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first,
    3 middle, 4 last), each whole record a wandb_internal_pb2.Record. W&B has no public reader of
    offline runs; if its format changes, this test fails here."""
    from wandb.proto import wandb_internal_pb2

    with open(run_file, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", data[:8]
    position, pending, rows = 7, b"", []
    while position + 7 <= len(data):
        left = WANDB_BLOCK - position % WANDB_BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_report_to_every_tracker_logs_the_same_losses(tmp_path_factory, wordpiece_dir, tmp_path):
    params = write_presets(tmp_path_factory, {"bert-track": dict(TINY, **{"train-steps": 6, "logging-steps": 2,
                                                                           "save-steps": 6})})
    model_dir = tmp_path / "model"
    args, env = pretrain_command(params, wordpiece_dir, model_dir, "bert-track", "--report_to", "tensorboard",
                                 "wandb", "mlflow", "trackio")
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", TRACKIO_DIR=str(tmp_path / "trackio"))
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    tensorboard = logged(model_dir, "loss")
    assert len(tensorboard) == 3

    [run_file] = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    wandb = [(row["_step"], row["loss"]) for row in wandb_history(run_file) if "loss" in row]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [experiment] = [e for e in client.search_experiments() if e.name == "ja-pretraining"]
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "test" and run.data.params["preset/hidden-size"] == "64"
    mlflow = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]

    database = sqlite3.connect(tmp_path / "trackio" / "ja-pretraining.db")
    trackio = [(step, json.loads(metrics)["loss"]) for step, metrics in
               database.execute("select step, metrics from metrics where run_name = 'test' order by step")]

    for name, figures in (("wandb", wandb), ("mlflow", mlflow), ("trackio", trackio)):
        assert [step for step, _ in figures] == [2, 4, 6], (name, figures)
        assert [value for _, value in figures] == pytest.approx(tensorboard, rel=1e-6), (name, figures)


def test_report_to_refuses_a_missing_package_and_none_with_others(tmp_path_factory, wordpiece_dir, tmp_path):
    params = write_presets(tmp_path_factory, {"bert-track": TINY})
    args, env = pretrain_command(params, wordpiece_dir, tmp_path / "m", "bert-track", "--report_to", "none", "wandb")
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        "error: --report_to none with wandb: give one or the other"
    # a package that is not installed (hidden from the run's process)
    args, env = pretrain_command(params, wordpiece_dir, tmp_path / "m", "bert-track", "--report_to", "wandb")
    code = ("import importlib.util, run_pretraining; find = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda name, *rest: None if name == 'wandb' else find(name, *rest); "
            f"run_pretraining.main({args[2:]!r})")
    result = subprocess.run([args[0], "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--report_to wandb: the wandb package is not installed" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "m").exists()
