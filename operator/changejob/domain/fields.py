"""Field paths: kubectl's JSONPath dialect, compiled once and evaluated per watch event.

A CTJ names the parts of an object it cares about with expressions such as ``data``,
``data['app.properties']``, ``spec.template.spec.containers[*].image`` or
``status.conditions[?(@.type=="Ready")].status``. Every watch event of every watched object
evaluates them, so :func:`compile_path` parses an expression once (and caches it) into a
:class:`FieldPath` whose ``extract`` is specialised for the expression:

- paths made only of names and indexes (the common case) walk the object in a tight loop and
  return the single value found;
- paths with ``[*]``, ``.*``, filters, slices, unions or recursive descent (``..``) return the list
  of all matches.

Either way :data:`ABSENT` means "nothing matched", which is different from a matched ``null`` or a
matched empty list or map, so hashes tell the three apart.

Maps are always traversed in sorted key order (by ``[*]``, filters over maps and ``..``) so the
result never depends on the order keys arrived in.

The expression ``*`` is special: it selects the whole object without ``status`` and without the
metadata the API server changes on its own (see :func:`without_volatile`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

__all__ = [
    "ABSENT",
    "WHOLE_OBJECT",
    "FieldPath",
    "InvalidFieldPath",
    "compile_path",
    "without_volatile",
]

WHOLE_OBJECT: Final = "*"

# Server-maintained metadata: it changes without anybody changing the object's content.
VOLATILE_METADATA: Final = frozenset(
    {
        "resourceVersion",
        "managedFields",
        "generation",
        "uid",
        "creationTimestamp",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
# Annotations that controllers or clients write as a consequence of a change already seen: the
# deployment controller bumps `deployment.kubernetes.io/revision` right after every template change
# (counting it would trigger twice per rollout), and kubectl's last-applied copy only restates the
# spec. Selecting them explicitly in `fields` still works.
VOLATILE_ANNOTATIONS: Final = frozenset(
    {
        "deployment.kubernetes.io/revision",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
)
# Top-level keys left out of the whole object. `apiVersion` and `kind` carry no content of their own
# (the CTJ already names them) and the API server omits them from the items of a list response while
# watch events carry them: keeping them would make a relist look like a change.
DROPPED_TOP_LEVEL: Final = frozenset({"status", "apiVersion", "kind"})

_NAME_STOP: Final = frozenset(".[")
_NAME_FORBIDDEN: Final = frozenset("]()'\"{}@?,$=!<>&| \t\r\n")
_OPERATOR_CHARS: Final = frozenset("=!<>~&|")
_OPERATORS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})


class _Absent:
    """Type of :data:`ABSENT`; a singleton that survives copying and pickling."""

    __slots__ = ()
    _instance: ClassVar[_Absent | None] = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "absent"

    def __reduce__(self) -> str:
        return "ABSENT"

    def __copy__(self) -> _Absent:
        return self

    def __deepcopy__(self, memo: object) -> _Absent:
        return self


ABSENT: Final[object] = _Absent()
"""What :meth:`FieldPath.extract` returns when the path matches nothing."""


class InvalidFieldPath(ValueError):  # noqa: N818 - the name is part of the package's API
    """An expression that is not a valid field path; the message says what is wrong and where."""

    def __init__(self, expr: str, reason: str, position: int | None = None) -> None:
        where = "" if position is None else f" at position {position}"
        super().__init__(f"invalid field path {_quote(expr)}: {reason}{where}")
        self.expr = expr
        self.reason = reason
        self.position = position


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------------
# Whole object


def without_volatile(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Return the object minus ``status``, ``apiVersion``/``kind`` and volatile metadata.

    Volatile metadata is what the API server rewrites on its own: ``resourceVersion``,
    ``managedFields``, ``generation``, ``uid``, ``creationTimestamp``, ``selfLink``,
    ``deletionTimestamp`` and ``deletionGracePeriodSeconds``; and the annotations in
    ``VOLATILE_ANNOTATIONS``. Labels, other annotations, owner references and finalizers stay:
    changing them is a change. The input is not modified; nested values are
    shared with it (the result is only serialised, never mutated).
    """
    # Unrolled pops on shallow copies: this runs for every watch event of every watched object.
    out = dict(obj)
    pop = out.pop
    pop("status", None)
    pop("apiVersion", None)
    pop("kind", None)
    metadata = out.get("metadata")
    if metadata.__class__ is dict or isinstance(metadata, Mapping):
        kept = dict(metadata)
        drop = kept.pop
        drop("resourceVersion", None)
        drop("managedFields", None)
        drop("generation", None)
        drop("uid", None)
        drop("creationTimestamp", None)
        drop("selfLink", None)
        drop("deletionTimestamp", None)
        drop("deletionGracePeriodSeconds", None)
        annotations = kept.get("annotations")
        if annotations and not VOLATILE_ANNOTATIONS.isdisjoint(annotations):
            kept["annotations"] = {k: v for k, v in annotations.items() if k not in VOLATILE_ANNOTATIONS}
        out["metadata"] = kept
    return out


