"""Entities of records, by any spaCy pipeline: the unit of work of `conll-crf annotate`.

`Annotator` loads a pipeline once (a package name or a folder; `code` files are
imported first, as `spacy ... --code` does, for pipelines with custom
components), pins the process's threads, and turns records into output rows:
one per record, `{"id", "source", "position", "entities": [{"start_char",
"end_char", "label", "text", "score"}]}`. `score` is the entity's probability
where the pipeline gives one: a SpanGroup `doc.spans[scores_key]` with
`attrs["scores"]` (spaCy's spancat convention, which `crf_ner` follows) that holds
the same span with the same label; otherwise None. With `review`, rows also hold
the record's `text` and its `candidates`: the other scored spans of that group
(same keys), the alternatives a review queue needs (`conll-crf review` reads them).

Documents longer than `max_chars` (default: the pipeline's `nlp.max_length`) are
annotated in pieces of at most `max_chars` characters, cut at the last paragraph
break, else line break, else sentence end (". "), else space before the limit
(a hard cut only for a run without any of them); entity offsets refer to the
whole text, and no entity spans a cut. The pieces of all records flow through
the same batches, and a batch holds at most `batch_size` texts and (unless one
text alone is longer) `batch_chars` characters, so memory stays bounded by the
batch whatever a record's size. Each `nlp.pipe` batch runs inside
`nlp.memory_zone()`, so the string store does not grow over a long job.
"""

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ..process import pin_threads
from ..process import retain_freed_memory as retain_memory
from .records import Record, RecordError

logger = logging.getLogger("conll_crf.annotate")

_CUTS = ("\n\n", "\n", ". ", " ")


def split_text(text: str, max_chars: int) -> List[Tuple[int, str]]:
    """(offset, piece) pairs covering `text`, each piece at most `max_chars` long."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        window = text[start : start + max_chars]
        cut = max_chars
        for sep in _CUTS:
            k = window.rfind(sep)
            if k > 0:
                cut = k + len(sep)
                break
        pieces.append((start, text[start : start + cut]))
        start += cut
    pieces.append((start, text[start:]))
    return pieces


def _pipeline_path(model: str) -> Optional[Path]:
    """The folder of a pipeline given by folder or installed package name, found
    without importing anything; None if there is none."""
    import importlib.util

    path = Path(model)
    if path.exists():
        return path
    try:
        spec = importlib.util.find_spec(model)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def model_meta(model: str) -> Dict:
    """meta.json of a pipeline folder or installed package, read without importing
    spaCy or the package (the Ray driver never loads the pipeline); {} if none."""
    return _read_meta(_pipeline_path(model))


def _read_meta(path: Optional[Path]) -> Dict:
    meta_path = path / "meta.json" if path is not None else None
    if meta_path is None or not meta_path.exists():
        return {}
    return dict(json.loads(meta_path.read_text(encoding="utf8")))


def pipeline_components(model: str) -> Optional[Dict[str, Dict]]:
    """The component blocks of a pipeline's config.cfg (a folder, or the data
    folder of an installed package as spaCy's `load_model_from_init_py` finds
    it), read without loading the pipeline; None when it cannot be read."""
    from spacy.util import load_config

    path = _pipeline_path(model)
    if path is None:
        return None
    config_path = path / "config.cfg"
    if not config_path.exists():  # a package: its data folder is named after its meta
        meta = _read_meta(path)
        config_path = path / f"{meta.get('lang')}_{meta.get('name')}-{meta.get('version')}" / "config.cfg"
        if not config_path.exists():
            return None
    try:
        return dict(load_config(config_path, interpolate=False).get("components", {}))
    except Exception:  # noqa: BLE001 (spaCy reports a bad config when it loads it)
        return None


def factories_of(components: Optional[Dict[str, Dict]]) -> Optional[Set[str]]:
    """The factory of every component block; None when that is not known for every component."""
    if components is None:
        return None
    factories = set()
    for block in components.values():
        factory = block.get("factory") if isinstance(block, dict) else None
        if not factory:  # a component without a factory (sourced, or an odd config): do not guess
            return None
        factories.add(str(factory))
    return factories


def pipeline_factories(model: str) -> Optional[Set[str]]:
    """The factory of every component in a pipeline's config.cfg, read without
    loading the pipeline; None when that is not known for every component."""
    return factories_of(pipeline_components(model))


@contextmanager
def entry_point_factories_limited_to(factories: Optional[Set[str]]) -> Iterator[None]:
    """While loading one pipeline, import only the `spacy_factories` entry points
    it names. `Language()` imports every package that registers one (its
    entry-point scan), so loading a CPU pipeline in an environment with
    spacy-transformers imports transformers, most of a Ray actor's start-up
    (docs/annotate.md). The factories the config names are imported as before; a factory the
    config does not name is never used by it. With `factories` None, or a spaCy
    without the scan's registry, the full scan runs."""
    from spacy import util

    registry = getattr(util.registry, "_entry_point_factories", None)
    if factories is None or registry is None or not hasattr(registry, "_get_entry_points"):
        yield
        return

    def get_all() -> Dict:
        return {ep.name: ep.load() for ep in registry._get_entry_points() if ep.name in factories}

    registry.get_all = get_all  # an instance attribute: shadows the method for this load only
    try:
        yield
    finally:
        del registry.get_all


