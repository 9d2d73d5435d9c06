"""Corrections from annotation tools back into training data: Label Studio, Prodigy and doccano exports -> DocBin.

    conll-crf corrections EXPORT --format label-studio|prodigy|doccano --output corrections.spacy [--lang en]

Each reviewed record becomes a Doc of the pipeline's tokenization of its text,
with the reviewer's entities aligned to tokens by character offsets. What a
reviewer saw becomes gold; what nobody looked at stays *missing*, which crf_ner
marginalises over in training instead of learning "no entity" there:

- Label Studio (JSON export, a list of tasks): the first annotation that was
  not cancelled; the whole text was reviewed. Tasks without one are skipped
  and counted;
- Prodigy (JSONL): `answer` "accept" with `spans`; a manual task (tokens given,
  `_view_id` "ner_manual" or no view) is a reviewed whole text, a binary task
  (`_view_id` "ner") only its accepted span: the rest of that text stays
  missing. "reject" and "ignore" answers are skipped and counted (a rejected
  binary span says only what the entity is not, which a Doc cannot hold);
- doccano (JSONL): `label` as [start, end, label] (or `entities` with
  start_offset/end_offset/label); the whole text was reviewed.

An entity whose offsets are out of the text or do not fall on token boundaries
of the tokenization is an error naming the file, the record and the span; so
are missing fields, overlapping entities, a label the model does not know (with
--model; `--add-labels` takes it as a new label) and a record in another tool's
form (a file given with the wrong --format). Nothing is written unless every
record is read.
"""

import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from spacy.tokens import Doc, DocBin

FORMATS = ("label-studio", "prodigy", "doccano")

Entity = Tuple[int, int, str]


class CorrectionsError(ValueError):
    """A record of an export that cannot be read: names the file, the record and what is wrong."""


