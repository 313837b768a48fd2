"""Every file SampleGen writes and later reads back, with its format version, in one table.

Files travel: a run folder is shared, a plug-in bundle outlives the SampleGen that built it. Each
reader checks the version it finds against this table (:func:`check_version`), so a file from a
newer SampleGen is refused in one line that says to upgrade, instead of being misread.

Raise a format's ``current`` when its writer changes in a way an older reader would misread; keep
the old number in ``readable`` while the reader still understands it (``config.py`` shows how run
configs of formats 1 and 2 are read) and say what changed in ``changes``. docs/design.md ("On-disk
formats") holds the same table, and tests/test_formats.py checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samplegen.errors import CheckpointError, SampleGenError


@dataclass(frozen=True)
class FileFormat:
    """One on-disk format.

    name : what the file is, in words (used in error messages)
    file : where it lives, and where its version is kept
    current : the version this SampleGen writes
    readable : the versions this SampleGen reads
    unversioned : the version of a file that carries none (written before versions were recorded);
        None when every such file has one
    redo : what to do with a file of a version no longer read
    changes : what each version changed
    """

    name: str
    file: str
    current: int
    readable: tuple[int, ...]
    unversioned: int | None
    redo: str
    changes: str

    def reads(self, version: object) -> bool:
        """Whether a file carrying ``version`` (None: none) is one this SampleGen reads."""
        found = self.unversioned if version is None else _whole_number(version)
        return found is not None and found in self.readable


RUN_CONFIG = FileFormat(
    "run config", "config.json of a run folder (`format_version`); stats and latents follow it", 9,
    (1, 2, 3, 4, 5, 6, 7, 8, 9), None, "train the run again",
    "2: the `features` section (format 1 runs were trained on the log magnitude); "
    "3: model.frame_hidden, train.log_weight, adam_beta2, lr_warmup_epochs (older runs: their values then); "
    "4: model.log_head (older runs: false); "
    "5: model.log_head_residual (older runs: false, the head wrote the quiet bins' level itself); "
    "6: model.logvar_ceiling (older runs: false, log σ² was clamped at 20); "
    "7: train.pca_lr_scale (older runs: 1, every layer at the same learning rate); "
    "8: model.log_head_hidden (older runs: 0, a linear log head); "
    "9: train.eq_augment_db (older runs: 0, no equaliser)")
MODEL = FileFormat(
    "model weights", "model.safetensors of a run folder (metadata `format_version`)", 1, (1,), 1,
    "train the run again", "1: the first")
TRAIN_STATE = FileFormat(
    "training state", "train_state.safetensors of a run folder (metadata `format_version`)", 1, (1,), 1,
    "start the run again without --resume", "1: the first")
CORPUS_INDEX = FileFormat(
    "run corpus index", "corpus.json of a run folder (`format_version`)", 1, (1,), 1, "train the run again",
    "1: the first (pitch_hz and retuned_cents may be missing)")
LATENT_POINT = FileFormat(
    "latent point", "NAME.latent.json of a generated sound, the instrument or the plug-in (`format_version`)", 1,
    (1,), 1,
    "generate the sound again", "1: the first")
FEATURE_CACHE = FileFormat(
    "feature cache", "index.json of a feature-cache folder (`format`, also hashed into the folder name)", 1, (1,),
    None, "nothing: other versions are computed again, never read", "1: log magnitude (+ IF), float32 or float16")
DECODER_RECIPE = FileFormat(
    "decoder recipe", "decoder.json of `samplegen export onnx` (`format_version`)", 2, (2,), None,
    "export the run again", "2: de-normalisation for the run's magnitude_power, graph files with sizes and SHA-256")
PLUGIN_BUNDLE = FileFormat(
    "plug-in bundle", "bundle.json of `samplegen export plugin` (`format_version`; read by the plug-in, Bundle.h)",
    5, (2, 3, 4, 5), None, "export the plug-in bundle again",
    "1: dense decoder (stack + linear path, frame layer, optional per-frame MLP), PGHI + FGLA; "
    "2: a neighbour-preserving map and knobs moved along rotated, named directions; "
    "3: the decoder's optional log head (`decoder.log_head`); "
    "4: `decoder.log_head.adds_level` (a head that corrects the first branch's level; format 3: false); "
    "5: `decoder.log_head.mlp` (a per-frame MLP beside the head's linear layer; formats 3 and 4: none)")

#: The table, in the order docs/design.md lists it.
FORMATS: tuple[FileFormat, ...] = (RUN_CONFIG, MODEL, TRAIN_STATE, CORPUS_INDEX, LATENT_POINT, FEATURE_CACHE,
                                   DECODER_RECIPE, PLUGIN_BUNDLE)


def _whole_number(value: object) -> int | None:
    """A version as written: an integer, or its digits (safetensors metadata holds strings); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def check_version(fmt: FileFormat, found: object, where: str | Path,
                  error: type[SampleGenError] = CheckpointError) -> int:
    """The version of a file being read (``found``: its version field, None when it has none), once it is
    known to be one this SampleGen reads; otherwise ``error`` with a one-line reason and what to do.

    Example
    -------
    >>> check_version(RUN_CONFIG, 10, "run/config.json")
    Traceback (most recent call last):
    ...
    samplegen.errors.CheckpointError: run/config.json was written by a newer SampleGen (run config format_version 10); this one reads format_version <= 9: upgrade SampleGen
    """
    if found is None:
        if fmt.unversioned is None:
            raise error(f"{where} has no format_version: it is not a SampleGen {fmt.name}")
        return fmt.unversioned
    version = _whole_number(found)
    if version is None:
        raise error(f"{where} has format_version {found!r}, not a whole number: it is damaged or not a SampleGen "
                    f"{fmt.name}")
    if version > fmt.current:
        raise error(f"{where} was written by a newer SampleGen ({fmt.name} format_version {version}); this one reads "
                    f"format_version <= {fmt.current}: upgrade SampleGen")
    if version not in fmt.readable:
        readable = ", ".join(map(str, fmt.readable))
        raise error(f"{where} is {fmt.name} format_version {version}, which this SampleGen does not read (it reads "
                    f"{readable}): {fmt.redo}")
    return version


def markdown_table() -> str:
    """The table as docs/design.md prints it (tests/test_formats.py compares the two)."""
    rows = ["| format | file (version field) | writes | reads | changes |", "|---|---|---:|---|---|"]
    for f in FORMATS:
        readable = ", ".join(map(str, f.readable))
        if f.unversioned is not None:
            readable += f" (none: {f.unversioned})"
        rows.append(f"| {f.name} | {f.file} | {f.current} | {readable} | {f.changes} |")
    return "\n".join(rows)
