"""Tokenizer training: MeCab words -> WordPiece or BPE vocabulary -> a Hugging Face directory.

Why the trainer is configured the way it is (reproducibility): HF tokenizers gives the
continuation tokens ("##x") their ids in hash-map order while it reads the words, and
merges of equal count are ordered by those ids, so WordPiece (and BPE with a
continuation prefix) vocabularies differ from run to run. We choose the alphabet
ourselves (most frequent characters, ties by code point) and register every "##x" of it
up front, which fixes all ids before training and makes the vocabulary byte-identical
across runs and process counts.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass

from ja_common.files import holds_model, make_staging_dir, staging_directory

from ja_common.corpus import DEFAULT_TEXT_COLUMN, expand_inputs, input_bytes
from .encoder import CONTINUATION
from ja_common.errors import UserError, disk_full
from .mecab import DICTIONARIES, DictionaryNotInstalled, MecabWordSplitter
from .word_split import DocumentSample, split_corpus

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_TYPES = ("wordpiece", "bpe")
TRAINING_RECORD = "tokenizer_training.json"
MODEL_MAX_LENGTH = 512
# Files a tokenizer directory may hold; a directory with any of them "holds a tokenizer".
TOKENIZER_FILES = (
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenization_mecab_bpe.py",
    "mecab.py",
    TRAINING_RECORD,
)


@dataclass
class TokenizerSettings:
    tokenizer_type: str = "wordpiece"
    vocab_size: int = 32768
    min_frequency: int = 2
    limit_alphabet: int = 6129
    num_unused_tokens: int = 10
    mecab_dic_type: str = "unidic_lite"
    mecab_option: str = ""

    @property
    def reserved_tokens(self):
        return SPECIAL_TOKENS + [f"<unused{i}>" for i in range(self.num_unused_tokens)]

    def validate(self):
        if self.tokenizer_type not in TOKENIZER_TYPES:
            raise UserError(f"--tokenizer_type must be one of {', '.join(TOKENIZER_TYPES)}, not {self.tokenizer_type}")
        if self.mecab_dic_type not in DICTIONARIES:
            raise UserError(f"--mecab_dic_type must be one of {', '.join(DICTIONARIES)}, not {self.mecab_dic_type}")
        for name in ("min_frequency", "limit_alphabet"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1")
        if self.num_unused_tokens < 0:
            raise UserError("--num_unused_tokens must not be negative")
        if self.vocab_size <= len(self.reserved_tokens):
            raise UserError(
                f"--vocab_size {self.vocab_size} is too small: the special and unused tokens alone take "
                f"{len(self.reserved_tokens)} ids"
            )

    @property
    def mecab_kwargs(self):
        return {"mecab_dic": self.mecab_dic_type, "mecab_option": self.mecab_option or None}


def choose_alphabet(char_counts, limit):
    """The ``limit`` most frequent characters (ties by code point), in code point order."""
    ranked = sorted(char_counts, key=lambda c: (-char_counts[c], c))
    return sorted(ranked[:limit])


def check_vocab_size(settings, char_counts):
    """Every alphabet character takes two ids (x and ##x) besides the special tokens: leave room for merges."""
    alphabet = len(choose_alphabet(char_counts, settings.limit_alphabet))
    needed = len(settings.reserved_tokens) + 2 * alphabet
    if settings.vocab_size <= needed:
        raise UserError(
            f"--vocab_size {settings.vocab_size} is too small for this corpus: the special tokens "
            f"({len(settings.reserved_tokens)}) and the alphabet ({alphabet} characters, each as x and ##x) take "
            f"{needed} ids before any merge; raise --vocab_size above {needed} or lower --limit_alphabet"
        )


def train_vocabulary(word_files, char_counts, settings, show_progress=True):
    """Train the subword model on files of space-separated words; returns the HF tokenizers object."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = choose_alphabet(char_counts, settings.limit_alphabet)
    trainer_class = trainers.WordPieceTrainer if settings.tokenizer_type == "wordpiece" else trainers.BpeTrainer
    trainer = trainer_class(
        vocab_size=settings.vocab_size,
        min_frequency=settings.min_frequency,
        show_progress=show_progress,
        special_tokens=settings.reserved_tokens + [CONTINUATION + c for c in alphabet],
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix=CONTINUATION,
    )
    if settings.tokenizer_type == "wordpiece":
        model = models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=CONTINUATION)
    else:
        model = models.BPE(unk_token="[UNK]", continuing_subword_prefix=CONTINUATION)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train(word_files, trainer)
    return tokenizer


def ordered_vocabulary(tokenizer):
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "vocabulary ids are not contiguous"
    return tokens


def save_tokenizer_files(tokenizer, settings, directory, record):
    """Write a directory that AutoTokenizer loads (BertJapaneseTokenizer or MecabBpeTokenizer)."""
    if settings.tokenizer_type == "wordpiece":
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(ordered_vocabulary(tokenizer)) + "\n")
        # Written by hand rather than by BertJapaneseTokenizer.save_pretrained: importing
        # transformers costs about 2 s, half of a whole training run on a 6 MB corpus.
        # tests/test_tokenizer.py checks that transformers loads it as BertJapaneseTokenizer.
        config = {
            "tokenizer_class": "BertJapaneseTokenizer",
            "do_lower_case": False,
            "do_word_tokenize": True,
            "do_subword_tokenize": True,
            "word_tokenizer_type": "mecab",
            "subword_tokenizer_type": "wordpiece",
            "mecab_kwargs": settings.mecab_kwargs,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_max_length": MODEL_MAX_LENGTH,
        }
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write("\n")
    else:
        from .tokenization_mecab_bpe import MecabBpeTokenizer

        vocab_file, merges_file = tokenizer.model.save(directory)
        hf_tokenizer = MecabBpeTokenizer(vocab_file, merges_file, mecab_kwargs=settings.mecab_kwargs)
        hf_tokenizer.register_for_auto_class("AutoTokenizer")
        hf_tokenizer.model_max_length = MODEL_MAX_LENGTH
        hf_tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, TRAINING_RECORD), "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=2)
        f.write("\n")


def document_sample(sample_bytes, seed, files):
    """The DocumentSample that draws about ``sample_bytes`` of the inputs (a share if at most 1), or None
    for all of them."""
    if sample_bytes is None:
        return None
    fraction = sample_bytes if sample_bytes <= 1 else sample_bytes / sum(input_bytes(p) for p in files)
    return DocumentSample(fraction, seed) if fraction < 1 else None


def holds_tokenizer(directory):
    return os.path.isdir(directory) and any(os.path.exists(os.path.join(directory, n)) for n in TOKENIZER_FILES)


def install_directory(staging, model_dir):
    """Move the finished files into model_dir, replacing an older tokenizer's files."""
    if not os.path.exists(model_dir):
        os.rename(staging, model_dir)
        return
    new_files = set(os.listdir(staging))
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(model_dir, name))
    for name in TOKENIZER_FILES:  # leftovers of an older tokenizer of the other type
        path = os.path.join(model_dir, name)
        if name not in new_files and os.path.isfile(path):
            os.remove(path)
    shutil.rmtree(staging, ignore_errors=True)