def _records(path: Path, fmt: str) -> Iterator[Tuple[str, dict]]:
    """(where, record) pairs: "FILE:LINE" for JSONL, "FILE[task N]" for a Label Studio JSON list."""
    if fmt == "label-studio":
        try:
            tasks = json.loads(path.read_text(encoding="utf8"))
        except json.JSONDecodeError as err:
            raise CorrectionsError(
                f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from None
        if not isinstance(tasks, list):
            raise CorrectionsError(
                f"{path}: a Label Studio export is a JSON list of tasks, not a {type(tasks).__name__}"
            )
        for i, task in enumerate(tasks):
            yield f"{path}[task {i}]", task
        return
    with path.open(encoding="utf8") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1 and line.lstrip().startswith("["):
                raise CorrectionsError(
                    f"{path}:1: a JSON list, as Label Studio exports; {fmt} exports are JSON lines (--format?)"
                )
            if line.strip():
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorrectionsError(
                        f"{path}:{lineno}: not valid JSON at column {err.colno}: {err.msg}"
                    ) from None


def _other_format(record, fmt: str) -> Optional[str]:
    """The tool whose format `record` has, where it is plainly not `fmt`'s (a file given with the wrong --format)."""
    if not isinstance(record, dict):
        return None
    if fmt != "label-studio" and "data" in record and ("annotations" in record or "predictions" in record):
        return "label-studio"
    if fmt != "prodigy" and "spans" in record and "label" not in record and "entities" not in record:
        return "prodigy"
    if fmt != "doccano" and ("label" in record or "entities" in record) and "spans" not in record:
        return "doccano"
    return None


def _need(obj, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
        raise CorrectionsError(f"{where}: no {key!r} field of type {getattr(kind, '__name__', kind)}")
    return obj[key]


def _label_studio(task: dict, where: str) -> Optional[Tuple[str, List[Entity], bool]]:
    text = _need(_need(task, "data", dict, where), "text", str, where)
    done = [a for a in task.get("annotations", []) if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    ents = []
    for r in _need(done[0], "result", list, where):
        if r.get("type") != "labels":
            continue
        value = _need(r, "value", dict, where)
        start, end = _need(value, "start", int, where), _need(value, "end", int, where)
        for label in _need(value, "labels", list, where):
            ents.append((start, end, str(label)))
    return text, ents, True


def _prodigy(task: dict, where: str) -> Optional[Tuple[str, List[Entity], bool]]:
    text = _need(task, "text", str, where)
    if task.get("answer", "accept") != "accept":
        return None
    spans = task.get("spans", [])
    ents = [(_need(s, "start", int, where), _need(s, "end", int, where), _need(s, "label", str, where)) for s in spans]
    whole = task.get("_view_id") in (None, "ner_manual", "spans_manual") and "tokens" in task
    return text, ents, whole


def _doccano(task: dict, where: str) -> Optional[Tuple[str, List[Entity], bool]]:
    text = _need(task, "text", str, where)
    if "label" in task:
        items = _need(task, "label", list, where)
        bad = [x for x in items if not (isinstance(x, list) and len(x) == 3)]
        if bad:
            raise CorrectionsError(f"{where}: 'label' items are [start, end, label], not {bad[0]!r}")
        return text, [(int(s), int(e), str(lab)) for s, e, lab in items], True
    items = _need(task, "entities", list, where)
    keys = ("start_offset", "end_offset", "label")
    return text, [tuple(_need(x, k, (int, str), where) for k in keys) for x in items], True


READERS = {"label-studio": _label_studio, "prodigy": _prodigy, "doccano": _doccano}


def read_corrections(path, fmt: str, nlp, labels=None, add_labels: bool = False) -> Tuple[List[Doc], Dict[str, int]]:
    """The export's reviewed records as Docs (gold entities; missing where nobody looked) and counts.
    `labels`: the labels the model knows; an entity with another label is an error unless `add_labels`
    (then counted in `counts["new_labels"]`)."""
    if fmt not in READERS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    path = Path(path)
    docs, counts = [], {"records": 0, "docs": 0, "skipped": 0, "partial": 0, "entities": 0}
    new_labels: Dict[str, int] = {}
    for where, record in _records(path, fmt):
        counts["records"] += 1
        other = _other_format(record, fmt)
        if other is not None:
            raise CorrectionsError(f"{where}: this record has {other}'s form, not {fmt}'s (--format {other}?)")
        read = READERS[fmt](record, where)
        if read is None:
            counts["skipped"] += 1
            continue
        text, ents, whole = read
        doc = nlp.make_doc(text)
        spans = []
        for start, end, label in sorted(ents):
            if not 0 <= start < end <= len(text):
                raise CorrectionsError(
                    f"{where}: the entity ({label}, characters {start}-{end}) is out of the text's range 0-{len(text)}"
                )
            if labels is not None and label not in labels:
                if not add_labels:
                    raise CorrectionsError(
                        f"{where}: label {label!r} is not one the model knows ({', '.join(sorted(labels))}); "
                        "--add-labels trains it as a new label"
                    )
                new_labels[label] = new_labels.get(label, 0) + 1
            span = doc.char_span(start, end, label=label)
            if span is None:
                raise CorrectionsError(
                    f"{where}: the entity {text[start:end]!r} ({label}, characters {start}-{end}) does not fall on "
                    "token boundaries of the pipeline's tokenization"
                )
            if spans and span.start < spans[-1].end:
                raise CorrectionsError(f"{where}: entities {spans[-1].text!r} and {span.text!r} overlap")
            spans.append(span)
        doc.set_ents(spans, default="outside" if whole else "missing")
        counts["partial"] += not whole
        counts["entities"] += len(spans)
        docs.append(doc)
    counts["docs"] = len(docs)
    if new_labels:
        counts["new_labels"] = new_labels
    return docs, counts


def write_corrections(path, fmt: str, nlp, output, labels=None, add_labels: bool = False) -> Dict[str, int]:
    """`read_corrections`, then the Docs to a DocBin at `output` (written only if every record was read)."""
    docs, counts = read_corrections(path, fmt, nlp, labels, add_labels)
    DocBin(docs=docs).to_disk(output)
    return counts
