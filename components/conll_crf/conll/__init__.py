"""CoNLL data: the reader of CoNLL-style NER files and Hugging Face datasets
(reader.py) and the CoNLL shared tasks' scorer, conlleval (conlleval.py)."""

from .reader import (
    Article,
    ConllError,
    ConllStats,
    Sentence,
    decode_articles,
    docs_from_articles,
    gold_token_docs,
    load_hf_dataset,
    make_doc,
    parse_conll_text,
    parse_hf_dataset,
    read_conll_file,
    read_source,
)

__all__ = [
    "Article",
    "ConllError",
    "ConllStats",
    "Sentence",
    "decode_articles",
    "docs_from_articles",
    "gold_token_docs",
    "load_hf_dataset",
    "make_doc",
    "parse_conll_text",
    "parse_hf_dataset",
    "read_conll_file",
    "read_source",
]
