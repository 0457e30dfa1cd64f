"""A Jinja2 sandbox whose rendering is bounded in memory and time.

Caption and prompt templates are written by users. Jinja2's sandbox stops them from reaching Python
internals, but not from spending the host: ``{{ 'x' * 3000000000 }}`` allocates gigabytes in one C call
(holding the GIL, so the API freezes too), and nested loops pin a worker forever. A limit checked after
the fact is too late for the first, and a thread cannot be interrupted for the second, so the limits are
checked *before* each operation, in the template's own code path:

* every operation that can build a large value (``*``, ``+``, ``**``, ``%``, ``~``, string methods such as
  ``ljust`` or ``replace``, filters such as ``center``, ``join`` or ``batch``, ``str.format`` widths) is
  refused when its result would exceed :data:`MAX_VALUE` characters or items, and no value larger than
  that may be passed to a call, a filter or the output;
* every operation and every loop iteration is one step: a render may take :data:`MAX_STEPS` steps and
  :data:`TIME_BUDGET_SECONDS` of time (checked at each step, so a loop without output is stopped too);
* the output (everything printed, including inside macros and ``{% set %}`` blocks) is capped.

A template that exceeds a limit raises :class:`TemplateLimitError` (a ``SecurityError``) with a message
written for the person who wrote the template.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from collections.abc import Iterable
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

MAX_VALUE = 100_000  # characters or items in any one value (and its nested values)
MAX_INT_BITS = 100_000  # about 30,000 decimal digits
MAX_OUTPUT = 65_536  # characters of rendered text (Facebook's caption limit is 63,206)
MAX_PRINTED = 1_000_000  # characters printed during one render, macros and {% set %} blocks included
MAX_STEPS = 100_000  # operations and loop iterations in one render
TIME_BUDGET_SECONDS = 2.0


class TemplateLimitError(SecurityError):
    """A template went over one of the rendering limits; the message says which and how to fix it."""


class _Budget:
    __slots__ = ("deadline", "steps", "printed", "budget_seconds")

    def __init__(self, seconds: float):
        self.budget_seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.steps = 0
        self.printed = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimitError(f"the template takes more than {MAX_STEPS:,} steps (loops, calls and "
                                     "operations); simplify its loops")
        if not self.steps % 64 and time.monotonic() > self.deadline:
            raise TemplateLimitError(f"the template took longer than {self.budget_seconds:g} s to render")

    def printing(self, n: int) -> None:
        self.printed += n
        if self.printed > MAX_PRINTED:
            raise TemplateLimitError(f"the template prints more than {MAX_PRINTED:,} characters")


class _Unbounded(_Budget):
    """Outside a render (Jinja folding constants at compile time): size checks only."""

    def tick(self) -> None:
        pass

    def printing(self, n: int) -> None:
        pass


_UNBOUNDED = _Unbounded(0)
_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _current() -> _Budget:
    return _budget.get() or _UNBOUNDED


def _tick() -> None:
    _current().tick()


def _too_big(what: str = "a value") -> TemplateLimitError:
    return TemplateLimitError(f"the template builds {what} of more than {MAX_VALUE:,} characters or items")


def size(value: Any, limit: int = MAX_VALUE) -> int:
    """Characters and items in ``value``, nested values included; stops counting once over ``limit``.

    Shared references count each time they are reached, because that is what printing or joining costs:
    ``[s, s, s]`` is three times ``s``."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes, bytearray)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v) + 1
            if total <= limit:
                stack.extend(v)
        elif isinstance(v, dict):
            total += len(v) + 1
            if total <= limit:
                stack.extend(v.keys())
                stack.extend(v.values())
        elif isinstance(v, Namespace):
            attrs = getattr(v, "_Namespace__attrs", {})  # printed by its repr
            total += len(attrs) + 1
            if total <= limit:
                stack.extend(attrs.values())
        elif isinstance(v, int) and not isinstance(v, bool):
            if v.bit_length() > MAX_INT_BITS:
                return limit + 1
            total += v.bit_length() // 3 + 1  # about its decimal digits
        else:
            total += 1
        if total > limit:
            return total
    return total


