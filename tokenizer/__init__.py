"""Japanese tokenizer training: MeCab word splitting, then WordPiece or BPE."""
