"""Pre-annotations for annotation tools, with crf_ner's probabilities: Label Studio, Prodigy, doccano.

Each function turns one annotated Doc into one task in the tool's own import
format, the entities with their probabilities and the document with its
expected errors (conll_crf.review), so the tool can sort or filter by them:

- Label Studio: a task `{"data": {"text", "id"}, "predictions": [{"model_version",
  "score", "result": [...]}]}`, each result a `labels` region with `value`
  {start, end, text, labels} and its `score`; the labelling config's names
  are `from_name` "label" and `to_name` "text" (LABEL_STUDIO_CONFIG);
- Prodigy: an `ner` task `{"text", "tokens", "spans", "meta"}`, tokens with
  start/end/id/ws, spans with start/end/token_start/token_end (inclusive, as
  Prodigy counts)/label and `score`, `meta` with the id and expected errors;
- doccano: a JSONL line `{"text", "label": [[start, end, label]], ...}`, the
  probabilities and expected errors as extra keys (doccano keeps them as metadata).

Offsets are characters of `doc.text`. The doc score (Label Studio's
prediction `score`, Prodigy's `meta.score`) is the probability that the
document has no entity error, under independence: the product over scored
spans of P(no error there).
"""

import math
from typing import Any, Dict, List, Optional

from spacy.tokens import Doc

from .review import entity_error_probabilities, expected_errors

FORMATS = ("label-studio", "prodigy", "doccano")

LABEL_STUDIO_CONFIG = """<View>
  <Labels name="label" toName="text">
{labels}
  </Labels>
  <Text name="text" value="$text"/>
</View>"""


def label_studio_config(labels) -> str:
    """The labelling config the tasks fit: a `Labels` named "label" over a `Text` named "text"."""
    return LABEL_STUDIO_CONFIG.format(labels="\n".join(f'    <Label value="{label}"/>' for label in labels))


def _entities(doc: Doc, spans_key: str) -> List[Dict[str, Any]]:
    group = doc.spans.get(spans_key)
    scores = {}
    if group is not None and "scores" in group.attrs:
        scores = {(s.start, s.end, s.label_): float(p) for s, p in zip(group, group.attrs["scores"])}
    return [
        {
            "start": e.start_char,
            "end": e.end_char,
            "token_start": e.start,
            "token_end": e.end - 1,
            "label": e.label_,
            "text": e.text,
            "score": scores.get((e.start, e.end, e.label_)),
        }
        for e in doc.ents
    ]


def doc_score(doc: Doc, spans_key: str = "crf_ner") -> float:
    """The probability that the doc has no entity error (the scored spans taken as independent)."""
    return math.exp(sum(math.log(max(1.0 - p, 1e-12)) for *_, p in entity_error_probabilities(doc, spans_key)))


def to_label_studio(doc: Doc, doc_id: Any, model_version: str, spans_key: str = "crf_ner") -> Dict[str, Any]:
    """A Label Studio task with the doc's entities as a prediction."""
    result = [
        {
            "id": f"{doc_id}-{k}",
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "value": {"start": e["start"], "end": e["end"], "text": e["text"], "labels": [e["label"]]},
            **({"score": e["score"]} if e["score"] is not None else {}),
        }
        for k, e in enumerate(_entities(doc, spans_key))
    ]
    return {
        "data": {"text": doc.text, "id": doc_id, "expected_errors": expected_errors(doc, spans_key)},
        "predictions": [{"model_version": model_version, "score": doc_score(doc, spans_key), "result": result}],
    }


