"""Render the subset of Helm's template language that deploy/helm/streamkm uses.

There is no helm binary here, so tests/deploy/test_artifacts.py renders the chart
with this module. It implements what templates/_helpers.tpl lists and raises
:class:`TemplateError` (naming the file and line) on every other construct, so the
chart cannot use something these tests would not render and check:

- text, ``{{ PIPELINE }}`` actions, comments, and the ``{{- `` / `` -}}`` trimming of
  adjacent white space;
- ``if`` / ``else`` / ``end`` and top-level ``define "name"`` / ``end`` blocks;
- pipelines ``CMD | FN ARGS | ...`` (the piped value is the last argument);
- operands ``.Values.a.b``, ``.Release.Name|Namespace|Service``,
  ``.Chart.Name|Version|AppVersion``, ``.`` (only as ``include``'s context),
  ``"string"`` and integer literals;
- functions ``quote``, ``default``, ``not``, ``toYaml``, ``toToml``, ``nindent``,
  ``indent``, ``sha256sum``, ``include``.

Where Helm's behaviour shows in the output, it is reproduced:

- values are read the way Helm reads a values file (YAML to JSON to Go), so every
  number is a float64: ``{{ }}`` and ``quote`` print it like Go's ``%v`` (``3``,
  ``0.5``, but ``1e+06`` for a million), ``toToml`` writes it as a TOML float;
- user values merge over values.yaml like ``helm -f``: maps merge, ``null`` deletes;
- ``toYaml`` is JSON then YAML (sorted keys) without the trailing newline; ``toToml``
  (BurntSushi/toml in Helm) puts plain keys before sub-tables and leaves nil out;
- a missing key is nil, false in ``if``. Stricter than Helm: printing nil (Helm
  prints ``<no value>``) or a map or list without ``toYaml`` is an error.
"""

from __future__ import annotations

import copy
import decimal
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TemplateError", "Chart", "render_chart", "render_string", "manifests", "merge_values", "go_format_float",
           "to_toml"]


class TemplateError(Exception):
    """A template uses something outside the supported subset, or fails to render."""


_WS = " \t\r\n"
_KEYWORDS_UNSUPPORTED = {"range", "with", "template", "block", "break", "continue", "return", "nil", "true",
                         "false"}
_RELEASE_FIELDS = {"Name", "Namespace", "Service"}
_CHART_FIELDS = {"Name": "name", "Version": "version", "AppVersion": "appVersion"}


class _Root:
    """The template's ``.`` at the top level (and inside ``include``)."""

    def __repr__(self) -> str:
        return "<root context>"


ROOT = _Root()


