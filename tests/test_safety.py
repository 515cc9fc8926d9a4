"""Nothing a user has is lost: existing models, other runs' checkpoints, damaged checkpoints, debris, shared caches."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

import pretraining.checkpoints as ckpt
from pretraining.run_record import RunRecord
from conftest import ROOT, SAMPLE_CORPUS, sample_lines, write_presets
from ja_common.files import current_umask
from ja_common.locks import exclusive, lock_path
from pretraining.presets import parse_preset
from test_pretraining import TINY, pretrain, weights
from tokenizer.encoder import SubwordEncoder
from ja_common.errors import UserError

PRESETS = {
    "bert-safe": dict(TINY, **{"train-steps": 8, "save-steps": 2, "save-total-limit": 4, "dropout": 0.1}),
    "bert-safe-lr": dict(TINY, **{"train-steps": 8, "save-steps": 2, "save-total-limit": 4, "dropout": 0.1,
                                  "learning-rate": 1e-3}),
    "bert-safe-wide": dict(TINY, **{"train-steps": 8, "save-steps": 2, "save-total-limit": 4, "dropout": 0.1,
                                    "hidden-size": 32}),
    "bert-safe-long": dict(TINY, **{"train-steps": 100000, "save-steps": 100000}),
}


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return write_presets(tmp_path_factory, PRESETS)


@pytest.fixture(scope="module")
def finished(params, wordpiece_dir, tmp_path_factory):
    """A finished 8-step run: checkpoints 2, 4, 6, 8 and the final model."""
    model_dir = tmp_path_factory.mktemp("finished") / "bert"
    pretrain(params, wordpiece_dir, model_dir, "bert-safe")
    return model_dir


def last_line(result):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def copy_run(model_dir, to):
    shutil.copytree(model_dir, to)
    shutil.copytree(str(model_dir) + "-cache", str(to) + "-cache")
    return to


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_final_model_without_checkpoints_is_existing_work(params, wordpiece_dir, finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    for checkpoint in model_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # deleted to save space
    before = snapshot(model_dir)
    for extra in ((), ("--do_continue",)):
        line = last_line(pretrain(params, wordpiece_dir, model_dir, "bert-safe", *extra, check=False))
        assert "holds a trained model" in line and "--overwrite_output_dir" in line, line
    assert snapshot(model_dir) == before
    pretrain(params, wordpiece_dir, model_dir, "bert-safe", "--overwrite_output_dir")


def test_continue_refuses_another_run(params, wordpiece_dir, bpe_dir, finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    before = snapshot(model_dir)
    other_tokenizer = tmp_path / "tokenizer"
    shutil.copytree(wordpiece_dir, other_tokenizer)
    vocab = (other_tokenizer / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[-1], vocab[-2] = vocab[-2], vocab[-1]  # same size, other ids
    (other_tokenizer / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cases = [
        (wordpiece_dir, "bert-safe", ["--seed", "7"], "--seed: 42 then, 7 now"),
        (wordpiece_dir, "bert-safe", ["--do_whole_word_mask"], "the masking (--masking, --do_whole_word_mask or "
                                                                 "the preset's \"masking\"): 'token' then, 'whole-word' now"),
        (str(other_tokenizer), "bert-safe", [], "the tokenizer"),
        (wordpiece_dir, "bert-safe-lr", [], "preset keys learning-rate"),
        (wordpiece_dir, "bert-safe-wide", [], "preset keys hidden-size"),
    ]
    for tokenizer_dir, model_type, extra, expected in cases:
        line = last_line(pretrain(params, tokenizer_dir, model_dir, model_type, "--do_continue", *extra, check=False))
        assert "was trained with another setup" in line and expected in line, line
    assert snapshot(model_dir) == before


def test_damaged_newest_checkpoint_falls_back_and_ends_equal(params, wordpiece_dir, finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    for entry in model_dir.iterdir():  # as if killed after checkpoint-8: no final model yet
        if not entry.name.startswith("checkpoint-"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    rng_file = model_dir / "checkpoint-8" / ckpt.ACCELERATE_DIR / "random_states_0.pkl"
    rng_file.write_bytes(rng_file.read_bytes()[:-20])  # truncated: used to resume silently, with other weights
    (model_dir / "checkpoint-6" / "model.safetensors").write_bytes(b"")
    result = pretrain(params, wordpiece_dir, model_dir, "bert-safe", "--do_continue")
    output = result.stdout + result.stderr
    assert f"{model_dir / 'checkpoint-8'} is damaged (accelerate_state/random_states_0.pkl has" in output
    assert f"{model_dir / 'checkpoint-6'} is damaged (model.safetensors has 0 bytes" in output
    assert f"resumed from {model_dir / 'checkpoint-4'}" in output
    expected, got = weights(finished), weights(model_dir)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert ckpt.damage(model_dir / "checkpoint-8") is None  # rewritten whole


def test_checkpoint_damage_is_found(finished, tmp_path):
    source = finished / "checkpoint-8"
    assert ckpt.damage(source) is None
    for name, harm, expected in (
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), "model.safetensors has 100 bytes"),
        (f"{ckpt.ACCELERATE_DIR}/optimizer.bin", lambda p: p.write_bytes(b"x" * p.stat().st_size), "checksum"),
        (f"{ckpt.ACCELERATE_DIR}/custom_checkpoint_0.pkl", lambda p: p.unlink(), "custom_checkpoint_0.pkl is missing"),
        (ckpt.ACCELERATE_DIR, shutil.rmtree, "is missing"),
        (ckpt.STATE_FILE, lambda p: p.write_text("{"), "trainer_state.json"),
        (ckpt.MANIFEST_FILE, lambda p: p.write_text("{"), "checkpoint_manifest.json is unreadable"),
        (ckpt.MANIFEST_FILE + "-", lambda p: (p.parent / ckpt.MANIFEST_FILE).unlink(),
         "checkpoint_manifest.json is missing"),
    ):
        copy = tmp_path / name.replace("/", "-")
        shutil.copytree(source, copy)
        harm(copy / name)
        problem = ckpt.damage(copy)
        assert problem and expected in problem, (name, problem)


class FullDisk:
    """An accelerator whose save_state finds the disk full."""
    is_main_process, num_processes = True, 1

    def wait_for_everyone(self):
        pass

    def save_state(self, directory, **kwargs):
        os.makedirs(directory)
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    before = snapshot(model_dir)
    with pytest.raises(UserError, match=r"checkpoint-10 failed \(the disk is full\); nothing of it was kept\. The "
                                        r"last complete checkpoint is .*checkpoint-8"):
        ckpt.save_checkpoint(FullDisk(), str(model_dir), None, RunRecord(model_type="bert-test", step=10), keep=4)
    assert snapshot(model_dir) == before  # no temporary directory left, nothing removed


def test_resume_into_a_model_of_another_shape_is_a_clear_error(params, wordpiece_dir, finished, tmp_path):
    """A checkpoint from before the setup was recorded, resumed with a preset of another width."""
    model_dir = copy_run(finished, tmp_path / "bert")
    for checkpoint in model_dir.glob("checkpoint-*"):
        state = json.loads((checkpoint / ckpt.STATE_FILE).read_text())
        del state["parameters"]
        (checkpoint / ckpt.STATE_FILE).write_text(json.dumps(state))
        (checkpoint / ckpt.MANIFEST_FILE).unlink()
    line = last_line(pretrain(params, wordpiece_dir, model_dir, "bert-safe-wide", "--do_continue", check=False))
    assert "does not fit the model of this preset" in line, line


def test_user_faults_are_one_line(params, wordpiece_dir, tmp_path):
    with pytest.raises(UserError, match='"learning-rate" must be a finite number, not nan'):
        parse_preset("bert-x", dict(TINY, **{"learning-rate": float("nan")}))
    broken = tmp_path / "tokenizer"
    shutil.copytree(wordpiece_dir, broken)
    (broken / "tokenizer_config.json").write_text('{"mecab_kwargs": ', encoding="utf-8")
    line = last_line(pretrain(params, str(broken), tmp_path / "m", "bert-safe", check=False))
    assert "tokenizer_config.json is damaged" in line, line
    (broken / "tokenizer_config.json").write_bytes((open(os.path.join(wordpiece_dir, "tokenizer_config.json"), "rb")
                                                   .read()))
    vocab = (broken / "vocab.txt").read_text(encoding="utf-8").replace("[CLS]\n", "[CLX]\n")
    (broken / "vocab.txt").write_text(vocab, encoding="utf-8")
    with pytest.raises(UserError, match=r"lacks the special token\(s\) \[CLS\]"):
        SubwordEncoder(str(broken))
    for tokenizer_type in ("wordpiece", "bpe"):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file",
                                 SAMPLE_CORPUS, "--model_dir", str(tmp_path / tokenizer_type), "--vocab_size", "100",
                                 "--tokenizer_type", tokenizer_type, "--quiet"], capture_output=True, text=True)
        line = last_line(result)
        assert "--vocab_size 100 is too small for this corpus" in line and "--limit_alphabet" in line, line
        assert not (tmp_path / tokenizer_type).exists()


@pytest.mark.parametrize("script", ["run_pretraining", "train_tokenizer", "extract_electra_model"])
def test_a_mistaken_flag_is_one_line_not_the_usage(script, capsys):
    import importlib

    main = importlib.import_module(script).main
    for argv in (["--input_file", "x", "--no_such_flag"], []):  # required flags missing in both
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and f"see {script}.py --help" in err, err
        assert "the following arguments are required" in err


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be between 0 and 4294967295"),  # was numpy's traceback
    (["--max_minutes", "0"], "--max_minutes must be above 0"),  # was: no budget at all
    (["--save_minutes", "-1"], "--save_minutes must be above 0"),  # was: taken, the preset's key is refused
    (["--peak_tflops", "-5"], "--peak_tflops must be above 0"),  # was: a negative MFU
    (["--fp16_type", "7"], "--fp16_type must be 0 (off) or 1-3"),  # was: taken as fp16
    (["--num_proc", "0"], "--num_proc must be at least 1"),  # was: silently all cores
    (["--validation_file", "nowhere.txt"], "--validation_file: nowhere.txt does not exist"),  # named --input_file
])
def test_flags_out_of_range_are_one_line_before_any_work(params, wordpiece_dir, tmp_path, flags, message, capsys):
    from run_pretraining import main

    with pytest.raises(SystemExit) as stop:
        main(["--input_file", SAMPLE_CORPUS, "--tokenizer_dir", wordpiece_dir, "--parameter_file", params,
              "--model_type", "bert-safe", "--model_dir", str(tmp_path / "m"), *flags])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.strip().splitlines()[-1].startswith(f"error: {message}"), err
    assert not (tmp_path / "m").exists()


def big_corpus(tmp_path, copies):
    corpus = tmp_path / "big.txt"
    corpus.write_text(("\n".join(sample_lines()) + "\n\n") * copies, encoding="utf-8")
    return corpus


def test_a_killed_tokenizer_run_leaves_no_workers_and_its_debris_goes(tmp_path):
    import psutil

    corpus = big_corpus(tmp_path, 300)  # several seconds of MeCab
    command = [sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", str(corpus), "--model_dir",
               str(tmp_path / "tok"), "--num_files", "2", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        words = list(tmp_path.glob(".tok.words-*/words-*.txt"))
        if words and all(p.stat().st_size > 0 for p in words):
            break
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert len(workers) >= 2, "the MeCab workers had not started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "MeCab workers outlived the killed run"
    assert list(tmp_path.glob(".tok.*")), "nothing to clean: the run was killed too late"
    result = subprocess.run(command[:3] + [SAMPLE_CORPUS] + command[4:], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.glob(".tok.*")) == []
    assert oct(os.stat(tmp_path / "tok").st_mode & 0o777) == oct(0o777 & ~current_umask())


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def prepare_command(tokenizer_dir, dataset_dir, params, corpus=SAMPLE_CORPUS):
    return [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--prepare_only", "--input_file", str(corpus),
            "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", "bert-safe",
            "--dataset_dir", str(dataset_dir)]


def test_examples_cache_has_one_builder_and_no_debris(params, wordpiece_dir, tmp_path):
    dataset_dir = tmp_path / "examples"
    host = socket.gethostname()
    debris = [tmp_path / f".examples.old-{host}-{dead_pid()}-x1", tmp_path / f".examples.partial-{host}-{dead_pid()}-x2"]
    for path in debris:
        (path / "replaced").mkdir(parents=True)
    # another run holds the build lock: this one waits and builds nothing meanwhile
    held, release = threading.Event(), threading.Event()

    def hold():
        with exclusive(str(dataset_dir)):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    process = subprocess.Popen(prepare_command(wordpiece_dir, dataset_dir, params), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    time.sleep(4)
    assert process.poll() is None and not dataset_dir.exists()
    release.set()
    holder.join()
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert "waiting for another run building" in output and "examples ready" in output
    assert not any(path.exists() for path in debris) and not os.path.exists(lock_path(str(dataset_dir)))
    assert oct(os.stat(dataset_dir).st_mode & 0o777) == oct(0o777 & ~current_umask())
    # a lock left by a killed builder on this host is broken at once
    with open(lock_path(str(dataset_dir)), "w") as f:
        json.dump({"host": host, "pid": dead_pid()}, f)
    result = subprocess.run(prepare_command(wordpiece_dir, dataset_dir, params) + ["--overwrite_cache"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "waiting" not in result.stdout, result.stdout + result.stderr


def test_pair_examples_use_long_lines(params, wordpiece_dir, tmp_path):
    from pretraining.data.cache import load_examples

    lines = sample_lines()
    corpus = tmp_path / "long.txt"  # one document on one line, as in a corpus without sentence breaks
    corpus.write_text("".join(lines).translate(str.maketrans("。！？", "、、、")) + "\n", encoding="utf-8")
    result = subprocess.run(prepare_command(wordpiece_dir, tmp_path / "ex", params, corpus), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    dataset, info = load_examples(str(tmp_path / "ex"))
    # before: the one line gave one example of 32 tokens; now nearly all of it is in examples
    assert info["tokens_in_examples"] > 0.9 * info["tokens"], info
    assert len(dataset) > info["tokens"] / 32
    assert f"hold {info['tokens_in_examples']:,} of the corpus's {info['tokens']:,} tokens" in result.stdout
    assert "every document of the corpus has one sentence" in result.stderr
    # a corpus of one-sentence documents gets the warning too; a normal one does not
    single = tmp_path / "single.txt"
    single.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(prepare_command(wordpiece_dir, tmp_path / "single", params, single), capture_output=True,
                            text=True)
    assert result.returncode == 0 and "need at least two sentences a document" in result.stderr, result.stderr
    result = subprocess.run(prepare_command(wordpiece_dir, tmp_path / "normal", params), capture_output=True, text=True)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


# ---- the second probe's findings (issue "Nothing lost, no silent surprises") ----

def run_options(model_dir, **flags):
    from pretraining.options import RunOptions

    return RunOptions(model_type="bert-safe", model_dir=str(model_dir), **flags)


def test_a_second_run_on_the_same_model_dir_is_refused(params, wordpiece_dir, tmp_path):
    """One run owns a model directory: the second gets one line, the first goes on unharmed."""
    from test_pretraining import pretrain_command

    model_dir = tmp_path / "shared"
    args, env = pretrain_command(params, wordpiece_dir, model_dir, "bert-safe-long")
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (model_dir / "run_status.json").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.01)  # written when training starts
    assert os.path.exists(lock_path(model_dir)), "the first run does not hold the model directory"
    second = pretrain(params, wordpiece_dir, model_dir, "bert-safe-long", "--seed", "7", "--do_continue", check=False)
    line = last_line(second)
    assert f"--model_dir {model_dir} is in use by another run (process {first.pid} on" in line, line
    assert first.poll() is None, "the first run did not survive the second"
    first.send_signal(signal.SIGTERM)  # it stops with a checkpoint of its own run
    assert first.wait(timeout=300) == 75, first.communicate()[0][-2000:]
    assert ckpt.read_record(ckpt.newest_checkpoint(str(model_dir))).seed == 42
    assert not os.path.exists(lock_path(model_dir))  # released on the way out


def test_a_model_dir_of_the_users_own_files_is_refused(params, wordpiece_dir, tmp_path):
    from pretraining.train import check_model_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    (mine / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"holds files that are not a run's \(README.md, config.json\)"):
        check_model_dir(run_options(mine))
    check_model_dir(run_options(mine, overwrite_output_dir=True))  # the flag says the user means it
    line = last_line(pretrain(params, wordpiece_dir, mine, "bert-safe", check=False))
    assert "holds files that are not a run's" in line and (mine / "README.md").read_text() == "my notes"


def test_paths_that_cannot_work_are_refused_before_training(params, wordpiece_dir, tmp_path):
    from pretraining.train import check_model_dir

    with pytest.raises(UserError, match="is the --tokenizer_dir"):
        check_model_dir(run_options(wordpiece_dir, tokenizer_dir=wordpiece_dir, overwrite_output_dir=True))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match=r"--model_dir .*file is a file, not a folder"):
        check_model_dir(run_options(a_file))
    with pytest.raises(UserError, match=r"--logging_dir .*file is a file, not a folder"):
        check_model_dir(run_options(tmp_path / "new", logging_dir=str(a_file)))


def test_overwrite_never_replaces_the_vocabulary_of_a_model(finished, tmp_path):
    from tokenizer.train import TokenizerSettings, train_tokenizer

    model_dir = copy_run(finished, tmp_path / "bert")
    before = snapshot(model_dir)
    with pytest.raises(UserError, match="holds a model or checkpoints, not only a tokenizer"):
        train_tokenizer([SAMPLE_CORPUS], str(model_dir), TokenizerSettings(vocab_size=2000), overwrite=True,
                        show_progress=False)
    assert snapshot(model_dir) == before


def test_model_files_are_readable_as_the_umask_says(finished):
    mode = 0o666 & ~current_umask()
    for path in [finished / "model.safetensors", finished / "checkpoint-8" / "model.safetensors",
                 finished / "config.json"]:
        assert os.stat(path).st_mode & 0o777 == mode, (path, oct(os.stat(path).st_mode))


def test_a_corpus_of_blank_documents_says_so(wordpiece_dir, tmp_path):
    from pretraining.data.build import ExampleSpec
    from pretraining.data.cache import prepare_examples

    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": "   "}\n{"text": ""}\n', encoding="utf-8")
    with pytest.raises(UserError, match="the corpus has no text: every document of .*blank.jsonl is blank"):
        prepare_examples([str(blank)], wordpiece_dir, ExampleSpec("nsp", 32), dataset_dir=str(tmp_path / "ex"),
                         show_progress=False)


def test_continue_on_changed_examples_is_refused_unless_allowed(params, wordpiece_dir, finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    grown = tmp_path / "grown.txt"
    grown.write_text(open(SAMPLE_CORPUS, encoding="utf-8").read() + "新しい段落が一つ書き足された。\n", encoding="utf-8")
    for changed in (("--input_file", str(grown)), ("--input_file", f"{SAMPLE_CORPUS}:1", f"{grown}:0.5")):
        line = last_line(pretrain(params, wordpiece_dir, model_dir, "bert-safe", "--do_continue", *changed,
                                  check=False))
        assert "was trained with another setup (the examples (the corpus files" in line, line
    result = pretrain(params, wordpiece_dir, model_dir, "bert-safe", "--do_continue", "--input_file", str(grown),
                      "--allow_data_change")
    assert "resumed from" in result.stdout + result.stderr


def test_a_file_given_twice_is_read_once_and_held_out_files_are_not_trained_on(tmp_path, capsys):
    from ja_common.corpus import expand_inputs
    from pretraining.data.prepare import held_out_inputs

    copy = tmp_path / "again.txt"
    copy.symlink_to(SAMPLE_CORPUS)
    assert expand_inputs([SAMPLE_CORPUS, SAMPLE_CORPUS, str(copy)]) == [SAMPLE_CORPUS]
    assert "is read once" in capsys.readouterr().err
    with pytest.raises(UserError, match="--validation_file .* is also a training input"):
        held_out_inputs(run_options(tmp_path, input_file=[f"{SAMPLE_CORPUS}:1"], validation_file=[str(copy)]))


def test_do_eval_refuses_another_preset_or_tokenizer(params, wordpiece_dir, bpe_dir, finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    (model_dir / "eval_results.json").write_text("{}")
    for model_type, tokenizer, expected in (("bert-safe-lr", wordpiece_dir, "preset keys learning-rate"),
                                            ("bert-safe", bpe_dir, "the tokenizer")):
        line = last_line(pretrain(params, tokenizer, model_dir, model_type, "--do_eval",
                                  "--validation_split_percentage", "20", check=False))
        assert "--do_eval:" in line and "was trained with another setup" in line and expected in line, line
    assert (model_dir / "eval_results.json").read_text() == "{}"  # nothing overwritten


def test_examples_of_another_tokenizer_are_refused(params, wordpiece_dir, bpe_dir, finished):
    from pretraining.data.prepare import prepare

    folder = next(p.parent for p in (finished.parent / "bert-cache").rglob("examples_info.json"))
    preset = parse_preset("bert-safe", PRESETS["bert-safe"])
    with pytest.raises(UserError, match="holds examples of another tokenizer"):
        prepare(run_options(finished, dataset_dir=str(folder), tokenizer_dir=bpe_dir), preset, show_progress=False)
    prepare(run_options(finished, dataset_dir=str(folder), tokenizer_dir=wordpiece_dir), preset, show_progress=False)


def test_a_batch_size_by_node_must_name_the_runs_nodes(monkeypatch):
    from pretraining.distributed import check_nodes

    preset = parse_preset("bert-x", dict(TINY, **{"batch-size": {"0": 3, "1": 5}}))
    with pytest.raises(UserError, match=r"names node ranks 0, 1 but this run has 1 node\(s\): the global batch "
                                        r"would be 3, not 8"):
        check_nodes(preset, num_processes=1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    check_nodes(preset, num_processes=4)  # two nodes of two processes
    check_nodes(parse_preset("bert-x", TINY), num_processes=1)  # {"-1": N}: any single node


@pytest.mark.parametrize("name,compress", [("c.gz", "gzip"), ("c.xz", "lzma"), ("c.bz2", "bz2")])
def test_a_damaged_archive_is_one_line_naming_it(wordpiece_dir, tmp_path, name, compress):
    import importlib

    data = importlib.import_module(compress).compress(open(SAMPLE_CORPUS, "rb").read())
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    for argv in (["run_pretraining.py", "--prepare_only", "--input_file", str(cut), "--tokenizer_dir",
                  wordpiece_dir, "--model_type", "bert-tiny", "--dataset_dir", str(tmp_path / "examples")],
                 ["train_tokenizer.py", "--input_file", str(cut), "--model_dir", str(tmp_path / "tok"),
                  "--vocab_size", "2000", "--num_files", "2"]):
        result = subprocess.run([sys.executable, os.path.join(ROOT, argv[0]), *argv[1:]], capture_output=True,
                                text=True)
        line = last_line(result)
        assert f"{cut}: the {os.path.splitext(name)[1]} file is damaged or cut short" in line, line
    assert sorted(os.listdir(tmp_path)) == [name]  # no examples, no tokenizer, no debris


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_a_tokenizer_or_examples_is_one_line(wordpiece_dir, tmp_path, monkeypatch):
    import tokenizer.train as tokenizer_training
    from pretraining.data import build
    from pretraining.data.build import ExampleSpec
    from pretraining.data.cache import prepare_examples

    existing = tmp_path / "tok"
    shutil.copytree(wordpiece_dir, existing)
    before = snapshot(existing)
    monkeypatch.setattr(tokenizer_training, "save_tokenizer_files", full_disk)
    with pytest.raises(UserError, match=r"writing the tokenizer .* failed \(the disk is full\); nothing of it was kept"):
        tokenizer_training.train_tokenizer([SAMPLE_CORPUS], str(existing), tokenizer_training.TokenizerSettings(
            vocab_size=2000), overwrite=True, show_progress=False)
    assert snapshot(existing) == before
    monkeypatch.setattr(build.ShardWriter, "append", full_disk)
    with pytest.raises(UserError, match=r"building the examples in .* failed \(the disk is full\)"):
        prepare_examples([SAMPLE_CORPUS], wordpiece_dir, ExampleSpec("nsp", 32), dataset_dir=str(tmp_path / "ex"),
                         num_proc=1, show_progress=False)
    assert sorted(os.listdir(tmp_path)) == ["tok"]


def test_a_full_disk_while_writing_the_final_model_keeps_the_model_dir(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path / "bert")
    before = snapshot(model_dir)

    class HalfWriter:
        accelerator = FullDisk()

        def write(self, directory, eval_results=None):
            (open(os.path.join(directory, "config.json"), "w")).write("{}")  # a first file, then the disk is full
            full_disk()

    with pytest.raises(UserError, match=r"writing the final model into .* failed \(the disk is full\); nothing of it "
                                        r"was kept\. The last complete checkpoint is .*checkpoint-8"):
        ckpt.write_final_model(HalfWriter(), str(model_dir))
    assert snapshot(model_dir) == before
