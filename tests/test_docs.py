"""The docs against the code: no machine paths, and every config key, environment variable,
metric, command line, test reference and decode reason they name exists."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

#: Paths of one machine (a checkout, a scratch dir, a home): they mean nothing to a reader.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|check|home|Users|mnt/data)/[^\s`'\")\]]+")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _ids(paths):
    return [p.name for p in paths]


def _code_blocks(text: str, lang: str | None = None) -> list[str]:
    blocks = re.findall(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    return [body for tag, body in blocks if lang is None or tag == lang]


# ------------------------------------------------------------------ machine paths
def test_the_detector_finds_machine_paths():
    for s in ("see /work/main/docs", "in `/tmp/pytest-of-root/x`", "/root/.cache/pip", "(/check/run1.log)"):
        assert MACHINE_PATH.search(s), s
    for s in ("/etc/streamkm/streamkm.toml", "/var/lib/streamkm/checkpoints", "docs/operations.md", "/metrics",
              "http://127.0.0.1:9108/metrics", "/proc/self/clear_refs", "an emptyDir at /tmp"):
        assert not MACHINE_PATH.search(s), s


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_no_machine_paths_in_the_docs(doc):
    found = [m.group(0) for m in MACHINE_PATH.finditer(_text(doc))]
    assert not found, f"{doc.name} names paths of one machine: {found}"


# ------------------------------------------------------------------ config keys
def _section_model(annotation: typing.Any) -> type[BaseModel] | None:
    for a in typing.get_args(annotation) or (annotation,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def setting_exists(parts: list[str]) -> bool:
    """Whether ``a.b.c`` names a setting (a trailing ``*`` matches a prefix of the last part;
    a leading ``?`` stands for any section: a key of a TOML fragment without its table header)."""
    from streamkm.config import Settings

    if parts[0] == "?":
        return any(setting_exists([section, *parts[1:]]) for section in Settings.model_fields)
    model: type[BaseModel] | None = Settings
    for p in parts:
        if model is None:
            return False
        fields = model.model_fields
        if p.endswith("*"):
            return any(name.startswith(p[:-1]) for name in fields)
        if p not in fields:
            return False
        model = _section_model(fields[p].annotation)
    return True


def config_keys(text: str) -> set[str]:
    """Setting names the text uses: `section.key`, `[section] key = ...`, STREAMKM_SECTION__KEY,
    and the keys of ```toml blocks."""
    from streamkm.config import Settings

    sections = set(Settings.model_fields)
    keys = set()
    for m in re.finditer(r"`([a-z_]+(?:\.[a-z_*]+)+)`", text):
        tok = m.group(1)
        if tok.split(".")[0] in sections and not tok.endswith((".py", ".md", ".toml", ".json", ".npz", ".yaml")):
            keys.add(tok)
    for m in re.finditer(r"`\[([a-z_.]+)\] ([a-z_]+) =", text):
        keys.add(f"{m.group(1)}.{m.group(2)}")
    for m in re.finditer(r"\bSTREAMKM_([A-Z0-9_]+)", text):
        if m.group(1) != "CONFIG":  # the config file's path
            keys.add(".".join(p.lower() for p in m.group(1).split("__")))

    def flatten(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if not prefix and not isinstance(v, dict):
                keys.add(f"?.{k}")  # a fragment ("set, in [kafka]: ...")
            elif isinstance(v, dict) and setting_exists(f"{prefix}{k}".split(".")) and \
                    f"{prefix}{k}" not in ("drift.params",):
                flatten(v, f"{prefix}{k}.")
            else:
                keys.add(f"{prefix}{k}")

    for block in _code_blocks(text, "toml"):
        flatten(tomllib.loads(block), "")
    return keys


def test_the_key_finder_sees_every_form():
    text = ("`model.n_clusters`, `[sequence] lstm_path = \"w.npz\"`, STREAMKM_GROUP__CHUNK_ROWS=5, "
            "`worker.demo_*`\n```toml\n[output]\nformat = \"binary\"\n[sequence.model]\nseed = 1\n```\n"
            "```toml\nssl_cafile = \"ca.pem\"\n```\n")
    keys = config_keys(text)
    assert keys == {"model.n_clusters", "sequence.lstm_path", "group.chunk_rows", "worker.demo_*",
                    "output.format", "sequence.model.seed", "?.ssl_cafile"}
    assert all(setting_exists(k.split(".")) for k in keys)
    assert not setting_exists(["model", "n_clusterz"]) and not setting_exists(["output", "topic", "x"])
    assert not setting_exists(["?", "ssl_cafle"])


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_config_keys_named_in_the_docs_exist(doc):
    missing = sorted(k for k in config_keys(_text(doc)) if not setting_exists(k.split(".")))
    assert not missing, f"{doc.name} names settings that do not exist: {missing}"


# ------------------------------------------------------------------ metrics
@pytest.fixture(scope="module")
def metric_names() -> set[str]:
    from streamkm.ops.metrics import Metrics

    names = set()
    for fam in Metrics().registry.collect():
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
    return names


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_metric_names_in_the_docs_exist(doc, metric_names):
    missing = sorted({m for m in re.findall(r"\bstreamkm_[a-z0-9_]*[a-z0-9]", _text(doc))
                      if m not in metric_names
                      and re.sub(r"_(total|bucket|sum|count|created|info)$", "", m) not in metric_names})
    assert not missing, f"{doc.name} names metrics that do not exist: {missing}"


# ------------------------------------------------------------------ commands
def doc_commands(text: str) -> list[list[str]]:
    """``streamkm ...`` command lines in the code blocks (continuations joined, env prefixes dropped)."""
    out = []
    for block in _code_blocks(text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            s = line.strip().removeprefix("$ ")
            if "streamkm" not in s:
                continue
            try:
                words = shlex.split(s, comments=True)
            except ValueError:
                continue
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words.pop(0)
            if words[:3] == ["python", "-m", "streamkm"]:
                words = ["streamkm", *words[3:]]
            if words[:1] == ["streamkm"] and not (len(words) > 1 and words[1].endswith(":")):  # not output
                out.append(words[1:])
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_command_lines_in_the_docs_parse(doc):
    from streamkm.cli.main import build_parser

    bad = []
    for args in doc_commands(_text(doc)):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(args)
        except SystemExit as exc:
            if exc.code != 0:  # --help exits 0
                bad.append(f"streamkm {' '.join(args)}: {err.getvalue().strip().splitlines()[-1]}")
    assert not bad, f"{doc.name}: command lines the CLI refuses:\n" + "\n".join(bad)


def test_the_command_finder_sees_continued_lines_and_prefixes():
    text = ("```\n$ STREAMKM_X=1 streamkm produce --topic t \\\n    --rate 5\npython -m streamkm run\n"
            "streamkm produce: TLS: refused\n```\n")
    assert doc_commands(text) == [["produce", "--topic", "t", "--rate", "5"], ["run"]]


# ------------------------------------------------------------------ test references
def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_tests_named_in_the_docs_exist(doc):
    bad = []
    for line in _text(doc).splitlines():
        current = None  # `::name` continues the file named last on the line
        for m in re.finditer(r"`(tests/[\w/]+\.py|test_\w+\.py)?(::\w+)?`", line):
            f, name = m.group(1), m.group(2)
            if f:
                hits = [ROOT / f] if f.startswith("tests/") else sorted((ROOT / "tests").rglob(f))
                if not hits or not hits[0].exists():
                    bad.append(f)
                    continue
                current = hits[0]
            if name and current is not None and name[2:] not in _functions(current):
                bad.append(f"{current.relative_to(ROOT)}{name}")
    assert not bad, f"{doc.name} names tests that do not exist: {bad}"


# ------------------------------------------------------------------ decode reasons
def test_formats_md_lists_exactly_the_decode_reasons():
    from streamkm.codec import REASONS

    text = _text(ROOT / "docs" / "formats.md")
    section = text[text.index("## Error reasons"):]
    section = section[:section.index("\n## ", 3)]
    listed = re.findall(r"^\| `(\w+)` +\|", section, flags=re.M)
    assert sorted(listed) == sorted(REASONS)
