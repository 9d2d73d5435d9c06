"""The `crf_ner` pipeline component: named entities from a BiLSTM-CRF.

Trained with the CRF's negative log-likelihood (tokens whose gold annotation is
missing, e.g. after re-tokenization, are marginalised over); predicts with
constrained Viterbi decoding, so every predicted tag sequence is valid for the
scheme (BIO or BILUO), no entity crosses a known sentence boundary, and preset
entities (set by an earlier component) are kept and predicted around. Sets
`doc.ents`, and so `token.ent_iob_` and `token.ent_type_`.

Confidence (on by default): every entity's exact probability under the CRF
(constrained forward-backward), written spancat-style: `doc.spans[spans_key]`
holds every candidate entity with probability >= `candidate_threshold` (the
predicted ones included) and `doc.spans[spans_key].attrs["scores"]` their
probabilities; `ent._.crf_prob` reads an entity's probability. `threshold`
leaves predicted entities below it out of `doc.ents`; `temperature` (fitted by
scripts/calibrate.py, which saves it in the pipeline's config) scales the
scores before the probabilities, never the decoding. Scored by
`spacy.ner_scorer.v1`.

Settings have one source, spaCy's: the pipeline's config, so `nlp.config`
says what is in effect and a load-time override (`spacy.load(name,
config={"components": {"crf_ner": {"threshold": 0.9}}})`) wins. The
component's attributes of the same names read them, and writing one (or a
setting into `cfg`, which holds only what training learns: labels and scheme)
is an error that says how to change it.
"""

from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import minibatch
from spacy.vocab import Vocab
from thinc.api import Model, Optimizer, set_dropout_rate

from .. import process
from ..tags import (
    MODEL_SCHEMES,
    build_tags,
    iob_spans,
    strict_spans,
)
from . import (  # noqa: F401  (they register their names)
    architectures,
    document_context,
    legacy,
    loggers,
    mention_replacement,
    stable_mode,
)
from .architectures import DEFAULT_MODEL
from .doc_constraints import cached_tag_index, doc_constraints, relax_for_gold
from .scored_spans import probs_by_name, write_scored_spans  # (the module also registers Span._.crf_prob)
from .settings import LearnedCfg, ReadOnlySettings
from .thinc_head import Prediction, doc_emissions, rows_by_doc, torch_module
from .training_targets import gold_targets, training_constraints
from .word_dropout import count_known_words