# --------------------------------------------------------------------------------------------------
# Compiled steps. Simple paths become a tuple of keys (str) and indexes (int); every other path a
# tuple of steps, each mapping a list of matched nodes to the next list of matched nodes.

_Nodes = list[Any]
_Step = Callable[[_Nodes], _Nodes]
_Walk = Callable[[Any], Any]

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_NO_CHILDREN: Final[tuple[Any, ...]] = ()


def _is_list(node: object) -> bool:
    return isinstance(node, list | tuple)


def _children(node: Any) -> Sequence[Any]:
    """A list's items, or a map's values in sorted key order; nothing for a scalar.

    The caller must not modify the result: for a list it is the list itself.
    """
    cls = node.__class__
    if cls is list or cls is tuple:
        items: Sequence[Any] = node
        return items
    if cls is dict:
        return [node[key] for key in sorted(node)]
    if cls in _SCALARS:
        return _NO_CHILDREN
    if isinstance(node, Mapping):
        return [node[key] for key in sorted(node)]
    if isinstance(node, Sequence) and not isinstance(node, str | bytes):
        return node
    return _NO_CHILDREN


def _walker(keys: tuple[str | int, ...]) -> _Walk:
    """Follow names and indexes from a node; any miss (missing key, wrong type) gives ABSENT."""
    if all(isinstance(key, str) for key in keys):
        names = keys

        def walk_names(node: Any) -> Any:
            try:
                for name in names:
                    node = node[name]
            except (KeyError, TypeError, IndexError):
                return ABSENT
            return node

        return walk_names

    def walk(node: Any) -> Any:
        try:
            for key in keys:
                if key.__class__ is int and not _is_list(node):
                    return ABSENT  # an index applies to lists only, never to strings or maps
                node = node[key]
        except (KeyError, TypeError, IndexError):
            return ABSENT
        return node

    return walk


def _walk_step(keys: tuple[str | int, ...]) -> _Step:
    walk = _walker(keys)

    def step(nodes: _Nodes) -> _Nodes:
        out: _Nodes = []
        for node in nodes:
            value = walk(node)
            if value is not ABSENT:
                out.append(value)
        return out

    return step


def _union_step(selectors: tuple[str | int, ...]) -> _Step:
    walks = tuple(_walker((selector,)) for selector in selectors)

    def step(nodes: _Nodes) -> _Nodes:
        out: _Nodes = []
        for node in nodes:
            for walk in walks:
                value = walk(node)
                if value is not ABSENT:
                    out.append(value)
        return out

    return step


def _slice_step(window: slice) -> _Step:
    def step(nodes: _Nodes) -> _Nodes:
        out: _Nodes = []
        for node in nodes:
            if _is_list(node):
                out.extend(node[window])
        return out

    return step


