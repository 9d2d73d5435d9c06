"""Read CoNLL-2003 NER data (raw files or Hugging Face datasets) into spaCy Docs.

Raw files: 2 or more columns separated by spaces or tabs, the token first and
the NER tag last; blank lines end sentences; a line whose first column is
``-DOCSTART-`` (any number of columns) ends an article. Tags in IOB1, IOB2,
BILUO or IOBES. CRLF line ends, a UTF-8 byte-order mark, runs of blank lines,
a missing final newline and a file that does not begin with ``-DOCSTART-`` are
all accepted. Anything else that is wrong raises ``ConllError`` whose message
starts with ``FILE:LINE:``. Nothing is dropped: the only lines that carry no
Doc content are blank lines and ``-DOCSTART-`` lines, and both are counted.

Middle columns are kept: the first (POS in CoNLL-2003) as ``token.tag_``, the
rest in ``doc.user_data["conll_columns"]`` (one list per column, per token of the
Doc as converted), the first of those (the chunk tag) also as the token extension
``token._.conll_chunk``, which spaCy stores by character offset and so keeps with
its token through ``doc.retokenize()``, ``Span.as_doc(copy_user_data=True)`` and
DocBin (a token the file did not have reads None).
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, Token
from spacy.vocab import Vocab

from ..tags import (
    TagError,
    detect_scheme,
    iob_spans,
    spans_to_tags,
    split_tag,
    strict_spans,
)

DOCSTART = "-DOCSTART-"
EXTRA_COLUMNS_KEY = "conll_columns"
# The order of the Hugging Face `conll2003` ner_tags ClassLabel.
HF_CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
HF_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow"}
_COLUMN_SEP = re.compile(r"[ \t]+")
_TAB_SEP = re.compile(r" *\t[ \t]*")  # tab-separated columns: tokens may hold spaces ("New York")
_LINE_END = re.compile(r"\r\n|\r|\n")  # Unix, Windows, old Mac, and files that mix them
_LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")
SEPARATORS = ("auto", "tab", "space")


class ConllError(ValueError):
    """Bad input. The message starts with ``SOURCE:LINE:``."""


if not Token.has_extension("conll_chunk"):
    Token.set_extension("conll_chunk", default=None)


@dataclass
class Sentence:
    """One sentence of a CoNLL file: its words, tags, middle columns and source line numbers."""

    words: List[str] = field(default_factory=list)
    tags: List[str] = field(default_factory=list)
    columns: List[List[str]] = field(default_factory=list)  # middle columns, per token
    lines: List[int] = field(default_factory=list)  # 1-based source line (or row) of each token


@dataclass
class Article:
    """One article (the lines between two -DOCSTART- lines): its sentences."""

    sentences: List[Sentence] = field(default_factory=list)


@dataclass
class ConllStats:
    """What a conversion read: counts of articles, sentences, tokens and entities, the scheme, the repairs."""

    source: str
    scheme: str = ""
    articles: int = 0
    sentences: int = 0
    tokens: int = 0
    docs: int = 0
    entities: Counter = field(default_factory=Counter)
    repaired_tags: int = 0
    docstart_lines: int = 0
    empty_articles: int = 0

    def to_dict(self) -> Dict[str, Any]:
        """The counts as a JSON-ready dict."""
        return {
            "source": self.source,
            "scheme": self.scheme,
            "articles": self.articles,
            "sentences": self.sentences,
            "tokens": self.tokens,
            "docs": self.docs,
            "entities": sum(self.entities.values()),
            "entities_per_type": dict(sorted(self.entities.items())),
            "repaired_tags": self.repaired_tags,
            "docstart_lines": self.docstart_lines,
            "empty_articles": self.empty_articles,
        }


def _decode_text(data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf8")
    except UnicodeDecodeError as err:
        line = len(_LINE_END_BYTES.findall(data, 0, err.start)) + 1
        bad = data[err.start : err.end]
        raise ConllError(
            f"{source}:{line}: bytes {bad!r} are not valid UTF-8 ({err.reason}); "
            f"convert the file to UTF-8 first (e.g. iconv -f latin1 -t utf8)"
        ) from None


def _separated_by(mode: str, mode_line: int) -> str:
    """How a file's columns are split, for error messages (built only when raising)."""
    how = "tabs" if mode == "tab" else "spaces or tabs"
    return f"{how}, as line {mode_line} shows; set --sep to choose" if mode_line else how


