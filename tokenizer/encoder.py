"""The data pipeline's tokenizer: raw text -> subword ids and the MeCab word of each id.

It reads a directory written by train_tokenizer.py and gives exactly the ids that
``AutoTokenizer.from_pretrained(dir)`` gives (without [CLS]/[SEP]), but encodes whole
batches with the Rust ``tokenizers`` model on MeCab's pre-split words, which is several
times faster than transformers' Python BertJapaneseTokenizer.
"""

import collections
from functools import cached_property
import itertools
import json
import os

import numpy as np

from ja_common.arrays import ranges_index

from tokenizers import Tokenizer
from tokenizers.models import BPE, WordPiece

from ja_common.errors import UserError
from .mecab import DictionaryNotInstalled, MecabWordSplitter

CONTINUATION = "##"  # the prefix of subwords that continue a word, in both tokenizer types
# transformers' WordpieceTokenizer turns words longer than this into [UNK]; so does ours.
MAX_WORD_CHARS = 100


def _put(array, at, values):
    """array[at : at + len(values)] = values, doubling the array first when it is too short."""
    if at + len(values) > len(array):
        grown = np.zeros(max(2 * len(array), at + len(values)), dtype=array.dtype)
        grown[:at] = array[:at]
        array = grown
    array[at : at + len(values)] = values
    return array


def read_tokenizer_config(tokenizer_dir):
    path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        raise UserError(f"--tokenizer_dir {tokenizer_dir} holds no tokenizer_config.json: train one with train_tokenizer.py")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, OSError) as error:
        raise UserError(f"{path} is damaged ({error}): train the tokenizer again with train_tokenizer.py") from None
    if not isinstance(config, dict) or "mecab_kwargs" not in config:
        raise UserError(f"{path} is not a MeCab tokenizer written by train_tokenizer.py (no mecab_kwargs)")
    return config


