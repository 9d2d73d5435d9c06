"""What `conll-crf review` ranks: annotated Docs from texts, from a corpus, or from `conll-crf annotate`'s output.

- a JSONL file of records with a text (and an id): annotated here, in one process;
- a `.spacy` corpus (DocBin): its Docs' texts, annotated here (ids: the Docs' positions);
- the output folder of `conll-crf annotate --review` (one process or a Ray cluster did the
  annotating): its rows hold the text, the entities and the other scored candidates, so
  the Docs are rebuilt with the pipeline's tokenizer, and nothing is annotated again.

Each yields `(id, Doc)` pairs whose `doc.ents` and scored SpanGroup `doc.spans[spans_key]`
are what `conll_crf.review` and `conll_crf.tool_formats` read.
"""

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from spacy.tokens import Doc, DocBin, SpanGroup

from .annotate.shards import read_rows


class ReviewInputError(ValueError):
    """Input `conll-crf review` cannot rank; the message names the file and the record."""


def read_jsonl_texts(path, text_field: str = "text", id_field: str = "id") -> List[Dict[str, Any]]:
    """Records {"id", "text"} of a JSONL file; a line that is not a JSON object with a string text raises
    ReviewInputError naming the file and line. Blank lines are skipped; a missing id becomes "FILE:LINE"."""
    out = []
    with open(path, encoding="utf8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReviewInputError(f"{path}:{lineno}: not valid JSON at column {err.colno}: {err.msg}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                raise ReviewInputError(f"{path}:{lineno}: not a JSON object with a string {text_field!r}")
            out.append({"id": obj.get(id_field, f"{path}:{lineno}"), "text": obj[text_field]})
    return out


def _annotated_rows(folder: Path) -> Iterator[Dict[str, Any]]:
    """The entity rows of an annotate job's output folder, shard by shard, in input order."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf8"))
    if not manifest.get("identity", {}).get("arguments", {}).get("review"):
        raise ReviewInputError(
            f"{folder}: annotated without --review, so its rows hold neither the texts nor the candidates; "
            "run `conll-crf annotate ... --review` (a new output folder)"
        )
    if manifest.get("state") != "complete":
        raise ReviewInputError(f"{folder}: the job is not complete; run the same `conll-crf annotate` again first")
    for shard in sorted(manifest["shards"], key=lambda s: s["index"]):
        yield from read_rows(folder / shard["file"])


def doc_from_row(nlp, row: Dict[str, Any], spans_key: str, where: str) -> Doc:
    """The Doc of an annotate --review row: its text tokenized by `nlp`, its entities, and the scored group
    of the entities and the candidates. An offset off the tokens, or an entity without a score, raises."""
    doc = nlp.make_doc(row["text"])
    spans, scores = [], []
    for kind in ("entities", "candidates"):
        for item in row[kind] or []:
            span = doc.char_span(item["start_char"], item["end_char"], label=item["label"])
            if span is None:
                raise ReviewInputError(
                    f"{where}: {kind[:-1]} {item['start_char']}-{item['end_char']} ({item['text']!r}) does not "
                    "fall on token boundaries of the pipeline's tokenizer: review with the pipeline that annotated"
                )
            if item["score"] is None:
                raise ReviewInputError(f"{where}: entity {item['text']!r} has no probability to rank by")
            spans.append(span)
            scores.append(float(item["score"]))
    n_ents = len(row["entities"] or [])
    doc.ents = spans[:n_ents]
    doc.spans[spans_key] = SpanGroup(doc, name=spans_key, spans=spans, attrs={"scores": scores})
    return doc


def review_docs(
    nlp, source: Path, text_field: str = "text", id_field: str = "id", spans_key: str = "crf_ner"
) -> Iterator[Tuple[Any, Doc]]:
    """(id, annotated Doc) pairs from `source`: a JSONL file of texts, a `.spacy` corpus, or an
    `annotate --review` output folder (see the module's docstring)."""
    source = Path(source)
    if source.is_dir():
        if not (source / "manifest.json").exists():
            raise ReviewInputError(f"{source}: a folder without manifest.json is not a `conll-crf annotate` output")
        for row in _annotated_rows(source):
            yield row["id"], doc_from_row(nlp, row, spans_key, f"{row['source']}:{row['position']}")
        return
    if source.suffix == ".spacy":
        texts = [{"id": i, "text": d.text} for i, d in enumerate(DocBin().from_disk(source).get_docs(nlp.vocab))]
    else:
        texts = read_jsonl_texts(source, text_field, id_field)
    for record, doc in zip(texts, nlp.pipe((r["text"] for r in texts), batch_size=32)):
        yield record["id"], doc
