"""The jinja2 sandbox WORKFLOW.md's templates render in, with resource limits.

The file is the repository's (a landed commit can change it), so a template must not be able
to take all the agent's memory: every operator, filter and method that can build a large value
from a small template (`'x' * n`, `9**9**9`, `'%*s' % (n, '')`, `s|center(n)`, `a ~ a` in a
loop, str(a list nested by doubling)) is checked BEFORE it allocates, and refused past
`LIMIT` characters (or `INT_BITS` bits) with a SecurityError (the run's PromptError). Lists,
dicts and sets cannot be changed in place (ImmutableSandboxedEnvironment): `l.extend(l)` would
double one without any operator. CPU time is not bounded here (nested loops of range()).
"""

from __future__ import annotations

import functools
import inspect
import re
from string import Formatter
from typing import Any

from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

LIMIT = 1024 * 1024  # characters (or items) one value may hold: the prompt's own limit
INT_BITS = 100_000  # an int past this cannot even be printed (Python's 4300-digit limit)
_SCALARS = (str, int, float, bool, type(None))
_PERCENT_RE = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def too_big(what: str = "the result") -> SecurityError:
    return SecurityError(f"{what} would be larger than the template's limit ({LIMIT} characters)")


def size(value: Any) -> int:
    """About the characters str(value) takes, counted until past LIMIT (shared parts counted
    once per reference, without walking them again: a list nested by doubling is seen at once)."""
    memo: dict[int, int] = {}

    def walk(item: Any, depth: int) -> int:
        if isinstance(item, str):
            return len(item)
        if isinstance(item, (bytes, bytearray)):
            return 4 * len(item)
        if isinstance(item, bool) or item is None:
            return 5
        if isinstance(item, int):
            return item.bit_length() // 3 + 2
        if isinstance(item, Namespace):
            item = item._Namespace__attrs  # its repr shows them  # noqa: SLF001
        if not isinstance(item, (list, tuple, set, frozenset, dict)):
            return 64  # another object: its repr, about
        key = id(item)
        if key in memo:
            return memo[key]
        if depth > 100:
            raise SecurityError("a value is nested too deeply")
        total = 2
        for part in item:
            total += walk(part, depth + 1) + 2
            if isinstance(item, dict):
                total += walk(item[part], depth + 1) + 2
            if total > LIMIT:
                break
        memo[key] = total
        return total

    return walk(value, 0)


def check(*values: Any) -> int:
    """The size of values together; SecurityError past LIMIT."""
    total = 0
    for value in values:
        total += len(value) if isinstance(value, str) else size(value)
        if total > LIMIT:
            raise too_big()
    return total


def _width(n: Any) -> int:
    if isinstance(n, int) and not isinstance(n, bool):
        if abs(n) > LIMIT:
            raise too_big("a width or count")
        return abs(n)
    return 0


def check_percent(fmt: str, args: Any) -> None:
    """`fmt % args`: the widths and precisions (written or `*`) and the values it formats."""
    values = args if isinstance(args, tuple) else (args,)
    total, i = len(fmt), 0
    for match in _PERCENT_RE.finditer(fmt):
        key, width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for part in (width, precision):
            if part == "*":
                total += _width(values[i] if i < len(values) else 0)
                i += 1
            elif part:
                total += _width(int(part))
        if key is None:
            i += 1
    if total + check(args) > LIMIT:
        raise too_big()


def check_format(fmt: str, args: tuple, kwargs: dict) -> None:
    """`fmt.format(*args, **kwargs)`: widths in the specs (a nested `{}` width: any int given)."""
    total = len(fmt)
    for _, field, spec, _ in Formatter().parse(fmt):
        if field is None or not spec:
            continue
        total += sum(_width(int(n)) for n in re.findall(r"\d+", spec))
        if "{" in spec:
            total += max([_width(v) for v in (*args, *kwargs.values())] or [0])
    if total + check(*args, *kwargs.values()) > LIMIT:
        raise too_big()


def _replace_size(s: Any, old: Any, new: Any, count: Any) -> int:
    if not all(isinstance(v, (str, bytes)) for v in (s, old, new)):
        return 0
    found = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * max(0, len(new) - len(old))


# ----- filters: each checks its arguments, then what it would build ----------------------------

def _join_args(a: dict) -> None:
    a["value"] = items = list(a["value"])
    if isinstance(a["d"], str) and len(a["d"]) * max(len(items) - 1, 0) + check(*items) > LIMIT:
        raise too_big()


def _sum_args(a: dict) -> None:
    a["iterable"] = items = list(a["iterable"])
    if not isinstance(a["start"], (int, float)):
        check(a["start"], *items)


def _indent_size(a: dict) -> int:
    s, width = a["s"], a["width"]
    per_line = len(width) if isinstance(width, str) else _width(width)
    return len(s) + (s.count("\n") + 1) * per_line if isinstance(s, str) else 0


def _wordwrap_size(a: dict) -> int:
    s, width, wrap = a["s"], a["width"], a["wrapstring"] or "\n"
    if not isinstance(s, str) or not isinstance(wrap, str):
        return 0
    lines = len(s) // max(width if isinstance(width, int) else 1, 1) + s.count("\n") + 1
    return len(s) + lines * len(wrap)