def _check(*values: Any) -> None:
    for v in values:
        if size(v) > MAX_VALUE:
            raise _too_big()


def _checked(result: Any) -> Any:
    _check(result)
    return result


def _materialize(value: Any) -> Any:
    """An iterator (e.g. from ``map``) as a list, refused past MAX_VALUE items; other values unchanged."""
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) or not isinstance(value, Iterable):
        return value
    items = list(islice(value, MAX_VALUE + 1))
    if len(items) > MAX_VALUE:
        raise _too_big("a sequence")
    return items


def _count(n: Any) -> int:
    """A width or count argument, refused when it would build a value over the limit."""
    if isinstance(n, int) and n > MAX_VALUE:
        raise _too_big()
    return n


# --------------------------------------------------------------------------- format strings

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: Any) -> None:
    if not isinstance(fmt, str):
        return
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for n in (width, precision):
            if n == "*":
                raise TemplateLimitError("the template uses '*' widths in % formatting; write the width")
            if n and int(n) > MAX_VALUE:
                raise _too_big()


def _check_brace_format(fmt: str, depth: int = 0) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format reports the syntax error itself
    for _literal, _field, spec, _conversion in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimitError("the template uses a nested {...} width in str.format; write the width")
        for n in re.findall(r"\d+", spec):
            if int(n) > MAX_VALUE:
                raise _too_big()


# --------------------------------------------------------------------------- calls and filters


def _check_str_method(obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Size checks for the methods of str/bytes/int that can build something large from small inputs."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, int) and name == "to_bytes":
        for n in list(args[:1]) + [kwargs.get("length")]:
            _count(n)
    if not isinstance(owner, (str, bytes, bytearray)):
        return args
    if name in ("ljust", "rjust", "center", "zfill"):
        for n in list(args[:1]) + [kwargs.get("width")]:
            _count(n)
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int) and len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * tab \
                > MAX_VALUE:
            raise _too_big()
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "join" and args:
        items = _materialize(args[0])
        if size(items) + len(owner) * len(items) > MAX_VALUE:
            raise _too_big()
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * max(1, longest) > MAX_VALUE:
            raise _too_big()
    return args


def _check_replace(s: Any, old: Any, new: Any) -> None:
    if not (isinstance(s, (str, bytes)) and type(old) is type(s) and type(new) is type(s)):
        return
    grows = len(new) - len(old)
    if grows > 0:
        hits = s.count(old) if old else len(s) + 1
        if len(s) + hits * grows > MAX_VALUE:
            raise _too_big()


def _filter_join(value: Any, d: str = "", attribute: Any = None) -> tuple:
    items = _materialize(value)
    if size(items) + size(d) * max(0, len(items) - 1) > MAX_VALUE:
        raise _too_big()
    return (items, d, attribute)


def _filter_indent(s: Any, width: Any = 4, *rest: Any, **kw: Any) -> None:
    width = kw.get("width", width)
    pad = len(width) if isinstance(width, str) else _count(width) if isinstance(width, int) else 0
    text = str(s)
    if len(text) + (text.count("\n") + 1) * pad > MAX_VALUE:
        raise _too_big()


def _filter_wordwrap(s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                     *rest: Any, **kw: Any) -> None:
    text = str(s)
    wrap = kw.get("wrapstring", wrapstring) or "\n"
    width = kw.get("width", width)
    lines = len(text) // max(1, width if isinstance(width, int) else 1) + text.count("\n") + 1
    if len(text) + lines * len(str(wrap)) > MAX_VALUE:
        raise _too_big()


def _filter_count_arg(key: str):
    def check(value: Any, n: Any = 0, *rest: Any, **kw: Any) -> None:
        _count(kw.get(key, n))
    return check


# Pre-checks for filters whose output can outgrow their input; the rest grow at most by a constant factor.
_FILTER_CHECKS = {
    "center": _filter_count_arg("width"),
    "batch": _filter_count_arg("linecount"),
    "slice": _filter_count_arg("slices"),
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "replace": lambda s, old="", new="", *rest, **kw: _check_replace(str(s), str(old), str(new)),
    "format": lambda value, *rest, **kw: _check_percent_format(value),
}