def parse_conll_text(text: str, source: str, sep: str = "auto") -> Tuple[List[Article], ConllStats]:
    """Split CoNLL text into articles and sentences and check every line's
    shape (columns, tag syntax). Tag sequences are checked by `decode_articles`.

    Lines end in LF, CRLF or CR (mixed too). `sep`: "space" splits columns at
    runs of spaces and tabs; "tab" at tabs only, so tokens may hold spaces;
    "auto" takes "tab" when the first token line holds a tab, else "space"."""
    if sep not in SEPARATORS:
        raise ValueError(f"sep must be one of {SEPARATORS}, not {sep!r}")
    stats = ConllStats(source=source)
    mode = None if sep == "auto" else sep
    mode_line = 0
    articles: List[Article] = []
    article = Article()
    sentence = Sentence()
    n_columns = 0
    first_token_line = 0

    def end_sentence() -> None:
        nonlocal sentence
        if sentence.words:
            article.sentences.append(sentence)
            sentence = Sentence()

    def end_article(final: bool = False) -> None:
        nonlocal article
        end_sentence()
        if article.sentences:
            articles.append(article)
        elif stats.docstart_lines and not final:
            stats.empty_articles += 1  # -DOCSTART- followed directly by another
        article = Article()

    for lineno, line in enumerate(_LINE_END.split(text), 1):
        stripped = line.strip(" \t")
        if not stripped:
            end_sentence()
            continue
        if _COLUMN_SEP.split(stripped, 1)[0] == DOCSTART:
            if stats.docstart_lines or article.sentences or sentence.words:
                end_article()
            stats.docstart_lines += 1
            continue
        if mode is None:
            mode, mode_line = ("tab" if "\t" in stripped else "space"), lineno
        columns = _TAB_SEP.split(stripped) if mode == "tab" else _COLUMN_SEP.split(stripped)
        if len(columns) < 2:
            raise ConllError(
                f"{source}:{lineno}: line has 1 column ({stripped!r}); expected the token "
                f"and the NER tag (2 or more columns separated by {_separated_by(mode, mode_line)})"
            )
        if n_columns == 0:
            n_columns, first_token_line = len(columns), lineno
        elif len(columns) != n_columns:
            raise ConllError(
                f"{source}:{lineno}: line has {len(columns)} columns ({stripped!r}, "
                f"separated by {_separated_by(mode, mode_line)}), but "
                f"line {first_token_line} has {n_columns}; every token line needs the same columns"
            )
        tag = columns[-1]
        try:
            split_tag(tag)
        except ValueError as err:
            raise ConllError(f"{source}:{lineno}: {err}") from None
        sentence.words.append(columns[0])
        sentence.tags.append(tag)
        sentence.columns.append(columns[1:-1])
        sentence.lines.append(lineno)
    # A trailing -DOCSTART- with nothing after it opens no article (the CoNLL-2003
    # files end so); any other -DOCSTART- without tokens counts as an empty article.
    end_article(final=True)
    if not articles:
        raise ConllError(f"{source}:1: no tokens found (empty file or only -DOCSTART-/blank lines)")
    return articles, stats


def decode_articles(
    articles: Sequence[Article], stats: ConllStats, scheme: str = "auto"
) -> List[List[List[Tuple[int, int, str]]]]:
    """Decode the entity spans of every sentence: spans[article][sentence] is a
    list of (start, end, label) token offsets. Fills the counts of `stats`."""
    source = stats.source
    marker_line, markers = 0, 0  # first line and number of L-/U-/E-/S- tags
    if scheme == "auto":
        first: Dict[str, int] = {}
        for article in articles:
            for sent in article.sentences:
                for tag, line in zip(sent.tags, sent.lines):
                    prefix = tag[0]
                    if prefix in "LUES":
                        markers += 1
                    if prefix not in first:
                        first[prefix] = line
        marker_line = min((line for p, line in first.items() if p in "LUES"), default=0)
        try:
            scheme = detect_scheme(first)
        except ValueError as err:
            biluo = min(first.get(p, 1 << 62) for p in "LU")
            iobes = min(first.get(p, 1 << 62) for p in "ES")
            raise ConllError(f"{source}:{max(biluo, iobes)}: {err}") from None
    if scheme not in ("IOB", "BILUO", "IOBES"):
        raise ValueError(f"scheme must be auto, IOB, BILUO or IOBES, not {scheme!r}")
    out = []
    errors: List[Tuple[int, str]] = []
    for article in articles:
        article_spans = []
        for sent in article.sentences:
            try:
                if scheme == "IOB":
                    spans, repaired = iob_spans(sent.tags)
                    stats.repaired_tags += repaired
                else:
                    spans = strict_spans(sent.tags, scheme)
            except TagError as err:
                if scheme == "IOB":
                    raise ConllError(f"{source}:{sent.lines[err.index]}: {err}") from None
                errors.append((sent.lines[err.index], str(err)))
                spans = []
            article_spans.append(spans)
            stats.entities.update(label for _, _, label in spans)
        out.append(article_spans)
    if errors:
        line, msg = errors[0]
        if marker_line and len(errors) > markers:
            # more broken sequences than L-/U-/E-/S- tags: an IOB file with stray tags
            bad = next(
                t for a in articles for s_ in a.sentences for t, line in zip(s_.tags, s_.lines) if line == marker_line
            )
            raise ConllError(
                f"{source}:{marker_line}: tag {bad!r} is not an IOB tag, but the file's other tags are IOB "
                f"({len(errors)} sequences break {scheme}, e.g. line {line}: {msg})"
            )
        raise ConllError(f"{source}:{line}: {msg} ({len(errors)} invalid {scheme} sentence(s) in the file)")
    stats.scheme = scheme if scheme != "IOB" else ("IOB1" if stats.repaired_tags else "IOB2")
    stats.articles = len(articles)
    stats.sentences = sum(len(a.sentences) for a in articles)
    stats.tokens = sum(len(s.words) for a in articles for s in a.sentences)
    return out


