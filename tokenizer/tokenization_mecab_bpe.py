"""A MeCab + BPE tokenizer for transformers, saved beside every BPE tokenizer directory.

Loaded with ``AutoTokenizer.from_pretrained(dir, trust_remote_code=True)``; it needs
transformers, tokenizers, fugashi and the MeCab dictionary, not this project. Text is
split into MeCab words (see mecab.py), then each word is cut into BPE subwords by the
Rust ``tokenizers`` model; subwords after the first of a word carry the ``##`` prefix,
as in WordPiece.
"""

import json
import os

from tokenizers import Tokenizer
from tokenizers.models import BPE
from transformers import PreTrainedTokenizer

from .mecab import MecabWordSplitter

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}


class MecabBpeTokenizer(PreTrainedTokenizer):
    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file,
        merges_file,
        mecab_kwargs=None,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        continuing_subword_prefix="##",
        **kwargs,
    ):
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.continuing_subword_prefix = continuing_subword_prefix
        self.mecab_kwargs = dict(mecab_kwargs or {"mecab_dic": "unidic_lite"})
        self.word_splitter = MecabWordSplitter(**self.mecab_kwargs)
        with open(merges_file, encoding="utf-8") as f:
            self.merges = [tuple(line.split()) for line in f if line.strip() and not line.startswith("#version")]
        self.unk = str(unk_token)
        self._build_bpe()
        super().__init__(
            unk_token=unk_token,
            sep_token=sep_token,
            pad_token=pad_token,
            cls_token=cls_token,
            mask_token=mask_token,
            mecab_kwargs=self.mecab_kwargs,
            continuing_subword_prefix=continuing_subword_prefix,
            token_type_ids_pattern="bert_style",
            token_type_ids_include_special_tokens=True,
            special_tokens_pattern="cls_sep",
            **kwargs,
        )

    def _build_bpe(self):
        self._bpe_model = BPE(
            self.vocab, self.merges, unk_token=self.unk, continuing_subword_prefix=self.continuing_subword_prefix
        )
        self._bpe = Tokenizer(self._bpe_model)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def get_vocab(self):
        vocab = dict(self.vocab)
        for token, index in self.added_tokens_encoder.items():
            vocab.setdefault(token, index)
        return vocab

    def _tokenize(self, text, **kwargs):
        words = self.word_splitter.split(text)
        if not words:
            return []
        return self._bpe.encode(words, is_pretokenized=True, add_special_tokens=False).tokens

    def _convert_token_to_id(self, token):
        return self.vocab.get(token, self.vocab.get(str(self.unk_token)))

    def _convert_id_to_token(self, index):
        return self.ids_to_tokens.get(index, str(self.unk_token))

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens).replace(" " + self.continuing_subword_prefix, "").strip()

    def save_vocabulary(self, save_directory, filename_prefix=None):
        files = self._bpe_model.save(save_directory, filename_prefix)
        return tuple(files)

    def __getstate__(self):
        state = dict(self.__dict__)
        for unpicklable in ("_bpe", "_bpe_model"):
            state.pop(unpicklable)
        return state

    def __setstate__(self, state):
        self.__dict__ = state
        self._build_bpe()
