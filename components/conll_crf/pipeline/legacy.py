"""Older versions of the registered names, kept so that configs and packaged
pipelines that name them behave as they did (the spacy-legacy pattern). Each is
a thin shim over the current builder in architectures.py or loggers.py; new
configs use the current versions: `conll_crf.BiLSTMCRF.v3`,
`conll_crf.HashCharEmbed.v5`, `conll_crf.JSONLLogger.v2`."""

from typing import Callable, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d

from .architectures import bilstm_crf, build_hash_char_embed_v5, hash_char_embed
from .loggers import jsonl_logger


@registry.architectures("conll_crf.BiLSTMCRF.v2")
def build_bilstm_crf_v2(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    depth: int = 1,
    dropout: float = 0.2,
    learn_rate_scale: float = 1.0,
    mixed_precision: bool = False,
    nO: Optional[int] = None,
) -> Model:
    """`conll_crf.BiLSTMCRF.v3` without the `skip` option (skip = false)."""
    return bilstm_crf(
        tok2vec,
        hidden_width=hidden_width,
        depth=depth,
        dropout=dropout,
        learn_rate_scale=learn_rate_scale,
        mixed_precision=mixed_precision,
        nO=nO,
    )


@registry.architectures("conll_crf.BiLSTMCRF.v1")
def build_bilstm_crf_v1(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    depth: int = 1,
    dropout: float = 0.2,
    mixed_precision: bool = False,
    nO: Optional[int] = None,
) -> Model:
    """The first version: only whitespace tokens are constrained (to O, in
    decoding), and spaCy's parameter averages do not reach the torch head."""
    return bilstm_crf(
        tok2vec,
        hidden_width=hidden_width,
        depth=depth,
        dropout=dropout,
        mixed_precision=mixed_precision,
        nO=nO,
        doc_constraints=False,
        average_head=False,
    )


@registry.architectures("conll_crf.HashCharEmbed.v4")
def build_hash_char_embed_v4(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 64,
    char_rows: int = 5000,
    nM: int = 64,
    nC: int = 8,
    include_static_vectors: bool = False,
    word_dropout: float = 0.0,
    word_table: Optional[str] = None,
    word_table_attr: str = "LOWER",
) -> Model[List[Doc], List[Floats2d]]:
    """`conll_crf.HashCharEmbed.v5` without known words (known_words_min_count = 0)."""
    return build_hash_char_embed_v5(
        width,
        attrs,
        rows,
        char_width,
        char_rows,
        nM,
        nC,
        include_static_vectors,
        word_dropout,
        word_table,
        word_table_attr,
        known_words_min_count=0,
    )


@registry.architectures("conll_crf.HashCharEmbed.v3")
def build_hash_char_embed_v3(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 64,
    char_rows: int = 5000,
    nM: int = 64,
    nC: int = 8,
    include_static_vectors: bool = False,
    word_dropout: float = 0.0,
) -> Model[List[Doc], List[Floats2d]]:
    """`conll_crf.HashCharEmbed.v5` without a word table (word_table = null) or known words."""
    return build_hash_char_embed_v5(
        width, attrs, rows, char_width, char_rows, nM, nC, include_static_vectors, word_dropout, word_table=None
    )


@registry.architectures("conll_crf.HashCharEmbed.v2")
def build_hash_char_embed_v2(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 64,
    char_rows: int = 5000,
    nM: int = 64,
    nC: int = 8,
    include_static_vectors: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """`conll_crf.HashCharEmbed.v3` without word dropout."""
    return hash_char_embed(
        width=width,
        attrs=attrs,
        rows=rows,
        char_width=char_width,
        char_rows=char_rows,
        nM=nM,
        nC=nC,
        include_static_vectors=include_static_vectors,
    )


@registry.architectures("conll_crf.HashCharEmbed.v1")
def build_hash_char_embed_v1(
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    char_width: int = 64,
    char_rows: int = 5000,
    nM: int = 64,
    nC: int = 8,
) -> Model[List[Doc], List[Floats2d]]:
    """`conll_crf.HashCharEmbed.v3` without static vectors or word dropout."""
    return hash_char_embed(
        width=width,
        attrs=attrs,
        rows=rows,
        char_width=char_width,
        char_rows=char_rows,
        nM=nM,
        nC=nC,
    )


@registry.loggers("conll_crf.JSONLLogger.v1")
def jsonl_logger_v1(path: str, progress_bar: bool = False) -> Callable:
    """`conll_crf.JSONLLogger.v2` with `path` required."""
    return jsonl_logger(path, progress_bar)
