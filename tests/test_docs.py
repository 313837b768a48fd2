"""The documentation names code that exists: commands parse, paths exist, dotted names import, config keys are real.

Docs that disagree with the code are bugs; these checks catch the mechanical kind (a renamed module, flag,
function or config key) as soon as the code moves, without running anything.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import json
import re
import shlex
from pathlib import Path
from types import ModuleType

from samplegen.app.cli import build_parser
from samplegen.config import RunConfig
from samplegen.spectral.features import FeatureStats

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "samplegen"
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted(PACKAGE.rglob("*.py"))
#: Top-level folders of the repository a doc may name a path in.
REPO_FOLDERS = ("src/", "tests/", "docs/", "scripts/", "benchmarks/", "plugin/", "configs/", ".ci/")
#: Sections of the run configuration, as `--config` JSON and the docs name them (`train.log_weight`).
SECTIONS = {f.name for f in dataclasses.fields(RunConfig)}
#: Short names the docs use for objects that are not modules (`stats.denormalise` is a FeatureStats method).
OBJECTS = {"stats": FeatureStats}
#: Options of other programs (torchrun, pytest) that the docs name alone in prose.
OTHER_PROGRAMS_OPTIONS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",
                          "--standalone", "--hypothesis-show-statistics", "--doctest-modules", "--help",
                          "--parallel"}  # cmake
#: Endings that make `model.safetensors` a file name, not a name in the model package.
FILE_ENDINGS = {"py", "json", "md", "csv", "html", "png", "safetensors", "wav", "sfz", "sf2", "npy", "db", "txt",
                "onnx", "pt", "toml", "latent", "sh", "cpp", "h", "vst3", "lv2", "lock"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def _inline_spans(text: str) -> list[str]:
    """Every `inline code` span outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", prose)


def _command_lines(body: str) -> list[str]:
    """The `samplegen ...` command lines of a shell block (continuations joined), as argv after `samplegen`."""
    lines, joined = body.splitlines(), []
    while lines:
        line = lines.pop(0)
        while line.rstrip().endswith("\\") and lines:
            line = line.rstrip()[:-1] + " " + lines.pop(0)
        joined.append(line)
    commands = []
    for line in joined:
        if not re.match(r"\s*(\.venv/bin/)?samplegen\s|.*-m samplegen\.cli\s", line):
            continue
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word in ("samplegen", ".venv/bin/samplegen") and i == 0:
                commands.append(shlex.join(words[1:]))
            elif word == "samplegen.cli" and i > 0 and words[i - 1] == "-m":
                commands.append(shlex.join(words[i + 1:]))
    return commands


def _doc_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for lang, body in _code_blocks(doc.read_text()):
            if lang in ("", "sh", "bash", "console"):
                found += [(_rel(doc), cmd) for cmd in _command_lines(body)]
    return found