def batches(pieces: Sequence[Tuple[int, int, str]], size: int, chars: int) -> Iterator[Tuple[int, List]]:
    """(index of the first piece, batch) for consecutive batches of at most `size`
    pieces and `chars` characters (0: no limit); a piece longer than `chars` is a batch alone."""
    start = 0
    while start < len(pieces):
        stop, total = start, 0
        while stop < len(pieces) and stop - start < size:
            n = len(pieces[stop][2])
            if chars and stop > start and total + n > chars:
                break
            total += n
            stop += 1
        yield start, list(pieces[start:stop])
        start = stop


class Annotator:
    """A loaded pipeline that turns records into output rows (see the module's doc).

    model (str): a pipeline package name or folder.
    code (Sequence[str]): Python files to import first (custom components).
    threads (int): this process's compute threads (`process.pin_threads`).
    gpu_id (int): the GPU to use (-1: CPU).
    batch_size (int): documents per `nlp.pipe` batch.
    batch_chars (int): at most this many characters per batch, unless one text is longer (0: no limit).
    max_chars (int): longer texts are annotated in pieces (0: the pipeline's nlp.max_length).
    scores_key (str): the `doc.spans` key whose attrs["scores"] give entity probabilities.
    retain_freed_memory (bool): keep freed memory for reuse in this process
        (`process.retain_freed_memory`); False also overrides any crf_ner whose config turns it on.
    review (bool): rows also hold the text and the scored candidates that are not entities."""

    def __init__(
        self,
        model: str,
        *,
        code: Sequence[str] = (),
        threads: int = 1,
        gpu_id: int = -1,
        batch_size: int = 64,
        batch_chars: int = 150_000,
        max_chars: int = 0,
        scores_key: str = "crf_ner",
        retain_freed_memory: bool = True,
        review: bool = False,
    ) -> None:
        pin_threads(threads)
        import spacy
        from spacy.util import import_file

        for i, path in enumerate(code):
            import_file(f"conll_crf_user_code_{i}", path)
        if gpu_id >= 0:
            spacy.require_gpu(gpu_id)
        components = pipeline_components(model)
        overrides: Dict = {}
        if retain_freed_memory:  # the annotator owns its process: it may change process-wide settings
            retain_memory()
        else:  # and a pipeline whose config turns it on for its crf_ner is told not to
            names = [n for n, b in (components or {}).items() if isinstance(b, dict) and b.get("factory") == "crf_ner"]
            overrides = {"components": {n: {"retain_freed_memory": False} for n in names}} if names else {}
            if components is None:
                logger.warning(
                    "%s: its config could not be read, so its crf_ner components (if any) keep their "
                    "retain_freed_memory setting",
                    model,
                )
        with entry_point_factories_limited_to(factories_of(components)):
            self.nlp = spacy.load(model, config=overrides)
        self.batch_size = batch_size
        self.batch_chars = batch_chars
        self.max_chars = max_chars or self.nlp.max_length
        if self.max_chars > self.nlp.max_length:
            self.nlp.max_length = self.max_chars
        self.scores_key = scores_key
        self.review = review

    def _scored(self, doc) -> List[Tuple[object, float]]:
        """(span, probability) of the doc's scored group `doc.spans[scores_key]` (empty without one)."""
        group = doc.spans.get(self.scores_key)
        if group is None or "scores" not in group.attrs:
            return []
        return [(span, float(score)) for span, score in zip(group, group.attrs["scores"])]

    @staticmethod
    def _span_row(span, offset: int, score: Optional[float]) -> Dict:
        return {
            "start_char": span.start_char + offset,
            "end_char": span.end_char + offset,
            "label": span.label_,
            "text": span.text,
            "score": score,
        }

    def entities(self, doc, offset: int = 0) -> List[Dict]:
        """The output rows' entity dicts of `doc`, character offsets shifted by `offset`."""
        scores = {(span.start, span.end, span.label_): score for span, score in self._scored(doc)}
        return [self._span_row(ent, offset, scores.get((ent.start, ent.end, ent.label_))) for ent in doc.ents]

    def candidates(self, doc, offset: int = 0) -> List[Dict]:
        """The scored spans of `doc.spans[scores_key]` that are not entities, as the entities' dicts."""
        ents = {(e.start, e.end, e.label_) for e in doc.ents}
        return [
            self._span_row(span, offset, score)
            for span, score in self._scored(doc)
            if (span.start, span.end, span.label_) not in ents
        ]

    def _run(self, batch: List[Tuple[int, int, str]], rows: List[Dict]) -> int:
        """Annotate (record index, offset, text) pieces into `rows`, all or none of
        them (a batch that raises adds nothing); returns the number of tokens."""
        found = []
        n_words = 0
        with self.nlp.memory_zone():
            for (i, off, _), doc in zip(batch, self.nlp.pipe([p[2] for p in batch], batch_size=self.batch_size)):
                found.append((i, self.entities(doc, off), self.candidates(doc, off) if self.review else None))
                n_words += len(doc)
        for i, ents, cands in found:
            rows[i]["entities"].extend(ents)
            if cands is not None:
                rows[i]["candidates"].extend(cands)
        return n_words

    def annotate(
        self, records: Iterable[Record], progress: Optional[Callable[[int, int], None]] = None
    ) -> Tuple[List[Dict], List[RecordError], int]:
        """Rows of the records the pipeline annotated (in order), error rows of
        those it raised on, and the number of tokens annotated. A batch that
        raises is redone one piece at a time, so one bad document costs only its
        own row. `progress(n_docs, n_words)` is called after each batch."""
        records = list(records)
        pieces: List[Tuple[int, int, str]] = []  # (record index, char offset, text)
        for i, rec in enumerate(records):
            pieces.extend((i, off, piece) for off, piece in split_text(rec.text, self.max_chars))
        rows = [{"id": r.id, "source": r.source, "position": r.position, "entities": []} for r in records]
        if self.review:
            for row, rec in zip(rows, records):
                row.update({"text": rec.text, "candidates": []})
        failed: Dict[int, str] = {}
        total_words = 0
        for b, batch in batches(pieces, self.batch_size, self.batch_chars):
            try:
                n_words = self._run(batch, rows)
            except Exception:  # noqa: BLE001 (any component's error: find the document, keep the rest)
                n_words = 0
                for piece in batch:
                    if piece[0] in failed:
                        continue
                    try:
                        n_words += self._run([piece], rows)
                    except Exception as err:  # noqa: BLE001
                        failed[piece[0]] = f"pipeline error: {type(err).__name__}: {err}"[:1000]
                        logger.warning(
                            "%s:%s: %s", records[piece[0]].source, records[piece[0]].position, failed[piece[0]]
                        )
            total_words += n_words
            if progress is not None:
                ends = sum(
                    1 for k in range(b, b + len(batch)) if k + 1 == len(pieces) or pieces[k + 1][0] != pieces[k][0]
                )
                progress(ends, n_words)
        errors = [
            RecordError(records[i].id, records[i].source, records[i].position, reason)
            for i, reason in sorted(failed.items())
        ]
        return [row for i, row in enumerate(rows) if i not in failed], errors, total_words