@Language.factory(
    "crf_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BIO",
        "confidence": True,
        "spans_key": "crf_ner",
        "threshold": 0.0,
        "thresholds": {},
        "candidate_threshold": 0.1,
        "temperature": 1.0,
        "temperature_unseen": None,
        "sentence_dropout": 0.0,
        "retain_freed_memory": False,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_crf_ner(
    nlp: Language,
    name: str,
    model: Model,
    scheme: str,
    confidence: bool,
    spans_key: str,
    threshold: float,
    candidate_threshold: float,
    temperature: float,
    sentence_dropout: float,
    scorer: Optional[Callable],
    retain_freed_memory: bool = False,
    temperature_unseen: Optional[float] = None,
    thresholds: Optional[Dict[str, float]] = None,
) -> "CRFEntityRecognizer":
    """A BiLSTM-CRF entity recognizer. `scheme`: the tag scheme the CRF learns
    and is constrained to, "BIO" (IOB2) or "BILUO". `confidence`: compute
    entity probabilities (doc.spans[spans_key]). `threshold`: predicted
    entities below this probability stay out of doc.ents; `thresholds`: per
    label, instead of `threshold` (scripts/thresholds.py picks them for a
    target precision). `candidate_threshold`:
    the lowest probability of a span in doc.spans[spans_key]. `temperature`:
    divides the CRF's scores before the probabilities (calibration; the
    calibrated pipeline's config holds the fitted value). `temperature_unseen`:
    the temperature of entities whose text never was an entity in the
    training data (the component keeps those names); None: `temperature`
    for all. Names never seen are where a model errs most, and one
    temperature fitted on all of dev leaves them over-confident
    (docs/calibration.md); it costs a second forward-backward per batch.
    `sentence_dropout`: in training, the fraction of examples whose predicted
    doc has no sentence boundaries that are trained without the gold's (0: the
    gold sentence starts always constrain training, as they constrain
    decoding of a sentence-split doc; 1: never, as an app's raw text arrives
    unsplit). Prediction is unaffected: known boundaries always constrain it.
    `retain_freed_memory`: have glibc keep freed blocks of up to 32 MiB (and
    up to 1 GiB of free heap) for reuse in this process (conll_crf.process).
    It changes process-wide state, so it is off unless asked for: the head's
    per-batch buffers then stop arriving as fresh pages to fault in and zero,
    faster where page faults are costly (docs/benchmarks.md), at the price of
    a resident size that stays near its peak. No result depends on it."""
    if retain_freed_memory:
        process.retain_freed_memory()
    return CRFEntityRecognizer(
        nlp.vocab,
        model,
        name,
        scheme=scheme,
        confidence=confidence,
        spans_key=spans_key,
        threshold=threshold,
        candidate_threshold=candidate_threshold,
        temperature=temperature,
        temperature_unseen=temperature_unseen,
        thresholds=thresholds,
        sentence_dropout=sentence_dropout,
        scorer=scorer,
    )


class CRFEntityRecognizer(ReadOnlySettings, TrainablePipe):
    """Named entities from a BiLSTM-CRF, with each entity's exact probability (see the module's doc).

    vocab (Vocab): the pipeline's vocab.
    model (Model): a `conll_crf.BiLSTMCRF` model (refs "tok2vec" and "output_layer").
    name (str): the component's name in the pipeline.
    scheme (str): the tag scheme the CRF learns and is constrained to: "BIO" or "BILUO".
    confidence (bool): compute entity probabilities (doc.spans[spans_key], `ent._.crf_prob`).
    spans_key (str): the doc.spans key of the scored spans.
    threshold (float): predicted entities below this probability stay out of doc.ents.
    thresholds (Optional[Dict[str, float]]): per label, instead of `threshold`.
    candidate_threshold (float): the lowest probability of a span in doc.spans[spans_key].
    temperature (float): divides the CRF's scores before the probabilities (calibration).
    temperature_unseen (Optional[float]): the temperature of entities whose text was never a training entity.
    sentence_dropout (float): in training, the fraction of unsplit examples trained without
        the gold sentence starts (see `make_crf_ner`).
    scorer (Optional[Callable]): the scoring function (`spacy.ner_scorer.v1` by default).
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "crf_ner",
        *,
        scheme: str = "BIO",
        confidence: bool = True,
        spans_key: str = "crf_ner",
        threshold: float = 0.0,
        candidate_threshold: float = 0.1,
        temperature: float = 1.0,
        temperature_unseen: Optional[float] = None,
        thresholds: Optional[Dict[str, float]] = None,
        sentence_dropout: float = 0.0,
        scorer: Optional[Callable] = None,
    ) -> None:
        if scheme not in MODEL_SCHEMES:
            raise ValueError(f"[crf_ner] scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
        thresholds = dict(thresholds or {})
        if not all(0.0 <= t <= 1.0 for t in [threshold, *thresholds.values()]) or not 0.0 < candidate_threshold <= 1.0:
            raise ValueError(
                "[crf_ner] threshold must be in [0, 1] and candidate_threshold in (0, 1], "
                f"got {threshold}, {candidate_threshold}"
            )
        if not temperature > 0 or (temperature_unseen is not None and not temperature_unseen > 0):
            raise ValueError(f"[crf_ner] temperatures must be > 0, got {temperature}, {temperature_unseen}")
        if not 0.0 <= sentence_dropout <= 1.0:
            raise ValueError(f"[crf_ner] sentence_dropout must be in [0, 1], got {sentence_dropout}")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self._settings = {
            "scheme": scheme,
            "confidence": bool(confidence),
            "spans_key": spans_key,
            "threshold": float(threshold),
            "thresholds": {str(k): float(v) for k, v in thresholds.items()},
            "candidate_threshold": float(candidate_threshold),
            "temperature": float(temperature),
            "temperature_unseen": None if temperature_unseen is None else float(temperature_unseen),
            "sentence_dropout": float(sentence_dropout),
        }
        self.cfg: Dict = LearnedCfg(self, {"labels": [], "scheme": scheme, "names": []})
        self._names = (None, frozenset())

    # -- labels ---------------------------------------------------------------------------

    @property
    def labels(self) -> tuple:
        """The entity labels, sorted."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        """The labels, as `spacy init labels` saves them."""
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        """All tags in the order of the CRF's tag indices."""
        return build_tags(self.labels, self.cfg["scheme"])

    def add_label(self, label: str) -> int:
        """Add an entity label before the model is initialized: 1 if added, 0 if known.
        A trained model's tag set is fixed: adding to it raises ValueError."""
        if not isinstance(label, str) or not label or ("-" in label and label.split("-")[0] in ("B", "I", "L", "U")):
            raise ValueError(f"[crf_ner] invalid entity label {label!r}")
        if label in self.cfg["labels"]:
            return 0
        if self.model.has_dim("nO") and self.model.get_dim("nO"):
            raise ValueError(
                f"[crf_ner] cannot add the label {label!r} to a trained model: the CRF's tag set is fixed "
                f"(labels: {', '.join(self.labels)}). Re-initialize the component with it (its weights are "
                f"then trained from scratch): nlp.initialize(get_examples) with examples that carry {label!r}, "
                f"or `spacy train` with it in the data or in [initialize.components.{self.name}.labels]."
            )
        self.cfg["labels"] = sorted(self.cfg["labels"] + [label])
        self.vocab.strings.add(label)
        return 1

    # -- initialize -----------------------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Set the labels (given, or from the examples' entities) and build the model.

        get_examples (Callable[[], Iterable[Example]]): the training examples (a sample sizes the model).
        nlp (Optional[Language]): the pipeline.
        labels (Optional[Sequence[str]]): the entity labels, e.g. from `spacy init labels`.
        """
        validate_get_examples(get_examples, "CRFEntityRecognizer.initialize")
        if labels is None and next(iter(get_examples()), None) is None:
            raise ValueError(
                "[crf_ner] no training examples: the training corpus is empty. spaCy's Corpus reads .spacy files "
                "(DocBin) and nothing else: convert CoNLL files with `conll-crf convert FILE OUT.spacy` and give "
                "the .spacy file (or a folder of them) as --paths.train"
            )
        self.cfg["labels"] = []  # initialize (re)builds the model: its label set starts afresh
        if self.model.has_dim("nO"):
            self.model.set_dim("nO", None, force=True)
        if labels is not None:
            for label in labels:
                self.add_label(label)
        else:
            for example in get_examples():
                for ent in example.reference.ents:
                    self.add_label(ent.label_)
        self.cfg["names"] = sorted({ent.text for eg in get_examples() for ent in eg.reference.ents})
        if not self.labels:
            raise ValueError("[crf_ner] no entity labels: the training examples have no entities and none were given")
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        # the training data's known words (HashCharEmbed.v5's known_words_min_count), before the model's first forward
        count_known_words(self.model, get_examples(), nlp.make_doc if nlp is not None else None)
        self.model.attrs["tags"] = self.tags
        self.model.attrs["scheme"] = self.cfg["scheme"]
        self.model.initialize(X=doc_sample)

    # -- constraints ----------------------------------------------------------------------

    def _constraints(self, docs: Sequence[Doc]) -> Optional[List]:
        """Per doc the allowed tags [n, K] as float32 (see doc_constraints.py), or
        None when no doc of the batch constrains any token (no whitespace
        token, sentence boundary or preset entity): the CRF's own constraints
        are then all there is. Models of conll_crf.BiLSTMCRF.v1 get whitespace
        only, as before."""
        full = bool(self.model.attrs.get("doc_constraints", False))
        index = cached_tag_index(tuple(self.tags), self.cfg["scheme"])
        allowed = [doc_constraints(doc, index, sentences=full, presets=full) for doc in docs]
        if all(a.all() for a in allowed):
            return None
        ops = self.model.ops
        return [ops.asarray2f(a.astype("float32")) for a in allowed]

    # -- predict --------------------------------------------------------------------------

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Docs in order, annotated. As spaCy's parser does, each batch of `batch_size` docs is predicted in
        sub-batches of a quarter of it, sorted by length: the embedding's per-batch arrays stay a quarter the
        size (a batch of 64 articles makes arrays of tens of MB, which glibc's default allocator maps and unmaps
        anew for every batch) and less padding is computed. No prediction depends on its batch (beyond float rounding: a
        kernel may be chosen by shape)."""
        error_handler = self.get_error_handler()
        for batch in minibatch(stream, size=batch_size):
            in_order = list(batch)
            try:
                for sub_batch in minibatch(sorted(in_order, key=len), size=max(batch_size // 4, 2)):
                    sub_batch = list(sub_batch)
                    self.set_annotations(sub_batch, self.predict(sub_batch))
                yield from in_order
            except Exception as e:
                error_handler(self.name, self, in_order, e)

    def predict(self, docs: Iterable[Doc]):
        """Tag indices per doc (Viterbi, constrained), or with confidence on a
        layers.Prediction that also holds entity probabilities. Does not change the docs."""
        docs = list(docs)
        if not docs:
            return []
        confidence = None
        if self.confidence:
            confidence = (self.candidate_threshold, self.temperature)
            if self.temperature_unseen is not None:
                if not self.training_names:
                    raise ValueError(
                        f"[{self.name}] temperature_unseen needs the training data's entity names, which this "
                        "pipeline does not have (trained before spacy-conll-crf 0.4): leave it null"
                    )
                confidence += (self.temperature_unseen,)
        return self.model.predict((docs, None, self._constraints(docs), confidence))

    def emissions(self, docs: Sequence[Doc]) -> List[numpy.ndarray]:
        """The CRF's constrained emission scores per doc, float32 [n_tokens, K]
        (-inf where a tag is impossible), as prediction computes them; for
        calibration and diagnostics. With `crf()`, everything the component's
        probabilities are computed from."""
        docs = list(docs)
        nonempty = [d for d in docs if len(d)]
        out = {id(d): numpy.zeros((0, len(self.tags)), dtype="float32") for d in docs}
        if nonempty:
            Xs = self.model.get_ref("tok2vec").predict(nonempty)
            constraints = self._constraints(nonempty) or [None] * len(nonempty)
            head = torch_module(self.model.get_ref("output_layer"))
            for doc, em in zip(nonempty, doc_emissions(head, self.model.ops, Xs, constraints)):
                out[id(doc)] = em
        return [out[id(d)] for d in docs]

    def crf(self):
        """The trained LinearChainCRF (a torch module)."""
        return torch_module(self.model.get_ref("output_layer")).crf

    def tag_names(self, tag_ids: List) -> List[List[str]]:
        """Tag names per doc of `predict`'s tag indices (or its Prediction)."""
        tags = self.tags
        if isinstance(tag_ids, Prediction):
            tag_ids = tag_ids.tag_ids
        if not len(tag_ids):
            return []
        # one device-to-host copy for the batch (on a GPU, one per doc would sync per doc)
        ops = self.model.ops
        flat = ops.to_numpy(ops.xp.concatenate([ops.xp.asarray(ids).reshape(-1) for ids in tag_ids])).tolist()
        out, start = [], 0
        for ids in tag_ids:
            out.append([tags[i] for i in flat[start : start + len(ids)]])
            start += len(ids)
        return out

    def predict_tags(self, docs: Iterable[Doc]) -> List[List[str]]:
        """The predicted tag names per doc (for diagnostics and exports)."""
        return self.tag_names(self.predict(docs))

    def set_annotations(self, docs: Iterable[Doc], predicted) -> None:
        """Set doc.ents from `predict`'s output (preset entities kept) and, with
        confidence on, doc.spans[spans_key] with the probabilities."""
        docs = list(docs)
        labels = self.labels
        scored = isinstance(predicted, Prediction)
        if scored:
            to_np = self.model.ops.to_numpy
            ents, ent_p = rows_by_doc(len(docs), to_np(predicted.entities), to_np(predicted.entity_probs))
            cands, cand_p = rows_by_doc(len(docs), to_np(predicted.candidates), to_np(predicted.candidate_probs))
        names = None if scored else self.tag_names(predicted)
        cut = self.thresholds
        if cut and not set(cut) <= set(labels):
            raise ValueError(f"[{self.name}] thresholds for unknown labels {sorted(set(cut) - set(labels))}: {labels}")
        for i, doc in enumerate(docs):
            presets = list(doc.ents)
            if scored:  # the Viterbi path's entities, as the CRF read them off the path
                spans = [(s, e, labels[x]) for s, e, x in ents[i].tolist()]
                prob = dict(zip(spans, probs_by_name(doc, ents[i], ent_p[i], self.training_names).tolist()))
                spans = [sp for sp in spans if prob[sp] >= cut.get(sp[2], self.threshold)]
            else:
                spans = self.decode(names[i])
            if presets:
                taken = numpy.zeros(len(doc), dtype=bool)
                for ent in presets:
                    taken[ent.start : ent.end] = True
                spans = [sp for sp in spans if not taken[sp[0] : sp[1]].any()]
            new = [Span(doc, s, e, label=label) for s, e, label in spans]
            doc.ents = sorted(presets + new, key=lambda sp: sp.start) if presets else new
            if scored:
                cand_rows, cand_probs = cands[i], probs_by_name(doc, cands[i], cand_p[i], self.training_names)
                if cand_p[i].ndim > 1:  # candidates at or above the threshold at either temperature: keep their own
                    keep = cand_probs >= self.candidate_threshold
                    cand_rows, cand_probs = cand_rows[keep], cand_probs[keep]
                write_scored_spans(doc, self.spans_key, self.labels, presets, new, prob, cand_rows, cand_probs)

    def decode(self, tag_names: Sequence[str]):
        """(start, end, label) spans of a predicted tag sequence. A CRF's
        sequences are valid by construction, and an invalid one raises."""
        if self.cfg["scheme"] == "BIO":
            spans, repaired = iob_spans(tag_names)
            if repaired:
                raise ValueError(f"[crf_ner] invalid BIO sequence predicted: {tag_names}")
            return spans
        return strict_spans(tag_names, "BILUO")

    # -- training -------------------------------------------------------------------------

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch of examples (the CRF's NLL, missing gold tags marginalised).

        examples (Iterable[Example]): the batch.
        drop (float): dropout for the tok2vec (the head has its own rate).
        sgd (Optional[Optimizer]): the optimizer; None computes the gradients only.
        losses (Optional[Dict[str, float]]): the losses so far, updated in place.
        RETURNS (Dict[str, float]): the losses, with this component's added.
        """
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "CRFEntityRecognizer.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses  # nothing to learn from (empty docs only)
        docs = [eg.predicted for eg in examples]
        # built on the host; one copy each to the device
        targets_np = gold_targets(examples, self.tags, self.cfg["scheme"])
        targets = [self.model.ops.asarray2f(t) for t in targets_np]
        constraints = None
        if self.model.attrs.get("doc_constraints", False):
            index = cached_tag_index(tuple(self.tags), self.cfg["scheme"])
            trained = training_constraints(examples, index, self.sentence_dropout)
            constraints = [
                self.model.ops.asarray2f(relax_for_gold(c, t).astype("float32")) for c, t in zip(trained, targets_np)
            ]
        set_dropout_rate(self.model, drop)  # [training] dropout reaches the tok2vec's layers (the head has its own)
        nll, backprop = self.model.begin_update((docs, targets, constraints, None))
        loss, d_nll = self.get_loss(examples, nll)
        backprop(d_nll)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], nll) -> tuple:
        """Loss = sum of the per-doc NLLs; its gradient w.r.t. each NLL is 1."""
        loss = float(nll.sum())
        if not numpy.isfinite(loss):
            raise ValueError("[crf_ner] the loss is not finite")
        return loss, self.model.ops.alloc1f(len(nll)) + 1.0
