"""The data pipeline's tokenizer: raw text -> subword ids and the MeCab word of each id.

It reads a directory written by train_tokenizer.py and gives exactly the ids that
``AutoTokenizer.from_pretrained(dir)`` gives (without [CLS]/[SEP]), but encodes whole
batches with the Rust ``tokenizers`` model on MeCab's pre-split words, which is several
times faster than transformers' Python BertJapaneseTokenizer.
"""

import itertools
import json
import operator
import os

from tokenizers import Tokenizer
from tokenizers.models import BPE, WordPiece

from .errors import UserError
from .mecab import DictionaryNotInstalled, MecabWordSplitter
from .train import CONTINUATION

# transformers' WordpieceTokenizer turns words longer than this into [UNK]; so does ours.
MAX_WORD_CHARS = 100


def read_tokenizer_config(tokenizer_dir):
    path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        raise UserError(f"--tokenizer_dir {tokenizer_dir} holds no tokenizer_config.json: train one with train_tokenizer.py")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if "mecab_kwargs" not in config:
        raise UserError(f"{path} is not a MeCab tokenizer written by train_tokenizer.py (no mecab_kwargs)")
    return config


def _special_tokens(config):
    """The special tokens a tokenizer config names (transformers splits text on them first)."""
    names = [config.get(k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")]
    names += config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
    return [n["content"] if isinstance(n, dict) else n for n in names if n]


class SubwordEncoder:
    def __init__(self, tokenizer_dir):
        self.tokenizer_dir = tokenizer_dir
        config = read_tokenizer_config(tokenizer_dir)
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
        self._rust = Tokenizer(model)
        self._rust.add_special_tokens(sorted(added, key=added.get))
        self._word_cache, self._max_cache = {}, 2_000_000
        try:
            self.splitter = MecabWordSplitter(**self.mecab_kwargs, special_tokens=added)
        except DictionaryNotInstalled as error:
            raise UserError(f"{tokenizer_dir} needs a MeCab dictionary: {error}") from None

    @property
    def vocab_size(self):
        return len(self.vocab)

    def token_id(self, token):
        return self.vocab[token]

    def encode_words(self, word_lists):
        """Pre-split words (lists of str) -> list of (ids, word index of each id)."""
        encodings = self._rust.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=False)
        return [(e.ids, e.word_ids) for e in encodings]

    def encode_word_ids(self, words):
        """Subword ids of each word (a list of lists), memoized: words repeat a lot in text."""
        cache = self._word_cache
        result = list(map(cache.get, words))
        missing = sorted(set(itertools.compress(words, map(operator.not_, result))))
        if missing:
            for word, encoding in zip(missing, self._rust.encode_batch([[w] for w in missing], is_pretokenized=True,
                                                                        add_special_tokens=False)):
                cache[word] = encoding.ids
            if len(cache) > self._max_cache:
                cache.clear()
            result = list(map(cache.get, words))
            if None in result:  # only when the cache was just cleared
                result = [ids if ids is not None else self._word_ids_uncached(w) for w, ids in zip(words, result)]
        return result

    def _word_ids_uncached(self, word):
        return self._rust.encode([word], is_pretokenized=True, add_special_tokens=False).ids

    def encode(self, texts):
        """Raw lines of text -> list of (ids, word index of each id)."""
        return self.encode_words([self.splitter.split(text) for text in texts])

    def __getstate__(self):
        return {"tokenizer_dir": self.tokenizer_dir}

    def __setstate__(self, state):
        self.__init__(state["tokenizer_dir"])