def _wildcard_step(nodes: _Nodes) -> _Nodes:
    if len(nodes) == 1:
        return list(_children(nodes[0]))
    out: _Nodes = []
    for node in nodes:
        out.extend(_children(node))
    return out


def _descendants(node: Any, out: _Nodes) -> None:
    out.append(node)
    for child in _children(node):
        _descendants(child, out)


def _descend_step(nodes: _Nodes) -> _Nodes:
    out: _Nodes = []
    for node in nodes:
        _descendants(node, out)
    return out


def _filter_step(predicate: Callable[[Any], bool]) -> _Step:
    def step(nodes: _Nodes) -> _Nodes:
        out: _Nodes = []
        for node in nodes:
            out.extend([child for child in _children(node) if predicate(child)])
        return out

    return step


# --------------------------------------------------------------------------------------------------
# Filters: [?(@.path)], [?(@.path OP literal)], [?(@.path OP @.other)]

_Operand = Callable[[Any], _Nodes]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(left: object, op: str, right: object) -> bool:
    """Compare two JSON values the way JSON sees them: ``true`` is not ``1``, ``"1"`` is not ``1``."""
    if _is_number(left) and _is_number(right):
        pass
    elif type(left) is not type(right):
        return op == "!="
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if not (_is_number(left) or isinstance(left, str)):
        return False
    a: Any = left
    b: Any = right
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _make_predicate(left: _Operand, op: str | None, right: _Operand) -> Callable[[Any], bool]:
    if op is None:
        return lambda node: bool(left(node))

    def predicate(node: Any) -> bool:
        rights = right(node)
        return any(_compare(a, op, b) for a in left(node) for b in rights)

    return predicate