# ------------------------------------------------------------------------ lexing
@dataclass
class _Tok:
    kind: str  # str, int, field, dot, ident, pipe
    value: Any


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<str>"(?:[^"\\\n]|\\.)*")
      | (?P<int>-?\d+)(?![\w.])
      | (?P<field>(?:\.[A-Za-z_]\w*)+)
      | (?P<dot>\.)(?![\w.])
      | (?P<ident>[A-Za-z_]\w*)
      | (?P<pipe>\|)
    """,
    re.X,
)


def _tokenize(src: str, where: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            raise TemplateError(f"{where}: unsupported syntax at {src[pos:pos + 20]!r} in {{{{ {src.strip()} }}}}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        text = m.group(kind)
        if kind == "ws":
            continue
        if kind == "str":
            try:
                value: Any = json.loads(text)
            except json.JSONDecodeError:
                raise TemplateError(f"{where}: unsupported escape in string literal {text}") from None
        elif kind == "int":
            value = int(text)
        elif kind == "field":
            value = tuple(text[1:].split("."))
        else:
            value = text
        toks.append(_Tok(kind, value))
    return toks


def _lex(text: str, name: str) -> list[tuple[str, Any, str]]:
    """``("text", s, where)`` and ``("action", tokens, where)`` items, trimming applied."""
    items: list[tuple[str, Any, str]] = []
    i = 0
    trim_next = False
    while True:
        j = text.find("{{", i)
        chunk = text[i:] if j < 0 else text[i:j]
        if trim_next:
            chunk = chunk.lstrip(_WS)
        items.append(("text", chunk, ""))
        if j < 0:
            return items
        where = f"{name}:{text.count(chr(10), 0, j) + 1}"
        k = j + 2
        if text.startswith("-", k):
            if k + 1 >= len(text) or text[k + 1] not in _WS:
                raise TemplateError(f"{where}: '{{{{-' must be followed by a space")
            items[-1] = ("text", items[-1][1].rstrip(_WS), "")
            k += 2
        if text.startswith("/*", k):  # a comment: up to "*/}}" or "*/ -}}"
            end = text.find("*/", k + 2)
            if end < 0:
                raise TemplateError(f"{where}: unterminated comment")
            close = end + 2
            if text.startswith("}}", close):
                trim_next, i = False, close + 2
            elif text.startswith(" -}}", close):
                trim_next, i = True, close + 4
            else:
                raise TemplateError(f"{where}: a comment must end with '*/}}}}' or '*/ -}}}}'")
            continue
        # an action: up to "}}" outside string literals
        p = k
        in_str = False
        while p < len(text):
            c = text[p]
            if in_str:
                if c == "\\":
                    p += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "`":
                raise TemplateError(f"{where}: raw strings are not supported")
            elif text.startswith("}}", p):
                break
            p += 1
        else:
            raise TemplateError(f"{where}: unterminated action")
        body = text[k:p]
        trim_next = False
        if len(body) >= 2 and body.endswith("-") and body[-2] in _WS:
            body, trim_next = body[:-2], True
        elif body.endswith("-"):
            raise TemplateError(f"{where}: '-}}}}' must be preceded by a space")
        items.append(("action", _tokenize(body, where), where))
        i = p + 2


# ------------------------------------------------------------------------ parsing
@dataclass
class _Node:
    kind: str  # text, action, if
    where: str = ""
    text: str = ""
    pipeline: list[list[_Tok]] = field(default_factory=list)
    then: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


def _pipeline(toks: list[_Tok], where: str) -> list[list[_Tok]]:
    cmds: list[list[_Tok]] = [[]]
    for t in toks:
        if t.kind == "pipe":
            cmds.append([])
        else:
            cmds[-1].append(t)
    if any(not c for c in cmds):
        raise TemplateError(f"{where}: empty command in pipeline")
    return cmds


def _parse(text: str, name: str) -> tuple[list[_Node], dict[str, list[_Node]]]:
    """The file's nodes and its ``define`` blocks."""
    top: list[_Node] = []
    defines: dict[str, list[_Node]] = {}
    # stack of (kind, node or define name, list being filled, where)
    stack: list[tuple[str, Any, list[_Node], str]] = []
    cur = top
    for kind, value, where in _lex(text, name):
        if kind == "text":
            if value:
                cur.append(_Node("text", text=value))
            continue
        toks: list[_Tok] = value
        if not toks:
            raise TemplateError(f"{where}: empty action")
        head = toks[0]
        word = head.value if head.kind == "ident" else None
        if word in _KEYWORDS_UNSUPPORTED:
            raise TemplateError(f"{where}: {word!r} is not supported by tests/deploy/minihelm.py")
        if word == "if":
            node = _Node("if", where=where, pipeline=_pipeline(toks[1:], where))
            cur.append(node)
            stack.append(("if", node, cur, where))
            cur = node.then
        elif word == "else":
            if len(toks) > 1:
                raise TemplateError(f"{where}: 'else {toks[1].value}' is not supported (only a plain else)")
            if not stack or stack[-1][0] != "if" or cur is stack[-1][1].otherwise:
                raise TemplateError(f"{where}: else without if")
            cur = stack[-1][1].otherwise
        elif word == "end":
            if len(toks) > 1:
                raise TemplateError(f"{where}: 'end' takes no arguments")
            if not stack:
                raise TemplateError(f"{where}: end without if or define")
            what, obj, parent, _ = stack.pop()
            if what == "define":
                defines[obj] = cur
            cur = parent
        elif word == "define":
            if stack:
                raise TemplateError(f"{where}: define must be at the top level")
            if len(toks) != 2 or toks[1].kind != "str":
                raise TemplateError(f'{where}: expected define "name"')
            if toks[1].value in defines:
                raise TemplateError(f"{where}: template {toks[1].value!r} defined twice")
            body: list[_Node] = []
            stack.append(("define", toks[1].value, cur, where))
            cur = body
        else:
            cur.append(_Node("action", where=where, pipeline=_pipeline(toks, where)))
    if stack:
        raise TemplateError(f"{stack[-1][3]}: {stack[-1][0]} without end")
    return top, defines


