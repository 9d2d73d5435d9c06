"""crf_ner's settings: one source, the pipeline's config; the cfg holds only what training learns.

spaCy saves a component's config in config.cfg (what `nlp.config` shows, what
a load-time override changes) and its `cfg` dict beside the weights. A setting
kept in both can disagree, and a write to either can go unread. So the
settings (`SETTINGS`) live in the config only, the component exposes them
read-only, and its cfg (`LearnedCfg`) takes only the labels and the scheme.
"""

import warnings
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional

SETTINGS = (
    "scheme",
    "confidence",
    "spans_key",
    "threshold",
    "thresholds",
    "candidate_threshold",
    "temperature",
    "temperature_unseen",
    "sentence_dropout",
)


class SettingError(AttributeError, KeyError):
    """A write to a crf_ner setting on the component or into its cfg (both would go unread or
    unsaved): an AttributeError for the attribute, a KeyError for the cfg, said plainly."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def how_to_change(name: str, key: str, value) -> str:
    """The error for a write to setting `key` of component `name`: where to set it instead."""
    return (
        f"[{name}] {key} is a setting of the pipeline's config, so that nlp.config says what is in effect; "
        f"it is not changed on the component. Load the pipeline with it: spacy.load(path_or_name, "
        f'config={{"components": {{"{name}": {{"{key}": {value!r}}}}}}}), or set it in config.cfg'
    )


class LearnedCfg(dict):
    """The component's cfg: what training learns and serialization keeps (labels, scheme).
    A setting written into it would be saved and ignored: that is an error, naming the config."""

    KEYS = ("labels", "scheme", "names")

    def __init__(self, pipe: Any, values: Dict) -> None:
        super().__init__(values)
        self._pipe = pipe

    def __setitem__(self, key, value) -> None:
        pipe = self.__dict__.get("_pipe")  # unset while pickle restores the items
        if key == "scheme" and pipe is not None and value != pipe.scheme:
            raise SettingError(how_to_change(pipe.name, key, value))
        if key not in self.KEYS:
            if key in SETTINGS:
                raise SettingError(how_to_change(self._pipe.name, key, value))
            raise SettingError(f"[{self._pipe.name}] cfg holds only {', '.join(self.KEYS)}, not {key!r}")
        super().__setitem__(key, value)

    def update(self, other=(), **kwargs) -> None:
        """What spaCy's from_disk/from_bytes call with the saved cfg. A pipeline saved by
        spacy-conll-crf 0.3 or earlier also has the fitted temperature there: its config's
        temperature is the one in effect, and a warning says how to keep the fitted one."""
        values = dict(other, **kwargs)
        saved_t = values.pop("temperature", None)
        if saved_t is not None and float(saved_t) != self._pipe.temperature:
            warnings.warn(
                f"[{self._pipe.name}] this pipeline was saved by spacy-conll-crf 0.3 or earlier, which kept the "
                f"fitted temperature ({float(saved_t):.4f}) in the component's cfg; the config's temperature "
                f"({self._pipe.temperature}) is the one in effect now. To keep the fitted one, load with "
                f'config={{"components": {{"{self._pipe.name}": {{"temperature": {float(saved_t)}}}}}}} '
                "and save the pipeline again.",
                UserWarning,
                stacklevel=3,
            )
        scheme = values.get("scheme")
        if scheme is not None and scheme != self._pipe.scheme:
            raise ValueError(
                f"[{self._pipe.name}] this pipeline was trained with scheme {scheme!r}, but its config says "
                f"{self._pipe.scheme!r}: the scheme is fixed by training; leave it as trained"
            )
        for key, value in values.items():
            self[key] = value


class ReadOnlySettings:
    """The settings as read-only attributes of the component (a mixin of CRFEntityRecognizer, which
    sets `_settings` from its config and `cfg`); writing one is a SettingError naming the config."""

    def __setattr__(self, key: str, value) -> None:
        if key in SETTINGS and "_settings" in self.__dict__:
            raise SettingError(how_to_change(self.name, key, value))
        super().__setattr__(key, value)

    @property
    def scheme(self) -> str:
        """The tag scheme the CRF learns and is constrained to (fixed once trained)."""
        return self._settings["scheme"]

    @property
    def confidence(self) -> bool:
        """Whether entity probabilities are computed (doc.spans[spans_key], `ent._.crf_prob`)."""
        return self._settings["confidence"]

    @property
    def spans_key(self) -> str:
        """The doc.spans key of the scored spans."""
        return self._settings["spans_key"]

    @property
    def threshold(self) -> float:
        """Predicted entities below this probability stay out of doc.ents."""
        return self._settings["threshold"]

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Per label, the threshold used instead of `threshold` (read-only)."""
        return MappingProxyType(self._settings["thresholds"])

    @property
    def candidate_threshold(self) -> float:
        """The lowest probability of a span in doc.spans[spans_key]."""
        return self._settings["candidate_threshold"]

    @property
    def temperature(self) -> float:
        """Divides the CRF's scores before the probabilities (calibration)."""
        return self._settings["temperature"]

    @property
    def temperature_unseen(self) -> Optional[float]:
        """The temperature of entities whose text was never a training entity (None: `temperature`)."""
        return self._settings["temperature_unseen"]

    @property
    def training_names(self) -> frozenset:
        """The texts of the training data's entities (collected by `initialize`)."""
        names = self.cfg.get("names") or []
        if self._names[0] is not names:
            self._names = (names, frozenset(names))
        return self._names[1]

    @property
    def sentence_dropout(self) -> float:
        """In training, the fraction of unsplit examples trained without the gold sentence starts."""
        return self._settings["sentence_dropout"]
