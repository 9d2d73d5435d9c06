"""The `crf_ner` pipeline component: named entities from a BiLSTM-CRF.

Trained with the CRF's negative log-likelihood (tokens whose gold annotation is
missing, e.g. after re-tokenization, are marginalised over); predicts with
constrained Viterbi decoding, so every predicted tag sequence is valid for the
scheme (BIO or BILUO). Sets `doc.ents`, and so `token.ent_iob_` and
`token.ent_type_`. Scored by `spacy.ner_scorer.v1`.
"""
from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer

from . import architectures, loggers  # noqa: F401  (registers the architectures and logger)
from .tags import MODEL_SCHEMES, OUTSIDE, biluo_to_scheme, build_tags, iob_spans, strict_spans

default_model_config = """
[model]
@architectures = "conll_crf.BiLSTMCRF.v1"
hidden_width = 128
depth = 1
dropout = 0.2
mixed_precision = false

[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[model.tok2vec.embed]
@architectures = "conll_crf.HashCharEmbed.v1"
width = 64
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
char_width = 32
char_rows = 5000
nM = 32
nC = 8

[model.tok2vec.encode]
@architectures = "spacy.MaxoutWindowEncoder.v2"
width = 96
window_size = 1
maxout_pieces = 3
depth = 2
"""
DEFAULT_MODEL = Config().from_str(default_model_config)["model"]


@Language.factory(
    "crf_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={"model": DEFAULT_MODEL, "scheme": "BIO", "scorer": {"@scorers": "spacy.ner_scorer.v1"}},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_crf_ner(nlp: Language, name: str, model: Model, scheme: str, scorer: Optional[Callable]) -> "CRFEntityRecognizer":
    """A BiLSTM-CRF entity recognizer. `scheme`: the tag scheme the CRF learns
    and is constrained to, "BIO" (IOB2) or "BILUO"."""
    return CRFEntityRecognizer(nlp.vocab, model, name, scheme=scheme, scorer=scorer)


class CRFEntityRecognizer(TrainablePipe):
    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "crf_ner",
        *,
        scheme: str = "BIO",
        scorer: Optional[Callable] = None,
    ) -> None:
        if scheme not in MODEL_SCHEMES:
            raise ValueError(f"[crf_ner] scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict = {"labels": [], "scheme": scheme}

    # -- labels ---------------------------------------------------------------------------

    @property
    def labels(self) -> tuple:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        """All tags in the order of the CRF's tag indices."""
        return build_tags(self.labels, self.cfg["scheme"])

    def add_label(self, label: str) -> int:
        if not isinstance(label, str) or not label or ("-" in label and label.split("-")[0] in ("B", "I", "L", "U")):
            raise ValueError(f"[crf_ner] invalid entity label {label!r}")
        if label in self.cfg["labels"]:
            return 0
        self._require_no_model()
        self.cfg["labels"] = sorted(self.cfg["labels"] + [label])
        self.vocab.strings.add(label)
        return 1

    def _require_no_model(self) -> None:
        if self.model.has_dim("nO") and self.model.get_dim("nO"):
            raise ValueError("[crf_ner] cannot add labels to an initialized model; re-initialize the pipeline")

    # -- initialize -----------------------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        validate_get_examples(get_examples, "CRFEntityRecognizer.initialize")
        if labels is not None:
            for label in labels:
                self.add_label(label)
        else:
            for example in get_examples():
                for ent in example.reference.ents:
                    self.add_label(ent.label_)
        if not self.labels:
            raise ValueError("[crf_ner] no entity labels: the training examples have no entities and none were given")
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        self.model.attrs["tags"] = self.tags
        self.model.attrs["scheme"] = self.cfg["scheme"]
        self.model.initialize(X=doc_sample)

    # -- predict --------------------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> List[numpy.ndarray]:
        """Tag indices per doc (Viterbi, constrained). Does not change the docs."""
        docs = list(docs)
        if not docs:
            return []
        return self.model.predict((docs, None))

    def tag_names(self, tag_ids: List) -> List[List[str]]:
        tags = self.tags
        return [[tags[i] for i in self.model.ops.to_numpy(ids).tolist()] for ids in tag_ids]

    def predict_tags(self, docs: Iterable[Doc]) -> List[List[str]]:
        """The predicted tag names per doc (for diagnostics and exports)."""
        return self.tag_names(self.predict(docs))

    def set_annotations(self, docs: Iterable[Doc], tag_ids: List) -> None:
        for doc, names in zip(docs, self.tag_names(tag_ids)):
            doc.ents = [Span(doc, start, end, label=label) for start, end, label in self.decode(names)]

    def decode(self, tag_names: Sequence[str]):
        """(start, end, label) spans of a predicted tag sequence. A CRF's
        sequences are valid by construction, and an invalid one raises. The
        softmax ablation's can be invalid: they are read with conlleval's rules
        (BILUO: an unfinished entity ends where it breaks)."""
        strict = self.model.attrs.get("decoder", "crf") == "crf"
        if self.cfg["scheme"] == "BIO":
            spans, repaired = iob_spans(tag_names)
            if repaired and strict:
                raise ValueError(f"[crf_ner] invalid BIO sequence predicted: {tag_names}")
            return spans
        if strict:
            return strict_spans(tag_names, "BILUO")
        return iob_spans([("B" + t[1:]) if t[0] == "U" else ("I" + t[1:]) if t[0] == "L" else t for t in tag_names])[0]

    # -- training -------------------------------------------------------------------------

    def _targets(self, examples: Iterable[Example]) -> List[numpy.ndarray]:
        """Per doc a [n_tokens, K] float32 0/1 array: the tags the gold
        annotation admits at each predicted token (all tags where it is missing)."""
        tags = self.tags
        index = {t: i for i, t in enumerate(tags)}
        out = []
        for eg in examples:
            aligned = biluo_to_scheme(eg.get_aligned_ner(), self.cfg["scheme"])
            target = numpy.zeros((len(eg.predicted), len(tags)), dtype="float32")
            for i, tag in enumerate(aligned):
                if tag is None:
                    target[i] = 1.0
                elif tag in index:
                    target[i, index[tag]] = 1.0
                elif tag == OUTSIDE:
                    target[i, 0] = 1.0
                else:  # an entity type the component does not know: treat as missing
                    target[i] = 1.0
            out.append(self.model.ops.asarray(target))
        return out

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "CRFEntityRecognizer.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses  # nothing to learn from (empty docs only)
        docs = [eg.predicted for eg in examples]
        nll, backprop = self.model.begin_update((docs, self._targets(examples)))
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