# --------------------------------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive-descent parser over ``expr[start:end]``; positions in errors index into ``expr``."""

    def __init__(self, expr: str, start: int, end: int) -> None:
        self.expr = expr
        self.pos = start
        self.end = end

    def fail(self, reason: str, position: int | None = None) -> InvalidFieldPath:
        return InvalidFieldPath(self.expr, reason, self.pos if position is None else position)

    def peek(self, offset: int = 0) -> str:
        at = self.pos + offset
        return self.expr[at] if at < self.end else ""

    def parse_path(self, *, relative: bool) -> list[str | int | _Step]:
        """Parse a whole path: ``a.b[0]``, ``.a.b``, ``..a``, ``[*].b`` ...

        Each returned item is a key (str), an index (int) or a multi-match step (callable).
        """
        steps: list[str | int | _Step] = []
        if self.pos >= self.end:
            if relative:
                return steps
            raise self.fail("empty path")
        if self.peek() not in ".[":
            steps.append(self.parse_name())
        while self.pos < self.end:
            char = self.peek()
            if char == "[":
                steps.append(self.parse_bracket())
            elif char == "." and self.peek(1) == ".":
                start = self.pos
                self.pos += 2
                if self.peek() == ".":
                    raise self.fail("too many dots", start)
                if self.pos >= self.end:
                    raise self.fail("recursive descent '..' needs a field name or bracket after it", start)
                steps.append(_descend_step)
                if self.peek() != "[":
                    steps.append(self.parse_name())
            elif char == ".":
                self.pos += 1
                if self.pos >= self.end:
                    raise self.fail("empty segment at end of path", self.pos - 1)
                if self.peek() == "[":
                    raise self.fail("empty segment before '['", self.pos - 1)
                steps.append(self.parse_name())
            elif char == "]":
                raise self.fail("unbalanced bracket ']'")
            else:
                raise self.fail(f"unexpected character {char!r}")
        return steps

    def parse_name(self) -> str | _Step:
        start = self.pos
        chars: list[str] = []
        star = False
        while self.pos < self.end:
            char = self.peek()
            if char == "\\":
                if self.pos + 1 >= self.end:
                    raise self.fail("dangling escape '\\'")
                chars.append(self.peek(1))
                self.pos += 2
                continue
            if char in _NAME_STOP:
                break
            if char in _NAME_FORBIDDEN:
                if char == "]":
                    raise self.fail("unbalanced bracket ']'")
                raise self.fail(f"unexpected character {char!r} in field name")
            star = star or char == "*"
            chars.append(char)
            self.pos += 1
        name = "".join(chars)
        if not name:
            raise self.fail("empty segment", start)
        if star:
            if name != "*":
                raise self.fail("'*' must be a whole segment (escape it as '\\*' for a literal star)", start)
            return _wildcard_step
        return name

    def find_closing_bracket(self, opening: int) -> int:
        """Index of the ``]`` closing the ``[`` at ``opening``, skipping quotes and parentheses."""
        depth = 0
        quote = ""
        i = opening + 1
        while i < self.end:
            char = self.expr[i]
            if quote:
                if char == "\\":
                    i += 1
                elif char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            elif char == "[":
                depth += 1
            elif char == "]":
                if depth == 0:
                    return i
                depth -= 1
            i += 1
        if quote:
            raise InvalidFieldPath(self.expr, "unterminated string", opening)
        raise InvalidFieldPath(self.expr, "unbalanced bracket '['", opening)

    def parse_bracket(self) -> str | int | _Step:
        opening = self.pos
        closing = self.find_closing_bracket(opening)
        self.pos = closing + 1
        inner = _Parser(self.expr, opening + 1, closing)
        inner.skip_spaces()
        inner.end = inner.rstrip_end()
        if inner.pos >= inner.end:
            raise InvalidFieldPath(self.expr, "empty brackets", opening)
        char = inner.peek()
        if char == "*" and inner.end - inner.pos == 1:
            return _wildcard_step
        if char == "?":
            return inner.parse_filter()
        if char == "(":
            raise inner.fail("script expressions are not supported (did you mean '[?(...)]'?)")
        selectors = inner.parse_selectors()
        if len(selectors) == 1:
            only = selectors[0]
            return only if isinstance(only, str | int) else _slice_step(only)
        if any(isinstance(s, slice) for s in selectors):
            raise InvalidFieldPath(self.expr, "a slice cannot be part of a union", opening)
        return _union_step(tuple(s for s in selectors if not isinstance(s, slice)))

    def skip_spaces(self) -> None:
        while self.pos < self.end and self.expr[self.pos].isspace():
            self.pos += 1

    def rstrip_end(self) -> int:
        end = self.end
        while end > self.pos and self.expr[end - 1].isspace():
            end -= 1
        return end

    def parse_selectors(self) -> list[str | int | slice]:
        """Parse ``0``, ``-1``, ``1:3``, ``::2``, ``'key'``, ``"key"`` or a comma-separated union."""
        selectors: list[str | int | slice] = []
        while True:
            self.skip_spaces()
            char = self.peek()
            if not char or char == ",":
                raise self.fail("empty selector in brackets")
            if char in "'\"":
                selectors.append(self.parse_string())
            else:
                selectors.append(self.parse_index_or_slice())
            self.skip_spaces()
            if self.pos >= self.end:
                return selectors
            if self.peek() != ",":
                raise self.fail(f"unexpected character {self.peek()!r} in brackets")
            self.pos += 1

    def parse_string(self) -> str:
        quote = self.peek()
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < self.end:
            char = self.peek()
            if char == "\\" and self.pos + 1 < self.end:
                chars.append(self.peek(1))
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        raise self.fail("unterminated string", start)

    def parse_index_or_slice(self) -> int | slice:
        start = self.pos
        while self.pos < self.end and self.peek() not in ",":
            self.pos += 1
        text = self.expr[start : self.pos].strip()
        if ":" not in text:
            return self.parse_int(text, start, what="index")
        parts = text.split(":")
        if len(parts) > 3:
            raise self.fail(f"invalid slice {text!r}", start)
        bounds = [self.parse_int(p.strip(), start, what="slice bound") if p.strip() else None for p in parts]
        if len(bounds) == 3 and bounds[2] == 0:
            raise self.fail("slice step must not be zero", start)
        return slice(*bounds)

    def parse_int(self, text: str, position: int, *, what: str) -> int:
        digits = text[1:] if text[:1] in "+-" else text
        if not digits.isdigit() or not digits.isascii():
            expected = "an index, a slice, a quoted key, '*' or a filter '?(...)'"
            raise self.fail(f"invalid {what} {text!r}: expected {expected}", position)
        return int(text)

    # ---- filters

    def parse_filter(self) -> _Step:
        start = self.pos
        self.pos += 1  # '?'
        self.skip_spaces()
        if self.peek() != "(" or self.expr[self.end - 1] != ")":
            raise self.fail("a filter must look like [?(@.field OP value)]", start)
        body = _Parser(self.expr, self.pos + 1, self.end - 1)
        body.skip_spaces()
        body.end = body.rstrip_end()
        if body.pos >= body.end:
            raise body.fail("empty filter", start)
        left = body.parse_operand()
        body.skip_spaces()
        if body.pos >= body.end:
            return _filter_step(_make_predicate(left, None, left))
        op_start = body.pos
        while body.pos < body.end and body.peek() in _OPERATOR_CHARS:
            body.pos += 1
        op = self.expr[op_start : body.pos]
        if not op:
            raise body.fail(f"unexpected character {body.peek()!r} in filter (expected an operator)")
        if op not in _OPERATORS:
            raise body.fail(f"unknown operator {op!r} (use ==, !=, <, <=, > or >=)", op_start)
        body.skip_spaces()
        if body.pos >= body.end:
            raise body.fail(f"missing value after operator {op!r}")
        right = body.parse_operand()
        body.skip_spaces()
        if body.pos < body.end:
            raise body.fail(f"unexpected text {self.expr[body.pos : body.end]!r} in filter")
        return _filter_step(_make_predicate(left, op, right))

    def parse_operand(self) -> _Operand:
        """Parse ``@``, ``@.path``, ``@['key']`` or a literal (string, number, true/false/null)."""
        char = self.peek()
        if char == "@":
            self.pos += 1
            start = self.pos
            while self.pos < self.end and self.peek() not in _OPERATOR_CHARS and not self.peek().isspace():
                if self.peek() == "[":
                    self.pos = self.find_closing_bracket(self.pos) + 1
                elif self.peek() in "'\"":
                    raise self.fail("unexpected quote in filter path")
                else:
                    self.pos += 1
            sub = _Parser(self.expr, start, self.pos)
            return _as_operand(sub.parse_path(relative=True))
        if char in "'\"":
            text = self.parse_string()
            return lambda _node: [text]
        start = self.pos
        while self.pos < self.end and self.peek() not in _OPERATOR_CHARS and not self.peek().isspace():
            self.pos += 1
        word = self.expr[start : self.pos]
        value = _parse_literal(word)
        if value is ABSENT:
            raise self.fail(
                f"invalid filter value {word!r}: expected @.path, a quoted string, a number, true, false or null",
                start,
            )
        return lambda _node: [value]


