"""The BiLSTM-CRF head: a torch module and its thinc wrapper.

`BiLSTMCRFModule` (pure torch) maps token vectors (the docs' rows one after
another [N, D], or right-padded [B, T, D]) to emissions [B, T, K] through an
optional BiLSTM over packed sequences, and owns the
`LinearChainCRF`. Its sizes (input width, tags) are known only when the spaCy
component initializes, so it is built lazily; its serialized form is a
safetensors blob whose metadata holds those sizes, so deserializing rebuilds it
before the weights load, and loading never unpickles anything.

`bilstm_crf_head` wraps it with thinc's PyTorchWrapper_v3 (with `HeadShim`,
which makes parameter averaging and a learning-rate scale reach the torch
weights), which hands the module the rows of all docs at once. Input: (token
vectors: List[Floats2d], targets or None, constraints or None, confidence or
None). targets: per doc a float32 0/1 array
[n_tokens, K], the tags each token's annotation admits; with them the output
is the NLL per doc. constraints: per doc a float32 0/1 array [n_tokens, K],
the tags a token may take at all (whitespace, sentence boundaries, preset
entities; see constraints.py), applied as -inf emissions in training and
prediction. Without targets the output is the Viterbi tag indices per doc;
with confidence = (candidate_threshold, temperature) it is a `Prediction`
that also holds each predicted entity's exact probability and every candidate
entity at or above the threshold.
"""
import contextlib
import json
import struct
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from thinc.api import ArgsKwargs, Model, PyTorchShim, PyTorchWrapper_v3, torch2xp, xp2torch
from thinc.types import Floats1d, Floats2d
from thinc.util import get_torch_default_device
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .crf import LinearChainCRF, NEG_INF
from .tags import MODEL_SCHEMES

InT = Tuple[List[Floats2d], Optional[List[Any]]]


DECODERS = ("crf", "softmax")