def _special_tokens(config):
    """The special tokens a tokenizer config names (transformers splits text on them first)."""
    names = [config.get(k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")]
    names += config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
    return [n["content"] if isinstance(n, dict) else n for n in names if n]


REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class SubwordEncoder:
    def __init__(self, tokenizer_dir):
        self.tokenizer_dir = tokenizer_dir
        config = read_tokenizer_config(tokenizer_dir)
        try:
            model, added = self._read_vocabulary(tokenizer_dir, config)
        except UserError:
            raise
        except Exception as error:  # unreadable files: a JSON, UTF-8, tokenizers or merges error
            raise UserError(f"--tokenizer_dir {tokenizer_dir} is damaged ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200] if str(error) else ''}): train the tokenizer again "
                            "with train_tokenizer.py") from None
        missing = [t for t in REQUIRED_TOKENS if t not in self.vocab]
        if missing:
            raise UserError(f"--tokenizer_dir {tokenizer_dir} lacks the special token(s) {' '.join(missing)}: train "
                            "the tokenizer again with train_tokenizer.py")
        self._whole_word_ids = {}  # words whose ids are their vocabulary entry (see _add_words)
        if self.tokenizer_type == "wordpiece":
            too_long = max(map(len, self.vocab), default=0) > MAX_WORD_CHARS
            self._whole_word_ids = ({t: i for t, i in self.vocab.items() if len(t) <= MAX_WORD_CHARS} if too_long
                                    else self.vocab)
        self._rust = Tokenizer(model)
        self._rust.add_special_tokens(sorted(added, key=added.get))
        self._max_cache = 300_000  # distinct words kept in the encode_flat table (tens of MB)
        self._reset_cache()
        self._added = added

    @cached_property
    def splitter(self):
        """MeCab, opened when text is first split: ids, vocabularies and prepared examples need none
        (a GPU machine without MeCab trains from examples prepared elsewhere)."""
        try:
            return MecabWordSplitter(**self.mecab_kwargs, special_tokens=self._added)
        except DictionaryNotInstalled as error:
            raise UserError(f"{self.tokenizer_dir} needs a MeCab dictionary: {error}") from None

    def _read_vocabulary(self, tokenizer_dir, config):
        """The subword model and the added tokens; sets vocab, tokenizer_type, mecab_kwargs, unk_token."""
        self.mecab_kwargs = config["mecab_kwargs"]
        self.unk_token = config.get("unk_token", "[UNK]")
        added = {entry["content"]: int(i) for i, entry in config.get("added_tokens_decoder", {}).items()}
        special = _special_tokens(config)
        vocab_txt = os.path.join(tokenizer_dir, "vocab.txt")
        vocab_json = os.path.join(tokenizer_dir, "vocab.json")
        if os.path.isfile(vocab_txt):
            self.tokenizer_type = "wordpiece"
            with open(vocab_txt, encoding="utf-8") as f:
                vocab = {token: i for i, token in enumerate(f.read().split("\n")[:-1])}
            vocab.update(added)
            added.update({t: vocab[t] for t in special if t in vocab})
            model = WordPiece(
                vocab, unk_token=self.unk_token, continuing_subword_prefix=CONTINUATION, max_input_chars_per_word=MAX_WORD_CHARS
            )
        elif os.path.isfile(vocab_json):
            self.tokenizer_type = "bpe"
            with open(vocab_json, encoding="utf-8") as f:
                vocab = json.load(f)
            with open(os.path.join(tokenizer_dir, "merges.txt"), encoding="utf-8") as f:
                merges = [tuple(line.split()) for line in f if line.strip() and not line.startswith("#version")]
            vocab.update(added)
            added.update({t: vocab[t] for t in special if t in vocab})
            model = BPE(vocab, merges, unk_token=self.unk_token, continuing_subword_prefix=CONTINUATION)
        else:
            raise UserError(f"--tokenizer_dir {tokenizer_dir} holds neither vocab.txt nor vocab.json")
        self.vocab = vocab
        return model, added

    @property
    def vocab_size(self):
        return len(self.vocab)

    def token_id(self, token):
        return self.vocab[token]

    def encode_words(self, word_lists):
        """Pre-split words (lists of str) -> list of (ids, word index of each id)."""
        encodings = self._rust.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=False)
        return [(e.ids, e.word_ids) for e in encodings]

    def encode_flat(self, words):
        """Pre-split words -> (ids of all their subwords in order, number of subwords of each word).

        The data pipeline's fast path: a word's ids are computed once per process and kept
        in one flat table, so a chunk of text costs one dict lookup a word and a numpy
        gather. (Encoding each line through the Rust tokenizer cost as much as MeCab.)
        """
        if len(self._slot_of) > self._max_cache:
            self._reset_cache()
        known = len(self._slot_of)
        # a new word gets the next slot number from the defaultdict's factory, in C
        slots = np.fromiter(map(self._slot_of.__getitem__, words), dtype=np.int64, count=len(words))
        if len(self._slot_of) > known:
            self._add_words(list(itertools.islice(self._slot_of, known, None)))
        lengths = self._slot_lengths[slots]
        return self._pieces[ranges_index(self._slot_starts[slots], lengths)], lengths

    def _reset_cache(self):
        self._slot_of = collections.defaultdict(itertools.count().__next__)
        # the table, in arrays that grow by doubling: slot -> (start, length) in _pieces
        self._slot_starts = np.zeros(1024, dtype=np.int64)
        self._slot_lengths = np.zeros(1024, dtype=np.int64)
        self._pieces = np.zeros(4096, dtype=np.int32)
        self._slots_used = self._pieces_used = 0

    def _add_words(self, new_words):
        """Append the subword ids of words seen for the first time (in slot order) to the table."""
        count = len(new_words)
        # WordPiece matches the longest prefix first: a whole word in the vocabulary is one id
        whole = np.fromiter(map(self._whole_word_ids.get, new_words, itertools.repeat(-1)), dtype=np.int64, count=count)
        lengths = np.ones(count, dtype=np.int64)
        missing = np.flatnonzero(whole < 0)
        if len(missing):
            # the other words go to the Rust model as one pre-split sequence: one call, not one per word
            encoding = self._rust.encode([new_words[k] for k in missing], is_pretokenized=True, add_special_tokens=False)
            lengths[missing] = np.bincount(np.asarray(encoding.word_ids, dtype=np.int64), minlength=len(missing))
        starts = np.cumsum(lengths) - lengths
        flat = np.empty(int(lengths.sum()), dtype=np.int32)
        flat[starts[whole >= 0]] = whole[whole >= 0]
        if len(missing):
            flat[ranges_index(starts[missing], lengths[missing])] = encoding.ids
        self._slot_starts = _put(self._slot_starts, self._slots_used, self._pieces_used + starts)
        self._slot_lengths = _put(self._slot_lengths, self._slots_used, lengths)
        self._pieces = _put(self._pieces, self._pieces_used, flat)
        self._slots_used += count
        self._pieces_used += len(flat)

    def encode(self, texts):
        """Raw lines of text -> list of (ids, word index of each id)."""
        return self.encode_words([self.splitter.split(text) for text in texts])

    def __getstate__(self):
        return {"tokenizer_dir": self.tokenizer_dir}

    def __setstate__(self, state):
        self.__init__(state["tokenizer_dir"])
