"""`conll-crf init-config`: a training config for your own data, from the recipes the package ships.

The recipes are the project's configs (conll_crf/configs/*.cfg: `cpu_crf`, the
CPU pipeline; `trf_crf`, the transformer one), so a user with only the wheel
trains what the project trains:

    conll-crf init-config config.cfg [--recipe cpu_crf|trf_crf] [--lang en] [--vectors PATH]
        [--word-table PATH] [--transformer roberta-base] [--source PIPELINE]
    conll-crf convert train.conll train.spacy
    conll-crf convert dev.conll dev.spacy
    python -m spacy train config.cfg --paths.train train.spacy --paths.dev dev.spacy --output model

Labels come from the training data (any labels; the tag scheme of the files is
detected by `convert`). Static vectors are optional: without --vectors the CPU
recipe trains without them (the project's default vectors are an encoder's
input embeddings, built by its `vectors` step); with --vectors, a folder of
spaCy vectors (`spacy init vectors`); --word-table adds a second table of
lower-case words beside them (the project's is GloVe 6B 50d, English, from
scripts/word_table.py). With --source, the config goes on
training an existing pipeline (e.g. en_conll_crf on reviewed corrections):
its components are sourced, so their weights and labels are kept.
"""

from importlib import resources
from pathlib import Path
from typing import Optional

from thinc.api import Config

RECIPES = ("cpu_crf", "trf_crf")


def recipe_text(recipe: str) -> str:
    """The text of a shipped recipe (conll_crf/configs/RECIPE.cfg)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, not {recipe!r}")
    return resources.files("conll_crf").joinpath("configs", f"{recipe}.cfg").read_text(encoding="utf8")


def embed_config(model: dict) -> Optional[dict]:
    """The `embed` block of a model config's tok2vec, however deep wrappers (e.g. DocumentContext.v1's
    `tok2vec`) put it; None for a tok2vec without one (a transformer listener)."""
    node = model.get("tok2vec")
    while isinstance(node, dict):
        if isinstance(node.get("embed"), dict):
            return node["embed"]
        node = node.get("tok2vec")
    return None


def init_config(
    recipe: str = "cpu_crf",
    lang: str = "en",
    vectors: Optional[str] = None,
    transformer: Optional[str] = None,
    word_table: Optional[str] = None,
) -> Config:
    """The recipe's config for `lang`, with `vectors` (a spaCy vectors folder) or none, `word_table` (a
    spaCy vectors folder of lower-case words, stacked beside `vectors`) or none, and for trf_crf
    `transformer` (a Hugging Face name or folder; the recipe's default if None). The recipe's own word
    table (GloVe, English) is not kept unless asked for: the data may be in another language."""
    config = Config().from_str(recipe_text(recipe), interpolate=False)
    config["nlp"]["lang"] = lang
    config["paths"]["vectors"] = vectors
    embed = embed_config(config["components"]["crf_ner"]["model"])
    if embed is not None and "include_static_vectors" in embed:
        embed["include_static_vectors"] = vectors is not None
    if word_table is not None and (embed is None or "word_table" not in embed):
        raise ValueError(f"--word-table applies to a recipe with a word table (cpu_crf), not {recipe}")
    if word_table is not None and vectors is None:
        raise ValueError("--word-table stacks its vectors beside the static vectors: give --vectors too")
    if "word_table" in config["paths"]:
        config["paths"]["word_table"] = word_table
    if transformer is not None:
        if "transformer" not in config["paths"]:
            raise ValueError(f"--transformer applies to the trf_crf recipe, not {recipe}")
        config["paths"]["transformer"] = transformer
    return config


def source_config(source: str, recipe: str = "cpu_crf") -> Config:
    """A config that goes on training the pipeline `source` (a package name or folder): every
    component sourced from it (weights and labels kept), its vectors, the recipe's training
    settings. For corrections from a review: `conll-crf corrections` writes the training data."""
    import spacy

    base = spacy.load(source).config
    config = Config().from_str(recipe_text(recipe), interpolate=False)
    config["nlp"] = {**config["nlp"], "lang": base["nlp"]["lang"], "pipeline": list(base["nlp"]["pipeline"])}
    config["components"] = {name: {"source": source} for name in base["nlp"]["pipeline"]}
    config["paths"]["vectors"] = source
    if "word_table" in config["paths"]:  # a sourced component keeps the table in its weights
        config["paths"]["word_table"] = None
    config["initialize"]["vectors"] = "${paths.vectors}"
    return config


def write_config(path: Path, config: Config, recipe: str) -> None:
    """Write `config` to `path` with a header saying where it came from and how to train with it."""
    header = (
        f"# conll-crf init-config: the {recipe} recipe of spacy-conll-crf. Train with\n"
        "#   python -m spacy train THIS.cfg --paths.train train.spacy --paths.dev dev.spacy --output model\n"
        "# (conll-crf convert FILE OUT.spacy turns CoNLL files into .spacy files)\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + config.to_str(), encoding="utf8")