class BiLSTMCRFModule(nn.Module):
    """Token vectors -> dropout -> BiLSTM (depth 0: none) -> dropout -> linear
    emissions -> constrained LinearChainCRF. With ``skip`` the linear layer
    reads the BiLSTM's output concatenated with its (dropped-out) input, so the
    token vectors' own features reach the emissions directly. With decoder="softmax" (an
    ablation baseline) the emissions are per-token logits instead: the loss is
    token-level cross-entropy and decoding is an independent argmax, which
    can produce invalid tag sequences."""

    def __init__(self, hidden_width: int, depth: int, dropout: float, decoder: str = "crf", skip: bool = False) -> None:
        super().__init__()
        if depth < 0 or hidden_width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"invalid BiLSTM settings: hidden_width={hidden_width}, depth={depth}, dropout={dropout}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
        if skip and depth == 0:
            raise ValueError("skip=True concatenates the BiLSTM's output with its input: it needs depth >= 1")
        self.cfg = {"hidden_width": hidden_width, "depth": depth, "dropout": dropout, "decoder": decoder, "skip": bool(skip)}
        self.built = False

    def build(self, n_in: int, tags: Sequence[str], scheme: str) -> None:
        if scheme not in MODEL_SCHEMES:
            raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
        hidden, depth, dropout = self.cfg["hidden_width"], self.cfg["depth"], self.cfg["dropout"]
        self.cfg.update({"n_in": int(n_in), "tags": list(tags), "scheme": scheme})
        self.dropout = nn.Dropout(dropout)
        if depth > 0:
            self.lstm: Optional[nn.LSTM] = nn.LSTM(
                n_in, hidden, num_layers=depth, bidirectional=True, batch_first=True, dropout=dropout if depth > 1 else 0.0
            )
            n_out = 2 * hidden + (n_in if self.cfg["skip"] else 0)
        else:
            self.lstm = None
            n_out = n_in
        self.output = nn.Linear(n_out, len(tags))
        self.crf = LinearChainCRF.from_tags(tags, scheme)
        self.built = True

    def emissions(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Emissions [B, T, K] (T: the longest length; 0 past each length) of
        token vectors ``x``: the docs' rows one after another [N, D], or right-
        padded [B, T', D] (T' >= T). ``lengths`` [B]: CPU int64.

        The BiLSTM reads the packed sequence built straight from the rows (one
        gather) and the output layer maps the packed rows, so only the [N, K]
        emissions are scattered into the padded batch: nothing D- or 2H-wide
        is padded, sorted or unpacked."""
        B, K = lengths.numel(), self.output.out_features
        T = int(lengths.max()) if B else 0
        if x.dim() == 3:
            first = torch.arange(B, dtype=torch.long) * x.size(1)
            x = x.reshape(-1, x.size(2))
        else:
            first = torch.cumsum(lengths, 0) - lengths
        src, dst, batch_sizes = _packing(lengths, first, T)
        if src.numel() == 0:
            return x.new_zeros(B, T, K)
        h = self.dropout(x.index_select(0, src.to(x.device)))  # [N, D], time-major packed order
        if self.lstm is not None:
            out = self.dropout(self.lstm(PackedSequence(h, batch_sizes))[0].data)
            h = torch.cat([out, h], 1) if self.cfg["skip"] else out
        em = self.output(h)
        return em.new_zeros(B * T, K).index_copy(0, dst.to(em.device), em).view(B, T, K)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor,
        allowed: Optional[Tensor] = None,
        constraints: Optional[Tensor] = None,
        confidence: Optional[Tuple[float, float]] = None,
    ):
        """Training (``allowed`` [B, T, K] bool given): NLL [B], summing over the
        tag paths the annotation admits. Prediction: Viterbi tag indices [B, T]
        (-1 past each length), or with ``confidence`` = (candidate_threshold,
        temperature) a tuple (paths, entities [N, 4], their probabilities [N],
        candidates [M, 4], their probabilities [M]); entities are (sequence,
        start, end exclusive, label index). ``constraints`` [B, T, K] bool: the
        tags each token may take (-inf emissions elsewhere), in both modes."""
        if not self.built:
            raise ValueError("BiLSTMCRFModule used before it was built (initialize the pipeline first)")
        em = self.emissions(x, lengths)
        mask = torch.arange(em.size(1), device=em.device).unsqueeze(0) < lengths.to(em.device).unsqueeze(1)
        if self.cfg["decoder"] == "softmax":
            return self._softmax(em, mask, allowed, constraints)
        if constraints is not None:
            em = em.masked_fill(~constraints, NEG_INF)
        if allowed is not None:
            single = allowed.sum(2) == 1
            if bool((single | ~mask).all()):
                return self.crf.nll(em, allowed.to(torch.long).argmax(2), mask)
            return self.crf.partial_nll(em, allowed, mask)
        paths = self.crf.viterbi(em, mask)[1]
        if confidence is None:
            return paths
        threshold, temperature = confidence
        em = em.detach()
        terms = self.crf.span_terms(em, mask, temperature)
        ents = self.crf.path_entities(paths)
        probs = self.crf.entity_probabilities(em, ents, mask, terms=terms)
        cands, cand_probs = self.crf.entity_candidates(em, mask, threshold=threshold, terms=terms)
        return paths, ents, probs, cands, cand_probs

    def _softmax(self, em: Tensor, mask: Tensor, allowed: Optional[Tensor], constraints: Optional[Tensor]):
        log_p = torch.log_softmax(em.float(), dim=2)
        if allowed is not None:  # -log P(annotation) per token, summed per doc
            nll = -torch.logsumexp(log_p.masked_fill(~allowed, NEG_INF), dim=2)
            return torch.where(mask, nll, torch.zeros_like(nll)).sum(1)
        if constraints is not None:
            log_p = log_p.masked_fill(~constraints, NEG_INF)
        return log_p.argmax(2).masked_fill(~mask, -1)


def _packing(lengths: Tensor, first: Tensor, T: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Indices of a packed batch (torch's PackedSequence layout: time-major,
    docs by decreasing length, ties in batch order; empty docs left out):
    ``src`` [N] the row of each packed position in the input (doc b's token t
    is row first[b] + t), ``dst`` [N] its row in the padded [B * T] batch, and
    the batch sizes per step [T'] (T' = T, or 0 when every doc is empty).
    Host-side integer work on [T, B]."""
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_len = lengths[order]
    t = torch.arange(T, dtype=torch.long).unsqueeze(1)  # [T, 1]
    valid = t < sorted_len.unsqueeze(0)  # [T, B]
    src = (first[order].unsqueeze(0) + t)[valid]
    dst = (order.unsqueeze(0) * T + t)[valid]
    batch_sizes = valid.sum(1)
    return src, dst, batch_sizes[batch_sizes > 0]


# --- serialization without pickle ---------------------------------------------------------


def serialize_module(module: BiLSTMCRFModule) -> bytes:
    meta = {"cfg": json.dumps(module.cfg), "built": json.dumps(module.built)}
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return st_save(state, metadata=meta)


def _safetensors_metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def deserialize_module(module: BiLSTMCRFModule, data: bytes, device) -> BiLSTMCRFModule:
    meta = _safetensors_metadata(data)
    cfg = json.loads(meta["cfg"])
    fresh = BiLSTMCRFModule(cfg["hidden_width"], cfg["depth"], cfg["dropout"], cfg.get("decoder", "crf"), cfg.get("skip", False))
    if json.loads(meta["built"]):
        fresh.build(cfg["n_in"], cfg["tags"], cfg["scheme"])
        fresh.load_state_dict(st_load(data))
    return fresh.to(device)


# --- thinc wrapper --------------------------------------------------------------------------


def _convert_inputs(model: Model, inputs, is_train: bool):
    Xs, targets, constraints, confidence = inputs
    ops = model.ops
    lengths = [len(x) for x in Xs]
    # the docs' rows one after another [N, D] (empty docs may have any width: a
    # transformer listener gives (0, 0) for one); the module packs them itself
    x = xp2torch(ops.xp.concatenate([x for x in Xs if len(x)]), requires_grad=is_train)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    kwargs = {}
    if targets is not None:
        kwargs["allowed"] = xp2torch(_pad(ops, targets)).bool()
    if constraints is not None:
        kwargs["constraints"] = xp2torch(_pad(ops, constraints)).bool()
    if confidence is not None and targets is None:
        kwargs["confidence"] = confidence

    def backprop(d_inputs: ArgsKwargs) -> List[Floats2d]:
        return ops.unflatten(torch2xp(d_inputs.args[0]), ops.asarray1i(lengths))

    return ArgsKwargs(args=(x, lengths_t), kwargs=kwargs), backprop


def _pad(ops, seqs):
    """Right-pad 2d arrays [n_i, D] into [B, max n_i, D] (zeros). Empty arrays
    may have any width (a transformer listener gives (0, 0) for an empty doc)."""
    width = max(x.shape[1] for x in seqs)
    out = ops.alloc3f(len(seqs), max(len(x) for x in seqs), width)
    for i, x in enumerate(seqs):
        if len(x):
            out[i, : len(x)] = x
    return out


class Prediction(NamedTuple):
    """What the head predicts with confidence on: tag indices per doc, and
    entities as rows (doc, start, end exclusive, label index) with their
    exact probabilities: the Viterbi path's entities and every candidate."""

    tag_ids: List[Any]
    entities: Any  # int array [N, 4]
    entity_probs: Any  # float array [N]
    candidates: Any  # int array [M, 4]
    candidate_probs: Any  # float array [M]


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    (Xs, targets, _, _), Y = inputs_outputs
    if targets is None:
        if isinstance(Y, tuple):
            paths, *rest = (torch2xp(y) for y in Y)
            return Prediction([paths[i, : len(x)] for i, x in enumerate(Xs)], *rest), lambda dY: None
        paths = torch2xp(Y)
        return [paths[i, : len(x)] for i, x in enumerate(Xs)], lambda dY: None

    def backprop(d_nll: Floats1d) -> ArgsKwargs:
        grad = xp2torch(d_nll).to(Y.device, Y.dtype)
        return ArgsKwargs(args=(Y,), kwargs={"grad_tensors": (grad,)})

    return torch2xp(Y.detach()), backprop


class HeadShim(PyTorchShim):
    """thinc's PyTorchShim, with two fixes for the head:

    * parameter averaging reaches the torch weights: the optimizer keeps the
      averages under (shim id, parameter name) keys, the keys `finish_update`
      uses, but PyTorchShim.use_params looks for "pytorch_{id}_{name}" keys,
      so `nlp.use_params(optimizer.averages)` (spaCy's dev scoring and
      model-best) would pair averaged tok2vec weights with raw head weights;
    * ``lr_scale``: the head learns at this multiple of the optimizer's rate
      (thinc's Optimizer takes an lr_scale per call).
    """

    def __init__(self, *args, lr_scale: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lr_scale = float(lr_scale)

    def finish_update(self, optimizer) -> None:
        for name, param in self._model.named_parameters():
            if param.grad is None:
                continue
            if not self._grad_scaler.found_inf:  # skip the update when a gradient overflowed
                data, _ = optimizer((self.id, name), torch2xp(param.data), torch2xp(param.grad), lr_scale=self.lr_scale)
                new = xp2torch(data, device=param.device)
                # thinc's optimizers update in place (the same memory: nothing to do); were it a new array, copy it
                # in rather than rebind param.data, so the LSTM's weights stay in cuDNN's one flattened buffer
                if new.data_ptr() != param.data.data_ptr():
                    param.data.copy_(new)
            param.grad.zero_()
        self._grad_scaler.update()

    @contextlib.contextmanager
    def use_params(self, params):
        averaged = {name: params[(self.id, name)] for name, _ in self._model.named_parameters() if (self.id, name) in params}
        if not averaged:
            with super().use_params(params):
                yield
            return
        backup = {k: v.clone() for k, v in self._model.state_dict().items()}
        state = dict(backup)
        for name, value in averaged.items():
            state[name] = xp2torch(value, device=backup[name].device).to(backup[name].dtype)
        self._model.load_state_dict(state)
        try:
            yield
        finally:
            self._model.load_state_dict(backup)


def bilstm_crf_head(
    hidden_width: int,
    depth: int,
    dropout: float,
    mixed_precision: bool = False,
    decoder: str = "crf",
    lr_scale: float = 1.0,
    skip: bool = False,
) -> Model:
    """The thinc layer around BiLSTMCRFModule; `build_head` sizes it."""
    module = BiLSTMCRFModule(hidden_width, depth, dropout, decoder, skip)
    wrapper = PyTorchWrapper_v3(
        module,
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        mixed_precision=mixed_precision,
        serialize_model=serialize_module,
        deserialize_model=deserialize_module,
    )
    plain = wrapper.shims[0]
    wrapper.shims[0] = HeadShim(
        module,
        mixed_precision=mixed_precision,
        grad_scaler=plain._grad_scaler,
        serialize_model=serialize_module,
        deserialize_model=deserialize_module,
        lr_scale=lr_scale,
    )
    return Model("bilstm_crf_head", _head_forward, layers=[wrapper], dims={"nI": None, "nO": None})


def _head_forward(model: Model, inputs, is_train: bool):
    Xs, targets, constraints, confidence = inputs
    if not Xs:
        return ([] if targets is None else model.ops.alloc1f(0)), lambda d: []
    if max(len(x) for x in Xs) == 0:  # only empty docs: nothing for torch to do
        if targets is None:
            ids = [model.ops.alloc1i(0) for _ in Xs]
            if confidence is not None:
                none = model.ops.xp.zeros((0, 4), dtype="int64")
                empty = model.ops.xp.zeros((0,), dtype="float64")
                return Prediction(ids, none, empty, none, empty), lambda d: []
            return ids, lambda d: []
        return model.ops.alloc1f(len(Xs)), lambda d: [model.ops.alloc2f(0, x.shape[1]) for x in Xs]
    return model.layers[0](inputs, is_train)


def torch_module(head: Model) -> BiLSTMCRFModule:
    return head.layers[0].shims[0]._model


def build_head(head: Model, n_in: int, tags: Sequence[str], scheme: str) -> None:
    """Size the head for `n_in`-wide token vectors and `tags`, on thinc's device."""
    shim = head.layers[0].shims[0]
    module = BiLSTMCRFModule(**{k: shim._model.cfg[k] for k in ("hidden_width", "depth", "dropout", "decoder", "skip")})
    module.build(n_in, tags, scheme)
    shim._model = module.to(get_torch_default_device())
    head.set_dim("nI", n_in, force=True)
    head.set_dim("nO", len(tags), force=True)