# ------------------------------------------------------------------ Go formatting
def go_format_float(f: float) -> str:
    """``fmt.Sprint(f)`` of a float64, i.e. Go's ``strconv.FormatFloat(f, 'g', -1, 64)``.

    The shortest digits that round-trip, in exponent form when the decimal exponent
    is below -4 or at least 6 (the precision Go's shortest ``%g`` uses for that
    choice): 3.0 prints as ``3``, 123456.0 as ``123456``, 1e6 as ``1e+06``.
    """
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digits, exp = decimal.Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits))
    nd = len(ds)
    dp = nd + exp  # position of the decimal point relative to the digits
    x = dp - 1
    neg = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= nd:
        return f"{neg}{ds}{'0' * (dp - nd)}"
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def _strval(v: Any, where: str) -> str:
    """What ``{{ v }}`` prints (Go's ``%v``), for the values this renderer allows."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return go_format_float(v)
    if isinstance(v, int):
        return str(v)
    if v is None:
        raise TemplateError(f"{where}: prints a missing value (Helm would print '<no value>')")
    if isinstance(v, dict | list):
        raise TemplateError(f"{where}: prints a {type(v).__name__} (use toYaml)")
    raise TemplateError(f"{where}: cannot print {v!r}")


def _go_quote(s: str, where: str) -> str:
    if not s.isprintable():
        raise TemplateError(f"{where}: quote of a string with non-printable characters: {s!r}")
    return json.dumps(s, ensure_ascii=False)  # = Go's %q for printable strings


def _jsonish(v: Any) -> Any:
    """A value after Go's json.Marshal and back: integral floats become integers."""
    if isinstance(v, dict):
        return {k: _jsonish(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonish(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    return v


def _to_yaml(v: Any, where: str) -> str:
    if not isinstance(v, dict | list):
        raise TemplateError(f"{where}: toYaml of a {type(v).__name__} (only maps and lists are supported)")
    text = yaml.safe_dump(_jsonish(v), default_flow_style=False, sort_keys=True, allow_unicode=True, width=10**6)
    return text[:-1] if text.endswith("\n") else text


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON escapes are TOML basic-string escapes
    if isinstance(v, float):
        if not math.isfinite(v):
            raise TemplateError(f"{where}: toToml of {v!r}")
        text = format(decimal.Decimal(repr(v)), "f")  # strconv.FormatFloat(v, 'f', -1, 64)
        return text if "." in text else text + ".0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        if any(isinstance(x, dict | list) or x is None for x in v):
            raise TemplateError(f"{where}: toToml of a list of tables, lists or nulls is not supported")
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise TemplateError(f"{where}: toToml of {v!r}")


def to_toml(v: Any, where: str = "toToml") -> str:
    """Helm's ``toToml`` of a map (BurntSushi/toml layout; nil values are left out)."""
    if not isinstance(v, dict):
        raise TemplateError(f"{where}: toToml of a {type(v).__name__} (expected a map)")
    lines: list[str] = []

    def table(d: dict[str, Any], path: list[str]) -> None:
        plain = sorted(k for k, x in d.items() if x is not None and not isinstance(x, dict))
        subs = sorted(k for k, x in d.items() if isinstance(x, dict))
        for k in plain:
            lines.append(f"{'  ' * len(path)}{_toml_key(k)} = {_toml_value(d[k], where)}")
        for k in subs:
            sub = [*path, k]
            lines.append("")
            lines.append(f"{'  ' * len(path)}[{'.'.join(_toml_key(p) for p in sub)}]")
            table(d[k], sub)

    table(v, [])
    while lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- values
def _to_go(v: Any, where: str) -> Any:
    """Values as Helm holds them: str keys, float64 numbers; anything else is refused."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TemplateError(f"{where}: key {k!r} is not a string (quote it)")
            out[k] = _to_go(x, f"{where}.{k}")
        return out
    if isinstance(v, list):
        return [_to_go(x, where) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    raise TemplateError(f"{where}: unsupported value {v!r} ({type(v).__name__})")


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """*override* over *base* as ``helm -f``: maps merge recursively, ``None`` deletes a key."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ------------------------------------------------------------------------ rendering
@dataclass
class Chart:
    """A chart directory: its metadata, default values and parsed templates."""

    path: Path
    meta: dict[str, Any]
    values: dict[str, Any]
    files: dict[str, list[_Node]]
    defines: dict[str, list[_Node]]

    @classmethod
    def load(cls, path: Path) -> Chart:
        meta = yaml.safe_load((path / "Chart.yaml").read_text())
        values = yaml.safe_load((path / "values.yaml").read_text()) or {}
        files: dict[str, list[_Node]] = {}
        defines: dict[str, list[_Node]] = {}
        for tpl in sorted((path / "templates").rglob("*")):
            if tpl.is_dir():
                continue
            rel = tpl.relative_to(path).as_posix()
            if not (tpl.suffix in (".yaml", ".yml", ".tpl") or tpl.name == "NOTES.txt"):
                raise TemplateError(f"{rel}: unexpected file in templates/")
            if tpl.suffix == ".tpl" and not tpl.name.startswith("_"):
                raise TemplateError(f"{rel}: a .tpl file must be a partial (named _*.tpl)")
            nodes, defs = _parse(tpl.read_text(), rel)
            for name, body in defs.items():
                if name in defines:
                    raise TemplateError(f"{rel}: template {name!r} defined twice")
                defines[name] = body
            files[rel] = nodes
        return cls(path, meta, values, files, defines)


@dataclass
class _Ctx:
    chart: Chart
    values: dict[str, Any]
    release: dict[str, str]
    depth: int = 0


def _resolve(path: tuple[str, ...], ctx: _Ctx, where: str) -> Any:
    dotted = "." + ".".join(path)
    root, rest = path[0], path[1:]
    if root == "Release":
        if len(rest) != 1 or rest[0] not in _RELEASE_FIELDS:
            raise TemplateError(f"{where}: {dotted} is not supported")
        return ctx.release[rest[0]]
    if root == "Chart":
        if len(rest) != 1 or rest[0] not in _CHART_FIELDS:
            raise TemplateError(f"{where}: {dotted} is not supported")
        value = ctx.chart.meta.get(_CHART_FIELDS[rest[0]])
        if not isinstance(value, str):
            raise TemplateError(f"{where}: Chart.yaml has no string {_CHART_FIELDS[rest[0]]!r}")
        return value
    if root != "Values":
        raise TemplateError(f"{where}: {dotted} is not supported (only .Values, .Release, .Chart)")
    obj: Any = ctx.values
    for i, key in enumerate(rest):
        if not isinstance(obj, dict):
            raise TemplateError(f"{where}: .{'.'.join(path[:i + 1])} is not a map")
        if key not in obj:
            if i == len(rest) - 1:
                return None
            raise TemplateError(f"{where}: nil pointer evaluating {dotted} (.{'.'.join(path[:i + 2])} is missing)")
        obj = obj[key]
    return obj


def _truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | dict | list):
        return len(v) > 0
    return True


def _empty(v: Any) -> bool:
    return not _truth(v)


def _funcs(ctx: _Ctx, where: str) -> dict[str, tuple[int, Callable[..., Any]]]:
    def need_str(v: Any, fn: str) -> str:
        if not isinstance(v, str):
            raise TemplateError(f"{where}: {fn} expects a string, got {type(v).__name__} {v!r}")
        return v

    def need_int(v: Any, fn: str) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise TemplateError(f"{where}: {fn} expects an integer literal, got {v!r}")
        return v

    def indent(n: Any, s: Any) -> str:
        pad = " " * need_int(n, "indent")
        return pad + need_str(s, "indent").replace("\n", "\n" + pad)

    def include(name: Any, dot: Any) -> str:
        if dot is not ROOT:
            raise TemplateError(f"{where}: include's context must be '.'")
        body = ctx.chart.defines.get(need_str(name, "include"))
        if body is None:
            raise TemplateError(f"{where}: no template {name!r}")
        if ctx.depth > 20:
            raise TemplateError(f"{where}: include nested too deeply")
        ctx.depth += 1
        try:
            return _render_nodes(body, ctx)
        finally:
            ctx.depth -= 1

    def quote(v: Any) -> str:
        if v is None:
            raise TemplateError(f"{where}: quote of a missing value")
        return _go_quote(_strval(v, where), where)

    return {
        "quote": (1, quote),
        "default": (2, lambda d, v: d if _empty(v) else v),
        "not": (1, lambda v: not _truth(v)),
        "toYaml": (1, lambda v: _to_yaml(v, where)),
        "toToml": (1, lambda v: to_toml(v, where)),
        "nindent": (2, lambda n, s: "\n" + indent(n, s)),
        "indent": (2, indent),
        "sha256sum": (1, lambda s: hashlib.sha256(need_str(s, "sha256sum").encode()).hexdigest()),
        "include": (2, include),
    }


def _operand(t: _Tok, ctx: _Ctx, where: str) -> Any:
    if t.kind in ("str", "int"):
        return t.value
    if t.kind == "field":
        return _resolve(t.value, ctx, where)
    if t.kind == "dot":
        return ROOT
    raise TemplateError(f"{where}: {t.value!r} is not a value (functions must come first in a command)")


def _eval(pipeline: list[list[_Tok]], ctx: _Ctx, where: str) -> Any:
    funcs = _funcs(ctx, where)
    value: Any = None
    for i, cmd in enumerate(pipeline):
        head = cmd[0]
        if head.kind == "ident":
            if head.value not in funcs:
                raise TemplateError(f"{where}: function {head.value!r} is not supported by tests/deploy/minihelm.py")
            arity, fn = funcs[head.value]
            args = [_operand(t, ctx, where) for t in cmd[1:]]
            if i > 0:
                args.append(value)
            if len(args) != arity:
                raise TemplateError(f"{where}: {head.value} takes {arity} argument(s), got {len(args)}")
            value = fn(*args)
        else:
            if i > 0:
                raise TemplateError(f"{where}: cannot pipe into {head.value!r} (not a function)")
            if len(cmd) > 1:
                raise TemplateError(f"{where}: {head.value!r} is not a function and takes no arguments")
            value = _operand(head, ctx, where)
    return value


def _render_nodes(nodes: Iterable[_Node], ctx: _Ctx) -> str:
    out: list[str] = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            value = _eval(node.pipeline, ctx, node.where)
            if value is ROOT:
                raise TemplateError(f"{node.where}: prints the root context")
            out.append(_strval(value, node.where))
        else:
            branch = node.then if _truth(_eval(node.pipeline, ctx, node.where)) else node.otherwise
            out.append(_render_nodes(branch, ctx))
    return "".join(out)


def render_chart(chart: Chart | Path, overrides: Iterable[Mapping[str, Any]] = (), *, release: str = "streamkm",
                 namespace: str = "default") -> dict[str, str]:
    """Render every template except partials: ``{"templates/x.yaml": text}`` (NOTES.txt included).

    Parameters
    ----------
    chart : Chart or Path
    overrides : mappings merged over values.yaml in order, like ``helm -f a.yaml -f b.yaml``.
    release, namespace : the release's name and namespace.
    """
    if isinstance(chart, Path):
        chart = Chart.load(chart)
    values = chart.values
    for o in overrides:
        values = merge_values(values, o)
    ctx = _Ctx(chart, _to_go(values, "values"), {"Name": release, "Namespace": namespace, "Service": "Helm"})
    return {name: _render_nodes(nodes, ctx) for name, nodes in chart.files.items()
            if not Path(name).name.startswith("_")}


def render_string(text: str, values: Mapping[str, Any] | None = None, *,
                  defines: str = "", chart_meta: Mapping[str, Any] | None = None) -> str:
    """Render one template text (tests of the renderer itself); *defines* is a partial's text."""
    nodes, defs = _parse(text, "inline")
    _, more = _parse(defines, "_inline.tpl")
    meta = dict(chart_meta or {"name": "c", "version": "0.1.0", "appVersion": "1.0"})
    chart = Chart(Path("."), meta, dict(values or {}), {"inline": nodes}, {**more, **defs})
    ctx = _Ctx(chart, _to_go(dict(values or {}), "values"), {"Name": "r", "Namespace": "default",
                                                               "Service": "Helm"})
    return _render_nodes(nodes, ctx)


def manifests(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects in the rendered templates (empty documents dropped, NOTES.txt skipped)."""
    objs: list[dict[str, Any]] = []
    for name, text in rendered.items():
        if Path(name).name == "NOTES.txt":
            continue
        for doc in re.split(r"(?m)^---\s*$", text):
            try:
                obj = yaml.safe_load(doc)
            except yaml.YAMLError as exc:
                raise TemplateError(f"{name}: rendered text is not YAML: {exc}\n{text}") from None
            if obj is None:
                continue
            if not isinstance(obj, dict):
                raise TemplateError(f"{name}: a rendered document is not a mapping: {obj!r}")
            objs.append(obj)
    return objs