def train_tokenizer(
    input_files,
    model_dir,
    settings,
    intermediate_dir=None,
    num_files=1,
    overwrite=False,
    encoding_errors="strict",
    show_progress=True,
    text_column=DEFAULT_TEXT_COLUMN,
    sample_bytes=None,
    seed=0,
):
    """The whole run of train_tokenizer.py; returns the model directory.

    ``sample_bytes``: train on an evenly drawn, seeded sample of the documents, about this many bytes
    of the inputs as stored (a number up to 1 is a share of them).
    """
    settings.validate()
    if num_files < 1:
        raise UserError("--num_files must be at least 1")
    if sample_bytes is not None and not sample_bytes > 0:
        raise UserError(f"--sample_bytes must be above 0 (bytes, or a share of the corpus up to 1), not {sample_bytes}")
    if holds_model(model_dir):  # --overwrite replaces a tokenizer, never the model trained with it
        raise UserError(f"--model_dir {model_dir} holds a model or checkpoints, not only a tokenizer: replacing its "
                        "vocabulary would break the model; choose another --model_dir")
    if holds_tokenizer(model_dir) and not overwrite:
        raise UserError(f"{model_dir} already holds a tokenizer: pass --overwrite to replace it")
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise UserError(f"--model_dir {model_dir} exists and is not a directory")
    if intermediate_dir and os.path.realpath(intermediate_dir) == os.path.realpath(model_dir):
        raise UserError("--intermediate_dir is --model_dir: the word files (1.2x the corpus) would stay in the "
                        "tokenizer's folder; choose another folder")
    files = expand_inputs(input_files)
    sample = document_sample(sample_bytes, seed, files)
    try:  # check the dictionary and options once, before starting workers
        MecabWordSplitter(**settings.mecab_kwargs)
    except DictionaryNotInstalled as error:
        raise UserError(str(error)) from None
    except (ValueError, RuntimeError) as error:
        # fugashi's message is a page of help; MeCab's own complaint is its last line
        reason = [line.strip() for line in str(error).splitlines() if line.strip(" -)")][-1:] or ["?"]
        raise UserError(f"--mecab_option {settings.mecab_option!r}: MeCab rejected it ({reason[0]})") from None

    # the word files (1.2x the corpus) and the new tokenizer are built beside model_dir under names
    # that carry this process's id: what a killed run leaves is removed by the next one
    words_dir = intermediate_dir or make_staging_dir(model_dir, "words")
    try:
        with staging_directory(model_dir) as staging:
            os.makedirs(words_dir, exist_ok=True)
            split = split_corpus(files, words_dir, num_files, settings.mecab_kwargs, encoding_errors, show_progress,
                                 text_column, sample)
            if split.words == 0 and sample and split.documents:
                raise UserError(f"--sample_bytes {sample_bytes} drew none of the {split.documents} documents: "
                                "draw more")
            if split.words == 0:
                raise UserError(f"the corpus is empty: {', '.join(files)} hold no words")
            check_vocab_size(settings, split.char_counts)
            tokenizer = train_vocabulary(split.word_files, split.char_counts, settings, show_progress)
            record = {
                "settings": asdict(settings),
                "vocab_size": tokenizer.get_vocab_size(with_added_tokens=False),
                "corpus": {
                    "files": [{"path": os.path.abspath(p), "bytes": input_bytes(p)} for p in files],
                    "bytes": split.bytes,
                    "lines": split.lines,
                    "words": split.words,
                    "distinct_characters": len(split.char_counts),
                    "documents": split.documents,
                },
                "sample": sample and {
                    "sample_bytes": sample_bytes,
                    "fraction": sample.fraction,
                    "seed": sample.seed,
                    "documents": split.documents_split,
                    "characters": split.characters_split,
                },
            }
            save_tokenizer_files(tokenizer, settings, staging, record)
            install_directory(staging, model_dir)
    except OSError as error:
        if not disk_full(error):
            raise
        raise UserError(f"writing the tokenizer {model_dir} failed (the disk is full); nothing of it was kept and "
                        f"{model_dir} is as it was: free space, then run again") from None
    finally:
        if intermediate_dir is None:
            shutil.rmtree(words_dir, ignore_errors=True)
    return model_dir