_LITERALS: Final[Mapping[str, object]] = {"true": True, "false": False, "null": None}


def _parse_literal(word: str) -> object:
    if word in _LITERALS:
        return _LITERALS[word]
    try:
        return int(word)
    except ValueError:
        pass
    try:
        number = float(word)
    except ValueError:
        return ABSENT
    return number if math.isfinite(number) else ABSENT


def _as_operand(steps: list[str | int | _Step]) -> _Operand:
    return _multi_extractor(steps)


# --------------------------------------------------------------------------------------------------
# Extraction


_Parsed = list[str | int | _Step]


def _split_prefix(steps: _Parsed) -> tuple[tuple[str | int, ...], tuple[_Step, ...]]:
    """Split parsed steps into the leading names/indexes and the steps after them.

    Runs of names and indexes after the first multi-match step become one walk step each, so a
    path like ``a.b[*].c.d`` costs one walk, one wildcard and one walk per match.
    """
    prefix: list[str | int] = []
    index = 0
    while index < len(steps) and isinstance(steps[index], str | int):
        prefix.append(steps[index])  # type: ignore[arg-type]
        index += 1
    rest: list[_Step] = []
    run: list[str | int] = []
    for step in steps[index:]:
        if isinstance(step, str | int):
            run.append(step)
            continue
        if run:
            rest.append(_walk_step(tuple(run)))
            run = []
        rest.append(step)
    if run:
        rest.append(_walk_step(tuple(run)))
    return tuple(prefix), tuple(rest)


