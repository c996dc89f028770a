"""Every command's --help is plain text: no reST or Markdown markup from docstrings."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from streamkm.cli.main import build_parser

#: What reST / Markdown markup looks like in a help text, by name.
MARKUP = {
    "backticks (``code``, `code`, :role:`x`)": re.compile(r"`"),
    "a reST role (:class:, :func:, ...)": re.compile(r":[a-z]+:(?=\S)"),
    "**strong**": re.compile(r"(?<![\w*])\*\*(?=\S)[^*\n]+(?<=\S)\*\*(?![\w*])"),
    "*emphasis*": re.compile(r"(?<![\w*])\*(?=[^\s*])[^*\n]*(?<=[^\s*])\*(?![\w*])"),
    "a Markdown link": re.compile(r"\[[^\]\n]+\]\([^)\n]+\)"),
    "a reST directive (.. note::)": re.compile(r"^\s*\.\. [\w-]+::", re.M),
    "a Markdown heading": re.compile(r"^#{1,6} \S", re.M),
    "a reST substitution or link (|name|, `x`_)": re.compile(r"\|\w+\||`_"),
}


def markup_in(text: str) -> list[str]:
    """``name: excerpt`` for each kind of markup found in *text*."""
    found = []
    for name, rx in MARKUP.items():
        m = rx.search(text)
        if m:
            a, b = max(0, m.start() - 30), m.end() + 30
            found.append(f"{name}: ...{text[a:b]!r}...")
    return found


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """``(command line, parser)`` of the top-level command and every (nested) subcommand."""
    out = []

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        out.append((" ".join(["streamkm", *path]), p))
        for action in p._actions:  # noqa: SLF001 (argparse has no public walk)
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])

    walk(build_parser(), [])
    return out


@pytest.mark.parametrize("sample", [
    "see ``streamkm.cluster`` for details", "uses :class:`ModelFollower`", "the `x` field",
    "this is **important**", "this is *important* here", "see [docs](docs/operations.md)",
    ".. note:: careful", "# Heading", "the |version| string",
])
def test_the_detector_finds_markup(sample):
    assert markup_in(sample), sample


@pytest.mark.parametrize("sample", [
    "rows * dim floats", "PATH.npz (centers, weights, ids)", "'streamkm record'", "host:port[,host:port]",
    "a *.skmrec file", "STREAMKM_MODEL__N_CLUSTERS=8", "sequence.lstm_path", "2**20 bytes",
])
def test_the_detector_leaves_plain_text_alone(sample):
    assert not markup_in(sample), markup_in(sample)


def test_every_help_text_is_plain():
    parsers = all_parsers()
    names = {name for name, _ in parsers}
    assert {"streamkm run", "streamkm config check", "streamkm checkpoint inspect", "streamkm model show",
            "streamkm model export", "streamkm produce", "streamkm record", "streamkm lstm train",
            "streamkm lstm info"} <= names
    bad = {name: found for name, p in parsers if (found := markup_in(p.format_help()))}
    assert not bad, "markup in --help:\n" + "\n".join(f"{n}: {f}" for n, fs in bad.items() for f in fs)


def test_format_help_is_what_the_command_prints(monkeypatch):
    # what the test above walks is what `--help` prints (same parser, same wrapping)
    monkeypatch.setenv("COLUMNS", "100")
    out = subprocess.run([sys.executable, "-m", "streamkm", "model", "export", "--help"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout == dict(all_parsers())["streamkm model export"].format_help()