def _group(article: Article, spans, docs: Union[str, int]) -> Iterator[Tuple[List[Sentence], list]]:
    if docs == "article":
        yield article.sentences, spans
        return
    size = 1 if docs == "sentence" else int(docs)
    for i in range(0, len(article.sentences), size):
        yield article.sentences[i : i + size], spans[i : i + size]


def make_doc(vocab: Vocab, sentences: Sequence[Sentence], spans: Sequence[list]) -> Doc:
    """One Doc from sentences and their spans: sentence starts, entities (with
    O on every other token), POS in token.tag_, further columns in user_data."""
    words: List[str] = []
    sent_starts: List[bool] = []
    ents: List[str] = []
    columns: List[List[str]] = []
    for sent, sent_spans in zip(sentences, spans):
        words.extend(sent.words)
        sent_starts.append(True)
        sent_starts.extend([False] * (len(sent.words) - 1))
        ents.extend(spans_to_tags(sent_spans, len(sent.words), "BIO"))
        columns.extend(sent.columns)
    n_extra = len(columns[0]) if columns else 0
    tags = [c[0] for c in columns] if n_extra >= 1 else None
    doc = Doc(vocab, words=words, sent_starts=sent_starts, ents=ents, tags=tags)
    if n_extra >= 2:
        doc.user_data[EXTRA_COLUMNS_KEY] = [[c[j] for c in columns] for j in range(1, n_extra)]
        for token, chunk in zip(doc, doc.user_data[EXTRA_COLUMNS_KEY][0]):
            token._.conll_chunk = chunk
    return doc


def docs_from_articles(
    vocab: Vocab, articles: Sequence[Article], spans, stats: ConllStats, docs: Union[str, int] = "article"
) -> Iterator[Doc]:
    """Docs of decoded articles (`decode_articles`' spans), counted in `stats.docs`.

    docs (Union[str, int]): "article" (one Doc per article), "sentence", or N (N sentences per Doc).
    """
    if docs not in ("article", "sentence") and int(docs) < 1:
        raise ValueError(f"docs must be 'article', 'sentence' or a positive integer, not {docs!r}")
    for article, article_spans in zip(articles, spans):
        for sents, sents_spans in _group(article, article_spans, docs):
            stats.docs += 1
            yield make_doc(vocab, sents, sents_spans)


def read_conll_file(
    path: Union[str, Path], scheme: str = "auto", sep: str = "auto"
) -> Tuple[List[Article], list, ConllStats]:
    """Parse and decode a raw CoNLL file. Returns (articles, spans, stats)."""
    path = Path(path)
    text = _decode_text(path.read_bytes(), str(path))
    articles, stats = parse_conll_text(text, str(path), sep)
    spans = decode_articles(articles, stats, scheme)
    return articles, spans, stats


# --- Hugging Face datasets -------------------------------------------------------------


def _label_names(dataset, column: str) -> Optional[List[str]]:
    feature = dataset.features.get(column) if dataset.features else None
    inner = getattr(feature, "feature", None)
    names = getattr(inner, "names", None)
    return list(names) if names else None


def load_hf_dataset(src: str, split: str = "train"):
    """`hf:NAME` loads from the Hub (or the local HF cache); a .parquet, .jsonl/.json
    or .arrow file loads locally."""
    import datasets

    if src.startswith("hf:"):
        return datasets.load_dataset(src[3:], split=split)
    suffix = Path(src).suffix.lower()
    if suffix not in HF_SUFFIXES:
        raise ConllError(f"{src}:1: unknown dataset file type {suffix!r}; expected {sorted(HF_SUFFIXES)}")
    if not Path(src).exists():
        raise ConllError(f"{src}:1: file not found")
    if suffix == ".arrow":
        return datasets.Dataset.from_file(src)
    loaded = datasets.load_dataset(HF_SUFFIXES[suffix], data_files={split: src}, split=split)
    return loaded


