"""What a pretraining run is told besides its preset: the typed form of run_pretraining.py's flags.

The library's entry points (``prepare``, ``run_training``, ``run_evaluation``) take a RunOptions;
the CLI builds one from its command line, and a Python caller builds one directly:

    run_training(RunOptions(model_type="bert-base", input_file=["corpus.txt"], tokenizer_dir="tok",
                            model_dir="model"), load_preset("parameter.json", "bert-base"))
"""

from dataclasses import dataclass

from ja_common.corpus import DEFAULT_TEXT_COLUMN
from ja_common.errors import UserError

DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


@dataclass
class RunOptions:
    model_type: str
    parameter_file: str = "parameter.json"
    model_dir: str = None
    # data
    input_file: list = None  # files, directories, globs; PATH:WEIGHT items mix corpora
    text_column: str = DEFAULT_TEXT_COLUMN
    dataset_dir: str = None
    tokenizer_dir: str = None
    overwrite_cache: bool = False
    disable_overwrite_cache: bool = False
    prepare_only: bool = False
    num_proc: int = None
    encoding_errors: str = "strict"
    # evaluation
    validation_split_percentage: float = None
    validation_file: list = None
    eval_steps: int = None
    do_eval: bool = False
    # training
    do_whole_word_mask: bool = False  # upstream's flag: --masking whole-word
    masking: str = None  # None: the preset's "masking" (pretraining/presets.py MASKING_MODES)
    do_continue: bool = False
    allow_data_change: bool = False  # --do_continue on examples other than the checkpoint's
    overwrite_output_dir: bool = False
    run_name: str = None
    logging_dir: str = "runs"
    report_to: tuple = ("tensorboard",)  # pretraining/trackers.py
    seed: int = 42
    node_rank: int = None
    # stopping (pretraining/stopping.py)
    save_minutes: float = None  # None: the preset's save-minutes
    max_minutes: float = None  # stop with a checkpoint before this many minutes since the process started
    stop_signals: tuple = DEFAULT_STOP_SIGNALS
    local_rank: int = None  # torch.distributed.launch passes it; unused
    # speed: None keeps the preset's key of the same name
    torch_compile: bool = None
    gradient_checkpointing: bool = None
    attention_implementation: str = None
    bf16: bool = None
    peak_tflops: float = None
    dataloader_num_workers: int = None  # None: pretraining/distributed.py default_loader_workers
    # upstream's flags
    fp16_type: int = None
    tokenizer_type: str = None
    mecab_dic_type: str = None
    process_start: float = None  # time.time() when the process started, for the resume time it reports

    def __post_init__(self):
        """The flags' own ranges, checked before any work (one line each)."""
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be between 0 and {2**32 - 1}, not {self.seed}")
        for flag in ("save_minutes", "max_minutes", "peak_tflops"):
            value = getattr(self, flag)
            if value is not None and not value > 0:  # 0 would silently mean "never"/"unknown"
                raise UserError(f"--{flag} must be above 0, not {value:g}")
        for flag in ("num_proc", "eval_steps"):
            if getattr(self, flag) is not None and getattr(self, flag) < 1:
                raise UserError(f"--{flag} must be at least 1")
        if self.dataloader_num_workers is not None and self.dataloader_num_workers < 0:
            raise UserError("--dataloader_num_workers must be 0 (batches made in the training process) or more")
        if self.fp16_type not in (None, 0, 1, 2, 3):
            raise UserError(f"--fp16_type must be 0 (off) or 1-3 (mixed fp16), not {self.fp16_type}")

    def masking_mode(self, preset):
        """The masking of a masked-LM run: --masking, else --do_whole_word_mask, else the preset's, else token."""
        if self.do_whole_word_mask and self.masking not in (None, "whole-word"):
            raise UserError(f"--do_whole_word_mask and --masking {self.masking} contradict each other: give one")
        return self.masking or ("whole-word" if self.do_whole_word_mask else preset.masking or "token")