def _guard_filter(name: str, func: Any) -> Any:
    check = _FILTER_CHECKS.get(name)
    passes = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)  # keeps jinja_pass_arg (context/environment first)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        head, values = (args[:1], args[1:]) if passes else ((), args)
        if name == "join":
            values = _filter_join(*values, **kwargs)
            kwargs = {}
        _check(*values, *kwargs.values())
        if check is not None:
            check(*values, **kwargs)
        return _checked(func(*head, *values, **kwargs))

    return guarded


@pass_context
def _iterate(_context: Any, iterable: Any) -> Any:
    """Wraps the iterable of every ``{% for %}``: each iteration is a step."""
    budget = _current()
    for item in iterable:
        budget.tick()
        yield item


@pass_context
def _literal(_context: Any, text: str) -> str:
    """Wraps template text so that it is counted when printed (inside a loop or macro, too)."""
    return text


def _range(*args: Any) -> range:
    rng = range(*args)
    if len(rng) > MAX_VALUE:
        raise TemplateLimitError(f"range() is limited to {MAX_VALUE:,} items")
    return rng


class _BoundedCodeGenerator(CodeGenerator):
    """Routes the operations the sandbox has no hook for through the environment's checks."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_iterate", [], [], None, None, lineno=loop.lineno)
        for output in node.find_all(nodes.Output):
            output.nodes = [nodes.Filter(nodes.Const(child.data), "_literal", [], [], None, None,
                                         lineno=child.lineno)
                            if isinstance(child, nodes.TemplateData) else child for child in output.nodes]
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, **kwargs: Any):
        super().__init__(undefined=StrictUndefined, autoescape=False, finalize=self._finalize, **kwargs)
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: no use in a caption
        self.globals["range"] = _range
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters["_iterate"] = _iterate
        self.filters["_literal"] = _literal

    # ----------------------------------------------------------------- hooks

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check(left, right)
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and not isinstance(seq, (int, float)) and size(seq) * n > MAX_VALUE:
                    raise _too_big()
            if isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _too_big("a number")
        elif operator == "+" and not isinstance(left, (int, float)):
            if size(left) + size(right) > MAX_VALUE:
                raise _too_big()
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_INT_BITS:
                raise _too_big("a number")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return _checked(super().call_binop(context, operator, left, right))

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _tick()
        return super().call_unop(context, operator, arg)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_brace_format(value.__self__)
        return wrapped

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - as in Jinja2
        _tick()
        args = _check_str_method(__obj, args, kwargs)
        _check(*args, *kwargs.values())
        return _checked(super().call(__context, __obj, *args, **kwargs))

    def bounded_concat(self, parts: tuple) -> str:
        """The ``~`` operator."""
        _tick()
        if sum(size(p) for p in parts) > MAX_VALUE:
            raise _too_big()
        return "".join(map(str, parts))

    @staticmethod
    @pass_context  # so that constants are printed at run time too, and counted
    def _finalize(_context: Any, value: Any) -> Any:
        _tick()
        _check(value)
        text = str(value)
        _current().printing(len(text))
        return text


env = BoundedSandbox(keep_trailing_newline=False)


@functools.lru_cache(maxsize=256)
def compile_template(text: str):
    return env.from_string(text)


def render(text: str, variables: dict, *, time_budget: float = TIME_BUDGET_SECONDS) -> str:
    """Render ``text`` within the limits; raises TemplateError (TemplateLimitError past a limit) or whatever
    the template's own expressions raise (e.g. ZeroDivisionError, RecursionError)."""
    template = compile_template(text)
    token = _budget.set(_Budget(time_budget))
    try:
        out: list[str] = []
        length = 0
        for chunk in template.generate(**variables):
            length += len(chunk)
            if length > MAX_OUTPUT:
                raise TemplateLimitError(f"the template's output is longer than {MAX_OUTPUT:,} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _budget.reset(token)
