"""MeCab word splitting, shared by training, the data pipeline and saved BPE tokenizers.

This module must stay self-contained (standard library + fugashi + a dictionary package):
it is copied next to saved BPE tokenizers and imported there through
``trust_remote_code`` in environments that do not have this project installed.

The splitting mirrors transformers' ``MecabTokenizer`` (used by ``BertJapaneseTokenizer``):
NFKC normalization, then MeCab with ``-d <dic> -r <mecabrc> <user options>``, then the
surface forms. We ask MeCab for its ``-Owakati`` output instead of iterating node objects,
which is the same segmentation about twice as fast.
"""

import importlib
import os
import re
import unicodedata

# Dictionary name -> (Python module, how to install it).
DICTIONARIES = {
    "unidic_lite": ("unidic_lite", "pip install unidic-lite"),
    "unidic": ("unidic", "pip install unidic && python -m unidic download"),
    "ipadic": ("ipadic", "pip install ipadic"),
}

# MeCab's lattice grows with the input; longer text is cut into pieces of at most this
# many characters at a natural boundary before parsing (see split_long_text). The same two
# are in ja_common/corpus.py: this file is saved with BPE tokenizers and stands alone.
MAX_PARSE_CHARS = 10_000
_BREAK_CHARS = "。．.!！?？\n 、，,"


class DictionaryNotInstalled(RuntimeError):
    pass


def dictionary_dir(mecab_dic):
    """The directory of an installed MeCab dictionary package, or a clear error."""
    if mecab_dic not in DICTIONARIES:
        raise ValueError(f"unknown MeCab dictionary '{mecab_dic}': choose one of {', '.join(DICTIONARIES)}")
    module_name, install = DICTIONARIES[mecab_dic]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise DictionaryNotInstalled(
            f"the MeCab dictionary '{mecab_dic}' is not installed: run `{install}`"
        ) from None
    dic_dir = module.DICDIR
    if not os.path.isdir(dic_dir):
        raise DictionaryNotInstalled(
            f"the MeCab dictionary '{mecab_dic}' is installed but its data is missing: run `{install}`"
        )
    return dic_dir


def mecab_arguments(mecab_dic, mecab_option=None):
    """The tagger arguments transformers' MecabTokenizer builds for the same settings."""
    option = mecab_option or ""
    if re.search(r"(^|\s)(-O|--output-format-type)", option):
        raise ValueError("mecab_option must not set the output format (-O): the tokenizer sets it")
    if mecab_dic is None:
        return option
    dic_dir = dictionary_dir(mecab_dic)
    return f'-d "{dic_dir}" -r "{os.path.join(dic_dir, "mecabrc")}" ' + option


def split_long_text(text, limit=MAX_PARSE_CHARS):
    """Cut text longer than ``limit`` characters after a sentence mark or space, else hard."""
    if len(text) <= limit:
        return [text]
    pieces = []
    start = 0
    while len(text) - start > limit:
        window = text[start : start + limit]
        cut = max(window.rfind(c) for c in _BREAK_CHARS) + 1
        if cut <= 0:
            cut = limit
        pieces.append(text[start : start + cut])
        start += cut
    pieces.append(text[start:])
    return pieces


class MecabWordSplitter:
    """Raw text -> MeCab words, exactly as BertJapaneseTokenizer splits it.

    ``special_tokens`` are kept whole and never normalized or parsed, like the added
    tokens that transformers' tokenizers split out before word tokenization.
    """

    def __init__(self, mecab_dic="unidic_lite", mecab_option=None, special_tokens=()):
        import fugashi

        self.mecab_dic = mecab_dic
        self.mecab_option = mecab_option
        self._tagger = fugashi.GenericTagger(mecab_arguments(mecab_dic, mecab_option) + " -Owakati")
        self.set_special_tokens(special_tokens)

    def set_special_tokens(self, special_tokens):
        tokens = sorted(set(special_tokens), key=len, reverse=True)
        self.special_tokens = frozenset(tokens)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None
        self._special_first_chars = "".join(sorted({t[0] for t in tokens}))

    def _parse(self, text):
        text = unicodedata.normalize("NFKC", text)
        if len(text) <= MAX_PARSE_CHARS:
            return self._tagger.parse(text).split()
        return [w for piece in split_long_text(text) for w in self._tagger.parse(piece).split()]

    def _has_special(self, text):
        return self._special_pattern is not None and any(c in text for c in self._special_first_chars)

    def wakati(self, text):
        """The words of ``text`` joined by single spaces (the fast path for training)."""
        if len(text) <= MAX_PARSE_CHARS and not self._has_special(text):
            return self._tagger.parse(unicodedata.normalize("NFKC", text))
        return " ".join(self.split(text))

    def split(self, text):
        """The list of words of ``text`` (special tokens as single words)."""
        if not self._has_special(text):
            return self._parse(text)
        words = []
        for piece in self._special_pattern.split(text):
            if piece in self.special_tokens:
                words.append(piece)
            elif piece:
                words.extend(self._parse(piece))
        return words

    def split_many(self, texts):
        """The words of many texts at once: (all words in order, the number of words of each text).

        The same words as ``split`` on each text, with the per-text Python work cut to one
        MeCab call (the data pipeline runs this over every line of the corpus).
        """
        special = self._has_special("".join(texts))
        normalized = [] if special else [unicodedata.normalize("NFKC", text) for text in texts]
        if not special and max(map(len, normalized), default=0) <= MAX_PARSE_CHARS:
            outputs = list(map(self._tagger.parse, normalized))
            words = " ".join(outputs).split()
            counts = [output.count(" ") + 1 if output else 0 for output in outputs]
            if sum(counts) == len(words):  # else a word holds a character str.split cuts at (rare)
                return words, counts
        per_text = [self.split(text) for text in texts]
        return [w for words in per_text for w in words], [len(words) for words in per_text]

    def __getstate__(self):
        # The fugashi tagger cannot be pickled (datasets workers, multiprocessing).
        return {"mecab_dic": self.mecab_dic, "mecab_option": self.mecab_option, "special_tokens": list(self.special_tokens)}

    def __setstate__(self, state):
        self.__init__(**state)