def _leaf_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The sub-command parser that `samplegen WORDS...` reaches, and the verbs walked to it."""
    parser, verbs = build_parser(), []
    for word in words:
        if word.startswith("-"):
            continue
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser, verbs = subs[0].choices[word], verbs + [word]
    return parser, verbs


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    found = _options(parser)
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                found |= _all_options(sub)
    return found


def _without_abbreviations(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser, and every sub-parser, refusing `--temp` for `--temperature`: the docs spell options out."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _without_abbreviations(sub)
    return parser


def test_every_command_line_in_the_docs_parses(capsys):
    commands = _doc_commands()
    assert len(commands) > 40  # the check sees something: the README alone shows dozens of command lines
    wrong, parser = [], _without_abbreviations(build_parser())
    for doc, command in commands:
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit:
            wrong.append(f"{doc}: `samplegen {command}`: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not wrong, "\n".join(wrong)


def test_every_inline_samplegen_command_names_a_verb_and_its_options():
    wrong = []
    for doc in DOCS:
        for span in _inline_spans(doc.read_text()):
            if not re.match(r"(\.venv/bin/)?samplegen [a-z]", span):
                continue
            words = shlex.split(span.replace("…", "X"))[1:]
            parser, verbs = _leaf_parser(words)
            if not verbs:
                wrong.append(f"{_rel(doc)}: `{span}` names no verb")
            known = _options(parser)
            wrong += [f"{_rel(doc)}: `{span}`: {' '.join(verbs)} has no {w}" for w in words
                      if w.startswith("--") and w.split("=")[0] not in known]
    assert not wrong, "\n".join(wrong)


def _script_options() -> set[str]:
    """Options of the repository's own scripts (benchmarks/, scripts/, plugin/), which BENCHMARKS.md names."""
    scripts = [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("plugin/*.py")]
    return {o for f in scripts for o in re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", f.read_text())}


def test_every_option_named_in_prose_exists():
    known = _all_options(build_parser()) | _script_options() | OTHER_PROGRAMS_OPTIONS
    wrong = []
    for doc in DOCS:
        for span in _inline_spans(doc.read_text()):
            option = re.fullmatch(r"(--[a-z][a-z0-9-]*)(?:[ =].*)?", span)
            if option and option.group(1) not in known:
                wrong.append(f"{_rel(doc)}: `{span}`")
    assert not wrong, "no samplegen command or repository script has:\n" + "\n".join(wrong)


def _named_paths(text: str) -> set[str]:
    """Paths in the repository (`tests/test_cli.py`, `plugin/src/Bundle.*`) and in the package (`audio/corpus.py`);
    not a git revision's path (`b3494d4:src/x.py`) nor a media type (`audio/wav`)."""
    in_repo = re.findall(r"(?<![\w/.~:-])((?:src|tests|docs|scripts|benchmarks|plugin|configs|\.ci)/[\w./*-]*[\w/*])",
                         text)
    in_package = re.findall(r"(?<![\w/.~:-])((?:audio|spectral|model|training|generation|evaluation|app)/"
                            r"(?:\w+/)*(?:\w+\.py)?)(?![\w/.])", text)
    return set(in_repo) | {p for p in in_package if p.endswith((".py", "/"))}


def _exists(path: str) -> bool:
    path = path.rstrip("/")
    if path.startswith(REPO_FOLDERS):
        return any(ROOT.glob(path)) or path.startswith("plugin/build")  # the plug-in's build output: not in git
    return (PACKAGE / path).exists()


def test_every_repository_path_named_in_docs_and_docstrings_exists():
    missing = []
    for file in [*DOCS, *SOURCES]:
        text = file.read_text()
        if file.suffix == ".md":
            text = " ".join(_inline_spans(text)) + " " + " ".join(body for _, body in _code_blocks(text))
        missing += [f"{_rel(file)}: {p}" for p in sorted(_named_paths(text)) if not _exists(p)]
    assert not missing, "\n".join(missing)


def test_every_link_in_the_docs_leads_to_a_file_of_the_repository():
    missing = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                missing.append(f"{_rel(doc)}: {target}")
    assert not missing, "\n".join(missing)


def test_nothing_cites_a_file_outside_the_repository():
    outside = []
    for file in [*DOCS, *SOURCES, ROOT / "pyproject.toml", ROOT / "Makefile"]:
        for n, line in enumerate(file.read_text().splitlines(), 1):
            if re.search(r"\.\./shared/|DESIGN\.md|/work/", line):
                outside.append(f"{_rel(file)}:{n}: {line.strip()}")
    assert not outside, "\n".join(outside)


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of `dotted`, then look up the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_dotted_samplegen_name_resolves():
    wrong = []
    for file in [*DOCS, *SOURCES]:
        for dotted in sorted(set(re.findall(r"(?<![\w/.])samplegen(?:\.\w+)+(?![\w/])", file.read_text()))):
            if dotted.endswith((".py", ".cli")) and not dotted.endswith("samplegen.cli"):
                continue
            try:
                _resolve(dotted)
            except (ImportError, AttributeError) as exc:
                wrong.append(f"{_rel(file)}: {dotted} ({exc})")
    assert not wrong, "\n".join(wrong)


def _defined_in(module: ModuleType) -> set[str]:
    """The names a module defines itself (def, class, assignment), not those it imports from elsewhere."""
    tree = ast.parse(Path(str(module.__file__)).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _has(owner: object, name: str) -> bool:
    """Whether `owner.name` names something real: defined by that module (not imported), or a field or attribute."""
    if isinstance(owner, ModuleType):
        here = Path(str(owner.__file__))
        submodule = here.name == "__init__.py" and ((here.parent / f"{name}.py").exists() or (here.parent / name).is_dir())
        return name in _defined_in(owner) or submodule
    fields = {f.name for f in dataclasses.fields(owner)} if dataclasses.is_dataclass(owner) else set()  # type: ignore[arg-type]
    return hasattr(owner, name) or name in fields


def _short_name_owners() -> dict[str, list[object]]:
    """What a short `owner.name` in the docs may mean: a module by its file name, a subpackage, a config section."""
    owners: dict[str, list[object]] = {}
    for path in SOURCES:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        owners.setdefault(parts[-1], []).append(importlib.import_module(".".join(parts)))
    for section in SECTIONS:
        owners.setdefault(section, []).append(getattr(RunConfig(), section))
    for name, obj in OBJECTS.items():
        owners.setdefault(name, []).append(obj)
    return owners


def test_every_short_module_dot_name_in_docs_exists():
    # `audio_io.estimate_pitch_hz`, `files.safe_file_stem`, `train.log_weight`: the owner is a module's file name,
    # a subpackage (which re-exports nothing: `audio.estimate_pitch_hz` is wrong) or a config section.
    owners = _short_name_owners()
    literals = {lit for f in SOURCES for lit in re.findall(r'"([\w.]+)"', f.read_text())}  # `phase.start`: a tensor
    wrong = []
    for doc in DOCS:
        for span in _inline_spans(doc.read_text()):
            for owner, name in re.findall(r"(?<![\w./])([a-z_]+)\.([A-Za-z_]\w*)(?![\w/]|\.\w)", span):
                if (owner in owners and name not in FILE_ENDINGS and f"{owner}.{name}" not in literals
                        and not any(_has(o, name) for o in owners[owner])):
                    wrong.append(f"{_rel(doc)}: `{span}`: no {name} in {owner}")
    assert not wrong, "\n".join(wrong)


def _config_mentions(text: str) -> list[tuple[str, str]]:
    """Every ("section", "key") a doc writes as JSON: `"section": {"key": ...`."""
    pairs = []
    for section, body in re.findall(r'"(\w+)"\s*:\s*\{([^{}]*)\}', text):
        pairs += [(section, key) for key in re.findall(r'"(\w+)"\s*:', body)]
    return pairs


def test_every_config_key_written_in_the_docs_exists():
    mentions = [(_rel(doc), s, k) for doc in DOCS for s, k in _config_mentions(doc.read_text()) if s in SECTIONS]
    assert len(mentions) > 20
    defaults = RunConfig()
    wrong = [f"{doc}: {section}.{key}" for doc, section, key in mentions
             if not hasattr(getattr(defaults, section), key)]
    assert not wrong, "not in RunConfig:\n" + "\n".join(wrong)


def test_the_readme_config_example_shows_the_defaults():
    readme = (ROOT / "README.md").read_text()
    example = next(json.loads(body) for lang, body in _code_blocks(readme) if lang == "json")
    defaults = RunConfig()
    for section, values in example.items():
        for key, value in values.items():
            default = getattr(getattr(defaults, section), key)
            assert value == (list(default) if isinstance(default, tuple) else default), f"{section}.{key}"


def test_the_layout_in_design_md_lists_every_module():
    block = next(body for _, body in _code_blocks((ROOT / "docs" / "design.md").read_text())
                 if body.startswith("src/samplegen/"))
    listed, folder = set(), ""
    for line in block.splitlines()[1:]:
        indent = len(line) - len(line.lstrip())
        first = line.strip().split("  ")[0]
        if indent == 2 and first.endswith("/"):
            folder = first
        elif indent in (2, 4) and ".py" in first:
            for name in re.findall(r"\w+\.py", first):
                listed.add((folder if indent == 4 else "") + name)
    actual = {_rel(p).removeprefix("src/samplegen/") for p in SOURCES if p.name != "__init__.py"}
    assert listed == actual, f"listed, not in src: {sorted(listed - actual)}; in src, not listed: {sorted(actual - listed)}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_sphinx_reference_in_docstrings_resolves():
    # :func:`cents_summary` (in its own module), :data:`samplegen.formats.PLUGIN_BUNDLE` (anywhere).
    wrong = []
    for path in SOURCES:
        module = importlib.import_module(_module_name(path))
        for role, target in re.findall(r":(func|class|data|mod|meth|attr):`~?([\w.]+)`", path.read_text()):
            try:
                if target.startswith("samplegen"):
                    _resolve(target)
                elif role in ("meth", "attr") and "." not in target:  # a method of a class of this module
                    if not any(hasattr(c, target) for c in vars(module).values() if isinstance(c, type)):
                        raise AttributeError(target)
                else:
                    obj: object = module
                    for name in target.split("."):
                        obj = getattr(obj, name)
            except (ImportError, AttributeError):
                wrong.append(f"{_rel(path)}: :{role}:`{target}`")
    assert not wrong, "\n".join(wrong)


def test_every_python_api_call_in_the_docs_fits_its_signature():
    # `api.sample("run", "new", n=4, temperature=0.8)`: the function exists and takes those arguments.
    from samplegen import api

    calls = []
    for doc in DOCS:
        for lang, body in _code_blocks(doc.read_text()):
            if lang != "python":
                continue
            for node in ast.walk(ast.parse(body)):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "api"):
                    calls.append((_rel(doc), node))
    assert calls
    wrong = []
    for doc, call in calls:
        name = call.func.attr  # type: ignore[attr-defined]
        function = getattr(api, name, None)
        try:
            if function is None:
                raise TypeError("no such function")
            inspect.signature(function).bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
        except TypeError as exc:
            wrong.append(f"{doc}: api.{name}(...): {exc}")
    assert not wrong, "\n".join(wrong)


def test_the_readme_lists_every_top_level_key_of_metrics_json():
    from samplegen.evaluation.evaluate import METRICS_KEYS

    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (`[^|]*`) \|", readme, flags=re.M)
    listed = {key for row in rows for key in re.findall(r"`(\w+)", row)}
    assert set(METRICS_KEYS) <= listed, f"metrics.json keys missing from the README's table: {set(METRICS_KEYS) - listed}"


def test_every_dependency_is_explained_in_the_readme():
    # The README's "Dependencies and why" table names each package pyproject.toml installs.
    pyproject = (ROOT / "pyproject.toml").read_text()
    lists = re.findall(r"^(?:dependencies|dev) = \[(.*?)^\]", pyproject, flags=re.S | re.M)
    assert len(lists) == 2
    names = {name.lower() for body in lists for name in re.findall(r'^\s*"([A-Za-z0-9_.-]+)', body, flags=re.M)}
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Dependencies and why"):].split("\n## ")[0]
    first_cells = " ".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| ")).lower()
    listed = set(re.findall(r"[a-z0-9_.-]+", first_cells))
    assert names <= listed, f"in pyproject.toml, not in the README's table: {sorted(names - listed)}"