def _multi_extractor(steps: _Parsed) -> Callable[[Any], _Nodes]:
    """Evaluate steps from one node; the list of all matches (empty when nothing matched)."""
    prefix, rest = _split_prefix(steps)
    walk = _walker(prefix)

    def evaluate(node: Any) -> _Nodes:
        start = walk(node)
        if start is ABSENT:
            return []
        nodes: _Nodes = [start]
        for step in rest:
            nodes = step(nodes)
            if not nodes:
                break
        return nodes

    return evaluate


def _list_extractor(steps: _Parsed) -> Callable[[Mapping[str, Any]], Any]:
    evaluate = _multi_extractor(steps)

    def extract(obj: Mapping[str, Any]) -> Any:
        found = evaluate(obj)
        return found if found else ABSENT

    return extract


class FieldPath:
    """A compiled field path. Build it with :func:`compile_path`.

    ``extract(obj)`` returns :data:`ABSENT` when nothing matched; for a path without wildcards,
    filters, slices, unions or ``..`` the single value found; otherwise the list of all matches.
    ``multi`` says which of the two shapes a match has. ``extract`` is an attribute chosen at
    compile time (not a method) so each call is one plain function call.
    """

    __slots__ = ("extract", "multi", "source")

    source: str
    multi: bool
    extract: Callable[[Mapping[str, Any]], Any]

    def __init__(self, source: str, extract: Callable[[Mapping[str, Any]], Any], *, multi: bool) -> None:
        self.source = source
        self.extract = extract
        self.multi = multi

    def __repr__(self) -> str:
        return f"FieldPath({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldPath) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def _body_bounds(expr: str) -> tuple[int, int]:
    """Strip whitespace, kubectl's optional ``{...}`` and a leading ``$``; return the body's bounds."""
    start, end = 0, len(expr)
    while start < end and expr[start].isspace():
        start += 1
    while end > start and expr[end - 1].isspace():
        end -= 1
    if start < end and expr[start] == "{":
        if expr[end - 1] != "}":
            raise InvalidFieldPath(expr, "unbalanced brace '{'", start)
        start, end = start + 1, end - 1
        while start < end and expr[start].isspace():
            start += 1
        while end > start and expr[end - 1].isspace():
            end -= 1
    elif start < end and expr[end - 1] == "}":
        raise InvalidFieldPath(expr, "unbalanced brace '}'", end - 1)
    if start < end and expr[start] == "$":
        start += 1
    return start, end


@functools.lru_cache(maxsize=4096)
def compile_path(expr: str) -> FieldPath:
    """Compile a field path once; raises :class:`InvalidFieldPath` with what is wrong and where."""
    if not isinstance(expr, str):
        raise InvalidFieldPath(repr(expr), "a field path must be a string")
    start, end = _body_bounds(expr)
    if expr[start:end] == WHOLE_OBJECT:
        return FieldPath(expr, without_volatile, multi=False)
    body = expr[start:end]
    if body in ("", "."):
        raise InvalidFieldPath(expr, f"empty path (use {WHOLE_OBJECT!r} for the whole object)")
    parser = _Parser(expr, start, end)
    if body.startswith(".") and not body.startswith(".."):
        parser.pos += 1
    steps = parser.parse_path(relative=False)
    prefix, rest = _split_prefix(steps)
    if not rest:
        return FieldPath(expr, _walker(prefix), multi=False)
    return FieldPath(expr, _list_extractor(steps), multi=True)
