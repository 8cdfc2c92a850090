"""The data of the countermeasure recipe: which sets train a model, select it and evaluate it.

The config names them: ``track`` is the shorthand for an ASVspoof corpus at ``database_path``
(its train, dev and eval splits), ``train_dataset`` / ``dev_dataset`` replace the track's
training and dev data with any registered dataset (``emospoof.corpora.FORMATS``), and ``eval_datasets``,
``emo_dataset`` add evaluation sets. Missing data is found at start-up (``check_paths``) and
reported in one line naming the key or path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_utils import Trial
from emospoof.augment.pipeline import check_augmentation_folders
from emospoof.cm.config import TRACKS
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.corpora import Corpus, dataset_name, read_dataset
from emospoof.corpora.asvspoof import ASVSPOOF5_AUDIO, la_audio_dir, la_protocol_path
from emospoof.corpora.common import DatasetError, read_emotion_labels, with_emotions
from emospoof.corpora.emotional import read_emotional_set
from emospoof.metrics.score_files import AsvScores, read_asv_scores
from models.emotion.branch import check_ser_file

DEV_ASV_SCORES = "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"
TRACK_EVAL_NAMES = {"asvspoof2019_la": "la_eval", "asvspoof5": "asvspoof5_eval"}
EMO_SCORES = "emo_scores.txt"


def track_eval_name(config: dict) -> str:
    """The report name of the track's own eval set."""
    return TRACK_EVAL_NAMES[TRACKS[config.get("track", "LA")]]


def track_spec(config: dict, split: str) -> dict:
    """The dataset spec of the track's ``split`` at ``database_path``."""
    return {"format": TRACKS[config.get("track", "LA")], "path": config["database_path"], "split": split}


def train_specs(config: dict) -> list[dict]:
    named = config.get("train_dataset")
    if named is None:
        return [track_spec(config, "train")]
    return named if isinstance(named, list) else [named]


def dev_spec(config: dict) -> dict:
    return config.get("dev_dataset") or track_spec(config, "dev")


def _read(spec: dict, key: str) -> Corpus:
    """A dataset the config names under ``key``; a missing path is a ConfigError naming the key."""
    if not Path(spec["path"]).exists():
        raise ConfigError(f"config key '{key}': {spec['format']} data not found at {spec['path']}")
    return read_dataset(spec)


def _labelled(config: dict, trials: list[Trial]) -> list[Trial]:
    """The trials with the emotions of the config's ``emotion_labels`` file, when it names one."""
    if "emotion_labels" not in config:
        return trials
    return with_emotions(trials, read_emotion_labels(Path(config["emotion_labels"])))


def training_trials(config: dict) -> list[Trial]:
    """The training trials: every ``train_dataset`` (or the track's train split) in turn, with the
    emotions of ``emotion_labels`` (they place trials in groups and class the emotion inputs)."""
    return _labelled(config, [t for spec in train_specs(config) for t in _read(spec, "train_dataset").trials])


def dev_trials(config: dict) -> list[Trial]:
    """The trials that select the model (``dev_dataset`` or the track's dev split), with the
    emotions of ``emotion_labels``."""
    return _labelled(config, _read(dev_spec(config), "dev_dataset").trials)


def _track_eval_path(config: dict) -> Path:
    """The audio folder of the track's own eval set (ASVspoof 2019 LA or ASVspoof 5 eval)."""
    database = Path(config.get("database_path", "."))
    if TRACKS[config.get("track", "LA")] == "asvspoof5":
        return database / ASVSPOOF5_AUDIO["eval"]
    return la_audio_dir(database, "eval")


def has_track_eval(config: dict) -> bool:
    """Whether the track's own eval set is at ``database_path``."""
    return "database_path" in config and _track_eval_path(config).is_dir()


def has_eval_data(config: dict) -> bool:
    return has_track_eval(config) or "emo_dataset" in config or bool(config.get("eval_datasets"))


def resolve_asv_path(config: dict, key: str, default: str | None) -> Path | None:
    """ASV score file for t-DCF. A path named in the config must exist; an unnamed default may be
    absent (t-DCF is then skipped with a message); ``null`` turns t-DCF off."""
    if key in config and config[key] is None:
        return None
    name = config.get(key, default)
    if name is None or "database_path" not in config:
        return None
    path = Path(config["database_path"]) / name
    if path.is_file():
        return path
    if key in config:
        raise ConfigError(f"config key '{key}': file not found: {path}")
    return None


def load_asv(config: dict, key: str, default: str | None) -> AsvScores | None:
    path = resolve_asv_path(config, key, default)
    return read_asv_scores(path) if path else None


def dev_asv(config: dict) -> AsvScores | None:
    """ASV scores for the dev min t-DCF: the dev dataset's ``asv_scores``, or the track's."""
    if "dev_dataset" in config:
        named = config["dev_dataset"].get("asv_scores")
        return read_asv_scores(named) if named else None
    if TRACKS[config.get("track", "LA")] != "asvspoof2019_la":
        return None
    return load_asv(config, "dev_asv_score_path", DEV_ASV_SCORES)