def to_prodigy(doc: Doc, doc_id: Any, spans_key: str = "crf_ner") -> Dict[str, Any]:
    """A Prodigy `ner` task (manual review of the whole text) with the doc's entities as spans."""
    tokens = [
        {"text": t.text, "start": t.idx, "end": t.idx + len(t), "id": t.i, "ws": bool(t.whitespace_)} for t in doc
    ]
    spans = [
        {k: e[k] for k in ("start", "end", "token_start", "token_end", "label", "score")}
        for e in _entities(doc, spans_key)
    ]
    meta = {
        "id": doc_id,
        "expected_errors": round(expected_errors(doc, spans_key), 4),
        "score": doc_score(doc, spans_key),
    }
    return {"text": doc.text, "tokens": tokens, "spans": spans, "meta": meta}


def to_doccano(doc: Doc, doc_id: Any, spans_key: str = "crf_ner") -> Dict[str, Any]:
    """A doccano sequence-labelling JSONL line with the doc's entities."""
    ents = _entities(doc, spans_key)
    return {
        "id": doc_id,
        "text": doc.text,
        "label": [[e["start"], e["end"], e["label"]] for e in ents],
        "scores": [e["score"] for e in ents],
        "expected_errors": round(expected_errors(doc, spans_key), 4),
    }


def to_tool(fmt: str, doc: Doc, doc_id: Any, model_version: str, spans_key: str = "crf_ner") -> Dict[str, Any]:
    """The task of `doc` in format `fmt` (one of FORMATS)."""
    if fmt == "label-studio":
        return to_label_studio(doc, doc_id, model_version, spans_key)
    if fmt == "prodigy":
        return to_prodigy(doc, doc_id, spans_key)
    if fmt == "doccano":
        return to_doccano(doc, doc_id, spans_key)
    raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")


def model_version_of(nlp, name: Optional[str] = None) -> str:
    """The pipeline's "name-version" as the tasks' model version."""
    meta = nlp.meta
    return name or f"{meta.get('lang', '')}_{meta.get('name', 'pipeline')}-{meta.get('version', '0.0.0')}"


def write_queue(nlp, items, fmt: str, output, budget: int = 0, spans_key: str = "crf_ner") -> Dict[str, Any]:
    """Order the annotated `items` ((id, Doc) pairs: `review_inputs.review_docs`) by expected errors (most
    first), keep `budget` (0: all) and write them as `fmt` tasks to `output` (Label Studio: a JSON list, with
    the labelling config beside it as OUTPUT.config.xml; Prodigy and doccano: JSONL), through a temporary
    file. Only the kept Docs stay in memory. Returns a summary (documents, kept, expected errors kept and in all)."""
    import heapq
    import json
    import os
    from pathlib import Path

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    output = Path(output)
    version = model_version_of(nlp)
    kept: List = []  # a heap of (errors, -position, id, doc): the smallest (least errors, latest) on top
    n_docs, total = 0, 0.0
    for position, (doc_id, doc) in enumerate(items):
        errors = expected_errors(doc, spans_key)
        n_docs += 1
        total += errors
        entry = (errors, -position, position, doc_id, doc)
        if not budget or len(kept) < budget:
            heapq.heappush(kept, entry)
        elif entry[:2] > kept[0][:2]:
            heapq.heapreplace(kept, entry)
    ranked = sorted(kept, key=lambda e: (-e[0], e[2]))
    tasks = [to_tool(fmt, doc, doc_id, version, spans_key) for _, _, _, doc_id, doc in ranked]
    tmp = output.with_name(f".{output.name}.tmp")
    with open(tmp, "w", encoding="utf8") as f:
        if fmt == "label-studio":
            json.dump(tasks, f, ensure_ascii=False, indent=1)
        else:
            for task in tasks:
                f.write(json.dumps(task, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    if fmt == "label-studio":
        labels = [p.labels for _, p in nlp.pipeline if hasattr(p, "labels") and hasattr(p, "training_names")]
        output.with_name(output.name + ".config.xml").write_text(label_studio_config(labels[0] if labels else []))
    return {
        "documents": n_docs,
        "kept": len(ranked),
        "expected_errors_kept": round(sum(e[0] for e in ranked), 2),
        "expected_errors_all": round(total, 2),
    }
