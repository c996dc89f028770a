"""Readers for the deploy/ artifacts that have no Python library here: the Dockerfile,
its ignore file, the compose file (with Compose's variable interpolation and volume
mounts) and the Settings key tree. Used by tests/deploy/test_artifacts.py.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel

__all__ = [
    "Instruction",
    "parse_dockerfile",
    "dockerignore_excludes",
    "load_compose",
    "Mount",
    "mounts",
    "host_path",
    "settings_key_exists",
    "env_to_key",
    "command_args",
]


# ----------------------------------------------------------------- Dockerfile
@dataclass
class Instruction:
    """One Dockerfile instruction: ``RUN``, its ``--flags`` and the rest of the line."""

    name: str
    flags: dict[str, str]
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form argument (``["a", "b"]``), else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


_DIRECTIVE_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?\s+")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, ``\\`` continuations joined, flags split off.

    Enough of the Dockerfile syntax for the checks (no heredocs, no escape directive).
    """
    out: list[Instruction] = []
    logical = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if not logical:
            start = lineno
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        name, _, rest = logical.partition(" ")
        if "<<" in rest and re.search(r"<<-?\s*['\"]?[A-Z]", rest):
            raise AssertionError(f"line {start}: heredocs are not understood by tests/deploy/parsing.py")
        flags: dict[str, str] = {}
        rest = rest.strip()
        if name.upper() in ("RUN", "COPY", "ADD", "FROM", "HEALTHCHECK"):
            while (m := _DIRECTIVE_FLAG.match(rest)) is not None:
                flags[m.group(1)] = m.group(2) or ""
                rest = rest[m.end():]
        out.append(Instruction(name.upper(), flags, rest.strip(), start))
        logical = ""
    assert not logical, "the Dockerfile ends inside a line continuation"
    return out


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over clean paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):  # zero or more directories
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        c = pattern[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.index("]", i)
            out += pattern[i:j + 1]
            i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(rules_text: str, path: str) -> bool:
    """Whether *path* (relative to the build context) is left out by the ignore rules.

    As Docker reads them: one pattern per line, ``#`` comments, ``!`` re-includes, the
    last matching pattern wins, and a pattern matching a parent directory applies to
    everything below it.
    """
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in rules_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = str(PurePosixPath(line[1:] if negate else line)).lstrip("/")
        rules.append((negate, _ignore_regex(pat)))
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


# -------------------------------------------------------------------- compose
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?P<op>:-)?(?P<default>[^}]*)\}|\$(?P<bare>[A-Za-z_{])")


def load_compose(path: Path) -> dict[str, Any]:
    """The compose file after interpolation with an empty environment.

    ``${VAR:-default}`` becomes the default and ``$$`` a literal ``$``; a variable
    without a default (``$VAR``, ``${VAR}``) is an error, since the file must work
    with no environment set. YAML merge keys (``<<: *anchor``) are resolved by the
    YAML loader, as Compose does.
    """
    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("bare") or not m.group("op"):
            raise AssertionError(f"{path.name}: {m.group(0)!r} has no default (use ${{VAR:-default}})")
        return m.group("default")

    data = yaml.safe_load(_INTERPOLATION.sub(replace, path.read_text()))
    assert isinstance(data, dict)
    return data


@dataclass
class Mount:
    """A service volume: a host path (bind mount, relative to the compose file) or a named volume."""

    source: str
    target: str
    read_only: bool
    host: Path | None


def mounts(compose_dir: Path, service: dict[str, Any]) -> list[Mount]:
    """The service's volumes in the short syntax ``SOURCE:TARGET[:ro]``."""
    out = []
    for spec in service.get("volumes", []):
        assert isinstance(spec, str), f"only the short volume syntax is understood: {spec!r}"
        source, target, *mode = spec.split(":")
        host = (compose_dir / source).resolve() if source.startswith((".", "/")) else None
        out.append(Mount(source, target, "ro" in mode, host))
    return out


def host_path(compose_dir: Path, service: dict[str, Any], container_path: str) -> Path | None:
    """The host file behind *container_path* in *service*, through its bind mounts (None if none)."""
    best: Mount | None = None
    for m in mounts(compose_dir, service):
        if m.host is None:
            continue
        if container_path == m.target or container_path.startswith(m.target.rstrip("/") + "/"):
            if best is None or len(m.target) > len(best.target):
                best = m
    if best is None or best.host is None:
        return None
    rest = container_path[len(best.target):].lstrip("/")
    return best.host / rest if rest else best.host


def command_args(value: str | list[str]) -> list[str]:
    """A compose ``command`` / ``entrypoint`` as an argument list."""
    return list(value) if isinstance(value, list) else shlex.split(value)


# ------------------------------------------------------------------- settings
def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def settings_key_exists(model: type[BaseModel], dotted: str) -> bool:
    """Whether ``section.key`` (any depth) is a field of the settings tree *model*."""
    current: type[BaseModel] | None = model
    for part in dotted.split("."):
        if current is None or part not in current.model_fields:
            return False
        current = _model_of(current.model_fields[part].annotation)
    return True


def env_to_key(name: str, prefix: str = "STREAMKM_") -> str:
    """``STREAMKM_KAFKA__BOOTSTRAP_SERVERS`` -> ``kafka.bootstrap_servers``."""
    assert name.upper().startswith(prefix), name
    return name[len(prefix):].lower().replace("__", ".")