def parse_hf_dataset(dataset, source: str) -> Tuple[List[Article], ConllStats]:
    """Rows are sentences (`tokens`, `ner_tags`, optionally `pos_tags`,
    `chunk_tags`); a row whose tokens are just ["-DOCSTART-"] starts an article.
    Rows are numbered from 1 in error messages (= the line of a JSON-lines file)."""
    for column in ("tokens", "ner_tags"):
        if column not in dataset.column_names:
            raise ConllError(f"{source}:1: dataset has no {column!r} column (columns: {dataset.column_names})")
    ner_names = _label_names(dataset, "ner_tags") or list(HF_CONLL2003_TAGS)
    extra = [c for c in ("pos_tags", "chunk_tags") if c in dataset.column_names]
    extra_names = {c: _label_names(dataset, c) for c in extra}
    stats = ConllStats(source=source)
    articles: List[Article] = []
    article = Article()
    for row_i, row in enumerate(dataset, 1):
        tokens, raw_tags = row["tokens"], row["ner_tags"]
        if tokens and tokens[0] == DOCSTART and len(tokens) == 1:
            stats.docstart_lines += 1
            if article.sentences:
                articles.append(article)
                article = Article()
            elif stats.docstart_lines > 1:
                stats.empty_articles += 1
            continue
        if len(tokens) != len(raw_tags):
            raise ConllError(f"{source}:{row_i}: {len(tokens)} tokens but {len(raw_tags)} ner_tags")
        if not tokens:  # an empty row is an empty sentence: it holds nothing
            continue
        tags = []
        for tag in raw_tags:
            if isinstance(tag, str):
                name = tag
            elif isinstance(tag, int) and 0 <= tag < len(ner_names):
                name = ner_names[tag]
            else:
                raise ConllError(f"{source}:{row_i}: ner tag {tag!r} is not an index into {ner_names}")
            try:
                split_tag(name)
            except ValueError as err:
                raise ConllError(f"{source}:{row_i}: {err}") from None
            tags.append(name)
        columns: List[List[str]] = [[] for _ in tokens]
        for c in extra:
            values = row[c]
            names = extra_names[c]
            for j, value in enumerate(values):
                columns[j].append(names[value] if names and isinstance(value, int) else str(value))
        for token in tokens:
            if not token or _COLUMN_SEP.search(token):
                raise ConllError(f"{source}:{row_i}: token {token!r} is empty or contains whitespace")
        article.sentences.append(Sentence(list(tokens), tags, columns, [row_i] * len(tokens)))
    if article.sentences:
        articles.append(article)
    if not articles:
        raise ConllError(f"{source}:1: no tokens found")
    return articles, stats


def read_source(
    src: str, split: str = "train", scheme: str = "auto", docs: Union[str, int] = "article", sep: str = "auto"
) -> Tuple[List[Article], list, ConllStats, Union[str, int]]:
    """Read a raw CoNLL file or a HF dataset (`hf:NAME` or a local .parquet /
    .jsonl / .arrow file). Returns (articles, spans, stats, docs) where `docs`
    is the grouping to use.

    Data without -DOCSTART- rows (tweets, most corpora other than CoNLL-2003, and
    the Hub's copy of CoNLL-2003, which drops them) has no article boundaries, so
    'article' becomes one Doc per sentence there (`stats.articles` 0), not one Doc
    of the whole file: which sentences belong together is unknown, and a group of
    unrelated sentences would let document-level features (DocumentContext) read
    across texts that have nothing to do with each other. `docs=N` groups N
    sentences per Doc where the user knows that consecutive sentences belong together.
    """
    if src.startswith("hf:") or Path(src).suffix.lower() in HF_SUFFIXES:
        dataset = load_hf_dataset(src, split)
        articles, stats = parse_hf_dataset(dataset, f"{src}[{split}]")
    else:
        path = Path(src)
        text = _decode_text(path.read_bytes(), str(path))
        articles, stats = parse_conll_text(text, str(path), sep)
    if stats.docstart_lines == 0 and docs in ("article", "sentence"):
        articles = [Article([s]) for a in articles for s in a.sentences]
        docs = "sentence"
    spans = decode_articles(articles, stats, scheme)
    if stats.docstart_lines == 0:
        stats.articles = 0  # the data has no article boundaries
    return articles, spans, stats, docs


def gold_token_docs(vocab: Vocab, refs: Sequence[Doc], sentences: bool = True) -> List[Doc]:
    """Docs with the gold Docs' words and spaces and (``sentences``) their
    sentence starts, nothing else: the input of the gold-token evaluation (the
    CoNLL convention: systems get sentence-split input), for scores and error pages."""
    out = []
    for r in refs:
        starts = [t.is_sent_start for t in r] if sentences and r.has_annotation("SENT_START") else None
        out.append(Doc(vocab, words=[t.text for t in r], spaces=[bool(t.whitespace_) for t in r], sent_starts=starts))
    return out