def load_emotional_set(config: dict) -> Corpus:
    """The set named by ``emo_dataset``; any problem is a ConfigError naming the key."""
    try:
        return read_emotional_set(config["emo_dataset"], config.get("emo_bonafide_system", "ESD"))
    except (OSError, DatasetError) as err:
        raise ConfigError(f"config key 'emo_dataset': {err}") from None


def check_paths(config: dict, splits: list[str]) -> None:
    """The data a run needs exists: the track's (or named) ``splits``, the emotional set and the
    evaluation sets. Only paths are looked at; the protocols are read when used."""
    if "emo_dataset" in config:
        load_emotional_set(config)
    check_augmentation_folders(config, training="train" in splits)
    for i, spec in enumerate(config.get("eval_datasets", [])):
        for key in ("path", "asv_scores", "emotion_labels"):
            if key in spec and not Path(spec[key]).exists():
                raise ConfigError(f"config key 'eval_datasets[{i}].{key}': not found: {spec[key]}")
    for section in ("group_robust", "emotion_calibration"):
        if "ser_config" in config.get(section, {}):
            check_ser_file(config[section]["ser_config"], f"{section}.ser_config")
    if "emotion_labels" in config and not Path(config["emotion_labels"]).is_file():
        raise ConfigError(f"config key 'emotion_labels': file not found: {config['emotion_labels']}")
    if "database_path" in config and not Path(config["database_path"]).is_dir():
        raise ConfigError(f"config key 'database_path': folder not found: {config['database_path']}")
    for split in splits:
        named = {"train": "train_dataset", "dev": "dev_dataset"}.get(split)
        if split == "eval":
            if not has_eval_data(config):
                raise ConfigError(f"nothing to evaluate: no eval data at {_track_eval_path(config)}, "
                                  "no eval_datasets, no emo_dataset")
        elif named in config:
            for spec in train_specs(config) if split == "train" else [config[named]]:
                if not Path(spec["path"]).exists():
                    raise ConfigError(f"config key '{named}': {spec['format']} data not found at {spec['path']}")
        elif TRACKS[config.get("track", "LA")] == "asvspoof2019_la":
            database = config["database_path"]
            for path in (la_protocol_path(database, split), la_audio_dir(database, split)):
                if not path.exists():
                    raise ConfigError(f"{split} data not found: {path} (database_path should be the LA/ folder)")
        else:
            audio = Path(config["database_path"]) / ASVSPOOF5_AUDIO[split]
            if not audio.is_dir():
                raise ConfigError(f"{split} data not found: {audio} (database_path should be the ASVspoof 5 folder)")
    eval_all_best = str_to_bool(config.get("eval_all_best", False), "eval_all_best")
    if "train" in splits and eval_all_best and not has_track_eval(config):
        raise ConfigError(f"config key 'eval_all_best': the track's eval data not found at {_track_eval_path(config)}; "
                          "set it to \"False\" or add the eval data")


@dataclass
class EvalSet:
    """One evaluation set: its report name, trials, ASV scores for t-DCF, score file name, and
    for an emotional set what was expected but not found and its bona fide system."""

    name: str
    trials: list[Trial]
    score_file: str
    asv: AsvScores | None = None
    emotional: bool = False
    missing: list[str] = field(default_factory=list)
    bonafide_system: str = ""
    source: str = ""
    preprocess: str | None = None  # emospoof.augment.preprocess, applied to each recording as it is read


def eval_sets(config: dict, track_only: bool = False) -> list[EvalSet]:
    """Every set ``--eval`` scores: the track's eval set at ``database_path`` (with the emotions
    of ``emotion_labels``), the emotional set (``emo_dataset``) and each of ``eval_datasets``;
    ``track_only``: the first alone."""
    sets = []
    if has_track_eval(config):
        spec = track_spec(config, "eval")
        trials = _labelled(config, read_dataset(spec).trials)
        sets.append(EvalSet(TRACK_EVAL_NAMES[spec["format"]], trials, config.get("eval_output", "eval_scores.txt"),
                            load_asv(config, "asv_score_path", None), source=str(spec["path"]),
                            preprocess=config.get("preprocess")))
    if track_only:
        return sets
    if "emo_dataset" in config:
        emo = load_emotional_set(config)
        sets.append(EvalSet("emotional_set", emo.trials, EMO_SCORES, emotional=True, missing=emo.missing,
                            bonafide_system=emo.bonafide_system, source=str(config["emo_dataset"]),
                            preprocess=config.get("preprocess")))
    for i, spec in enumerate(config.get("eval_datasets", [])):
        corpus = _read(spec, f"eval_datasets[{i}]")
        name = dataset_name(spec)
        sets.append(EvalSet(name, corpus.trials, f"{name}_scores.txt",
                            read_asv_scores(spec["asv_scores"]) if "asv_scores" in spec else None,
                            missing=corpus.missing, source=str(spec["path"]),
                            preprocess=spec.get("preprocess", config.get("preprocess"))))
    return sets
