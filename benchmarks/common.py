"""Helpers shared by the benchmark scripts."""

import multiprocessing as mp
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AOZORA = os.path.join(os.path.dirname(ROOT), "shared", "corpus", "aozora")


def aozora_corpus(out_dir, repeat=1):
    """All Aozora files concatenated ``repeat`` times into one corpus file; exits if absent."""
    if not os.path.isdir(AOZORA):
        sys.exit(f"skipped: {AOZORA} is not here (the benchmarks need ../shared/corpus/aozora)")
    path = os.path.join(out_dir, f"aozora-x{repeat}.txt")
    if not os.path.exists(path):
        parts = [open(os.path.join(AOZORA, n), "rb").read() for n in sorted(os.listdir(AOZORA)) if n.endswith(".txt")]
        text = b"\n".join(p.rstrip(b"\n") + b"\n" for p in parts)
        with open(path, "wb") as f:
            for _ in range(repeat):
                f.write(text + b"\n")
    return path


def timed_command(args, cwd=None):
    """Run a command; returns (seconds, peak RSS in MB of its largest process, completed process).

    The completed process's stderr holds the tail of the command's own output.
    """
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode); "
        "sys.stderr.write((r.stdout + r.stderr)[-4000:])"
    )
    result = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=cwd, capture_output=True, text=True)
    seconds, peak_mb, code = result.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr}")
    return float(seconds), float(peak_mb), result


def best_of(n, fn):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _raw_parse(lines, mecab_dic):
    import fugashi

    from tokenizer.mecab import mecab_arguments

    tagger = fugashi.GenericTagger(mecab_arguments(mecab_dic) + " -Owakati")
    for line in lines:
        tagger.parse(line)


def raw_fugashi(path, processes, repeat, mecab_dic="unidic_lite"):
    """The reference: seconds for fugashi's wakati parse of every line, lines split evenly over processes."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    shards = [lines[i::processes] for i in range(processes)]
    ctx = mp.get_context("fork")

    def run():
        workers = [ctx.Process(target=_raw_parse, args=(shard, mecab_dic)) for shard in shards]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return best_of(repeat, run)