def _urlize_size(a: dict) -> int:
    extra = sum(len(a[k]) for k in ("target", "rel") if isinstance(a.get(k), str)) + 64
    value = a["value"]
    return len(value) + (len(value) // 4 + 1) * extra if isinstance(value, str) else 0


_FILTER_SIZES = {
    "center": lambda a: max(len(a["value"]) if isinstance(a["value"], str) else 0, _width(a["width"])),
    "indent": _indent_size,
    "replace": lambda a: _replace_size(a["s"], a["old"], a["new"], a["count"]),
    "wordwrap": _wordwrap_size,
    "urlize": _urlize_size,
    "batch": lambda a: _width(a["linecount"]),
    "slice": lambda a: _width(a["slices"]),
    "tojson": lambda a: size(a["value"]) * (1 + _width(a["indent"] or 0)),
    "truncate": lambda a: _width(a["length"]) + (len(a["end"]) if isinstance(a["end"], str) else 0),
}
_FILTER_ARGS = {"join": _join_args, "sum": _sum_args}


def _guard_filter(name: str, fn: Any) -> Any:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    estimate, prepare = _FILTER_SIZES.get(name), _FILTER_ARGS.get(name)
    # jinja's async-capable filters show the signature without the context jinja passes first.
    passed = getattr(fn, "jinja_pass_arg", None) is not None and signature is not None and \
        next(iter(signature.parameters), None) not in ("eval_ctx", "environment", "env", "context")

    @functools.wraps(fn)  # keeps jinja's pass_context/pass_eval_context marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*(v for v in (*args, *kwargs.values()) if not isinstance(v, _SCALARS) and _plain(v)))
        if name == "format" and args:
            check_percent(str(args[0]) if isinstance(args[0], str) else "", kwargs or tuple(args[1:]))
        if signature is not None and (estimate or prepare):
            first = args[:1] if passed else ()
            bound = signature.bind(*args[len(first):], **kwargs)
            bound.apply_defaults()
            if prepare:
                prepare(bound.arguments)
            if estimate and estimate(bound.arguments) > LIMIT:
                raise too_big()
            return fn(*first, *bound.args, **bound.kwargs)
        return fn(*args, **kwargs)

    return guarded


def _plain(value: Any) -> bool:
    """A template's value (not jinja's own context or environment passed to a filter)."""
    return isinstance(value, (list, tuple, set, frozenset, dict, bytes, bytearray, Namespace))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (jinja's names)
    if _width(n) * _width(max) * 12 > LIMIT:
        raise too_big()
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# ----- the environment -------------------------------------------------------------------------

class _Generator(CodeGenerator):
    """`a ~ b` through the environment's checked join (jinja's own str_join cannot be checked)."""

    def visit_Concat(self, node, frame):  # noqa: ANN001, N802 (jinja's signature)
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.filters = {name: _guard_filter(name, fn) for name, fn in self.filters.items()}
        self.globals["lipsum"] = _lipsum

    @staticmethod
    def _finalize(value: Any) -> Any:
        if not isinstance(value, _SCALARS):
            check(value)  # before it is made a string
        return value

    def checked_concat(self, parts: tuple) -> str:
        check(*parts)
        return "".join(map(str, parts))

    def call_binop(self, context, operator, left, right):  # noqa: ANN001 (jinja's signature)
        ints = all(isinstance(v, int) for v in (left, right))
        if operator == "*":
            if ints:
                if left.bit_length() + right.bit_length() > INT_BITS:
                    raise SecurityError("the product is too large")
            else:
                for seq, n in ((left, right), (right, left)):
                    if isinstance(n, int) and isinstance(seq, (str, bytes, list, tuple)) and n > 0 \
                            and (_width(n) > LIMIT // max(size(seq), 1) or size(seq) * n > LIMIT):
                        raise too_big()
        elif operator == "**" and ints and abs(left) > 1 and right * max(abs(left).bit_length(), 1) > INT_BITS:
            raise SecurityError("the power is too large")
        elif operator == "+" and not ints and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            check(left, right)
        elif operator == "%" and isinstance(left, str):
            check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        # jinja wraps str.format / format_map when they are looked up: check before it formats.
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if is_map and len(args) == 1 and isinstance(args[0], dict):
                check_format(fmt, (), args[0])
            elif not is_map:
                check_format(fmt, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: ANN001, N805 (jinja's signature)
        check(*(v for v in (*args, *kwargs.values()) if _plain(v)))
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)):
            args = _check_method(owner, __obj.__name__, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _check_method(s: str | bytes, name: str, args: tuple, kwargs: dict) -> tuple:
    """A str (or bytes) method that can build a large value: refused past LIMIT."""
    def arg(i: int, key: str, default: Any) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    if name in ("center", "ljust", "rjust", "zfill"):
        _width(arg(0, "width", 0))
    elif name == "expandtabs":
        if len(s) + s.count("\t" if isinstance(s, str) else b"\t") * _width(arg(0, "tabsize", 8)) > LIMIT:
            raise too_big()
    elif name == "replace":
        if _replace_size(s, arg(0, "old", ""), arg(1, "new", ""), arg(2, "count", -1)) > LIMIT:
            raise too_big()
    elif name == "join" and args:
        items = list(args[0])
        if len(s) * max(len(items) - 1, 0) + check(*(i for i in items if isinstance(i, str))) > LIMIT:
            raise too_big()
        return (items, *args[1:])
    elif name == "translate" and isinstance(s, str) and args and isinstance(args[0], dict):
        longest = max([len(v) for v in args[0].values() if isinstance(v, str)] or [1])
        if len(s) * longest > LIMIT:
            raise too_big()
    return args
