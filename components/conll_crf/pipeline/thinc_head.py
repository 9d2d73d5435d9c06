"""The thinc layer around the torch head (head.py), and its serialization.

`bilstm_crf_head` wraps `BiLSTMCRFModule` with thinc's PyTorchWrapper_v3 (with
`HeadShim`, which makes parameter averaging and a learning-rate scale reach the
torch weights), which hands the module the rows of all docs at once. Input:
(token vectors: List[Floats2d], targets or None, constraints or None,
confidence or None). targets: per doc a float32 0/1 array [n_tokens, K], the
tags each token's annotation admits; with them the output is the NLL per doc.
constraints: per doc a float32 0/1 array [n_tokens, K], the tags a token may
take at all (whitespace, sentence boundaries, preset entities; see
doc_constraints.py), applied as -inf emissions in training and prediction.
Without targets the output is the Viterbi tag indices per doc; with confidence
= (candidate_threshold, temperature) it is a `Prediction` that also holds each
predicted entity's exact probability and every candidate entity at or above
the threshold.

The module is built lazily (its sizes are known when the component
initializes); its serialized form is a safetensors blob whose metadata holds
those sizes, so deserializing rebuilds it before the weights load, and loading
never unpickles anything.
"""

import contextlib
import json
import struct
from typing import Any, List, NamedTuple, Sequence

import numpy
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from thinc.api import (
    ArgsKwargs,
    Model,
    PyTorchShim,
    PyTorchWrapper_v3,
    torch2xp,
    xp2torch,
)
from thinc.types import Floats1d, Floats2d
from thinc.util import get_torch_default_device

from .head import BiLSTMCRFModule, upgrade_state_dict

# --- serialization without pickle ---------------------------------------------------------


def serialize_module(module: BiLSTMCRFModule) -> bytes:
    """The module as safetensors bytes, its cfg (sizes, tags) in the metadata."""
    meta = {"cfg": json.dumps(module.cfg), "built": json.dumps(module.built)}
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return st_save(state, metadata=meta)


def _safetensors_metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def deserialize_module(module: BiLSTMCRFModule, data: bytes, device) -> BiLSTMCRFModule:
    """A module rebuilt from `serialize_module`'s bytes (built to its saved sizes first), on `device`."""
    meta = _safetensors_metadata(data)
    cfg = json.loads(meta["cfg"])
    if cfg.get("decoder", "crf") != "crf":
        raise ValueError(f"the saved head uses the decoder {cfg['decoder']!r}, which this version no longer has")
    fresh = BiLSTMCRFModule(cfg["hidden_width"], cfg["depth"], cfg["dropout"], cfg.get("skip", False))
    if json.loads(meta["built"]):
        fresh.build(cfg["n_in"], cfg["tags"], cfg["scheme"])
        fresh.load_state_dict(upgrade_state_dict(st_load(data)))
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
    if is_train:
        kwargs["train"] = True

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
    entity_probs: Any  # float array [N], or [N, G] for G temperatures
    candidates: Any  # int array [M, 4]
    candidate_probs: Any  # float array [M], or [M, G]


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
    """thinc's PyTorchShim, with three fixes for the head:

    * prediction leaves the module's train/eval mode alone: PyTorchShim.predict
      puts the module in eval mode and back in train mode around every call,
      and that mode is shared by all threads, so a thread finishing its
      prediction switched dropout on under another's (different entities
      under a thread pool). The module reads dropout from its ``train``
      argument instead (head.py);
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
        """Apply the optimizer to the torch parameters (at lr_scale), in place, and zero their gradients."""
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

    def predict(self, inputs: ArgsKwargs) -> Any:
        """The module's output without gradients; its mode is neither read nor changed."""
        with torch.no_grad():
            with torch.autocast(device_type="cuda", enabled=self._mixed_precision):
                return self._model(*inputs.args, **inputs.kwargs)

    @contextlib.contextmanager
    def use_params(self, params):
        """Within the block, the torch parameters hold the optimizer's averages of them (when there are any)."""
        averaged = {
            name: params[(self.id, name)] for name, _ in self._model.named_parameters() if (self.id, name) in params
        }
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
    lr_scale: float = 1.0,
    skip: bool = False,
) -> Model:
    """The thinc layer around BiLSTMCRFModule; `build_head` sizes it."""
    module = BiLSTMCRFModule(hidden_width, depth, dropout, skip)
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
                n_temps = len(confidence) - 1  # probabilities [N], or [N, G] for G temperatures
                empty = model.ops.xp.zeros((0,) if n_temps == 1 else (0, n_temps), dtype="float64")
                return Prediction(ids, none, empty, none, empty), lambda d: []
            return ids, lambda d: []
        return model.ops.alloc1f(len(Xs)), lambda d: [model.ops.alloc2f(0, x.shape[1]) for x in Xs]
    return model.layers[0](inputs, is_train)


def torch_module(head: Model) -> BiLSTMCRFModule:
    """The torch module inside a `bilstm_crf_head` layer."""
    return head.layers[0].shims[0]._model


def build_head(head: Model, n_in: int, tags: Sequence[str], scheme: str) -> None:
    """Size the head for `n_in`-wide token vectors and `tags`, on thinc's device."""
    shim = head.layers[0].shims[0]
    module = BiLSTMCRFModule(**{k: shim._model.cfg[k] for k in ("hidden_width", "depth", "dropout", "skip")})
    module.build(n_in, tags, scheme)
    shim._model = module.to(get_torch_default_device())
    head.set_dim("nI", n_in, force=True)
    head.set_dim("nO", len(tags), force=True)


def doc_emissions(module: BiLSTMCRFModule, ops, Xs, constraints) -> List[numpy.ndarray]:
    """The module's emissions [n, K] (float32 on the host) of each doc's token vectors in `Xs`, one doc
    at a time, -inf where `constraints` (per doc a 0/1 array [n, K], or None) forbid a tag."""
    out = []
    device = next(module.parameters()).device
    with torch.no_grad():
        for x, allowed in zip(Xs, constraints):
            em = module.emissions(torch.as_tensor(ops.to_numpy(x)).unsqueeze(0).to(device), torch.tensor([len(x)]))[0]
            if allowed is not None:
                em = em.masked_fill(~torch.as_tensor(ops.to_numpy(allowed) > 0, device=em.device), float("-inf"))
            out.append(em.float().cpu().numpy())
    return out


def rows_by_doc(n_docs: int, rows: numpy.ndarray, probs: numpy.ndarray):
    """Entity rows (doc, start, end, label index) and their probabilities,
    grouped per doc: ([int array [n, 3] of (start, end, label index) per doc],
    [float array [n] (or [n, G]) per doc]), views of the batch's arrays. Arrays, not
    Python lists: a batch's thousands of rows as small lists, alive until its
    last doc is annotated, would be counted and promoted by Python's cyclic
    GC towards its costly full collections; each doc converts its own."""
    rows = numpy.asarray(rows).reshape(-1, 4)
    probs = numpy.asarray(probs, dtype="float64")
    probs = probs.reshape(len(rows), -1) if probs.ndim > 1 else probs.reshape(-1)
    bounds = (
        numpy.searchsorted(rows[:, 0], numpy.arange(n_docs + 1)) if len(rows) else numpy.zeros(n_docs + 1, dtype=int)
    )
    per_rows = [rows[bounds[i] : bounds[i + 1], 1:] for i in range(n_docs)]
    per_probs = [probs[bounds[i] : bounds[i + 1]] for i in range(n_docs)]
    return per_rows, per_probs
