"""Field codes ``<$ ... $>``, evaluated in Jinja2's sandbox, tightened further.

Why tighter than :class:`jinja2.sandbox.SandboxedEnvironment` alone: a template
is written by a site's staff, but the values in it come from customers, and the
stock sandbox bounds ``range()`` yet not memory (``("ab"*50000000)|length``).
So here:

* only variable tags exist: block and comment delimiters are strings with a NUL,
  which a template may not contain; no globals (no ``range``, ``lipsum``,
  ``cycler``, ``joiner``, ``namespace``, ``dict``); a short list of filters and tests;
* attribute and item access reach only the field objects (``Contact``, ``Agent``,
  ``Interaction``, ``Interaction.AttachedData``) and characters of strings: no
  method of any Python object is ever reachable, so nothing can be called;
* every value a field code produces is charged to a :class:`Budget` before it is
  made when its size can be predicted (``*``, ``+``, ``**``) and after otherwise
  (filters, field reads, output): one render produces at most ``limit`` characters;
* a missing field is a :class:`FieldUndefined`: empty, ``+`` with a string gives
  the string, its name (never a value) is recorded for the log.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.filters import FILTERS
from jinja2.sandbox import SandboxedEnvironment
from jinja2.tests import TESTS
from markupsafe import Markup, escape

#: the literal tag a template marks the external resource's reply with
EXT_REPLY_TAG = "[ExtAgentReply]"
EXT_REPLY_NAME = "ExtAgentReply"
#: integers beyond this many bits are refused (``10**10**10`` would take minutes)
MAX_INT_BITS = 4096
#: block and comment syntax: delimiters no template can contain (NUL is refused)
_NEVER_START, _NEVER_END = "\x00<", ">\x00"

SAFE_FILTERS = (
    "upper", "lower", "title", "capitalize", "trim", "default", "d", "length", "count",
    "first", "last", "string", "int", "float", "round", "abs", "escape", "e",
    "striptags", "truncate", "wordcount",
)  # fmt: skip
SAFE_TESTS = (
    "defined", "undefined", "none", "number", "string", "boolean", "integer", "float",
    "eq", "equalto", "ne", "lt", "gt", "le", "ge", "in", "odd", "even", "lower", "upper",
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
#: what a recorded missing name may look like (built from names in the template)
_LOGGED = re.compile(r"[A-Za-z_(][A-Za-z0-9_.()\[\]?-]{0,199}")


class BudgetExceeded(SecurityError):
    """A render would produce more characters than its budget allows."""


@attrs.define
class Budget:
    """Characters one render may produce, intermediate values included."""

    limit: int
    spent: int = 0
    #: how many productions were refused (a test asserts on it, not on time)
    refused: int = 0
    largest: int = 0

    def charge(self, size: int) -> None:
        if size < 0:
            size = 0
        if self.spent + size > self.limit:
            self.refused += 1
            raise BudgetExceeded(
                f"field codes would produce more than the budget of {self.limit} characters"
            )
        self.spent += size
        self.largest = max(self.largest, size)


class Fields:
    """A named group of field values (``Contact``): only its keys are reachable."""

    __slots__ = ("_path", "_values")

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        self._path = path
        self._values = dict(values)

    def lookup(self, key: str) -> tuple[bool, Any]:
        if key in self._values:
            return True, self._values[key]
        return False, None

    @property
    def path(self) -> str:
        return self._path

    def __str__(self) -> str:  # a group, not a value: renders empty
        return ""

    def __repr__(self) -> str:
        return f"<fields {self._path}>"


class FieldUndefined(Undefined):
    """A missing field: empty, never an error; names are collected per render."""

    __slots__ = ()
    #: set on the per-render subclass (:func:`_undefined_class`)
    missing: list[str] = []

    def __init__(self, hint: str | None = None, obj: Any = None, name: str | None = None,
                 exc: type[TemplateRuntimeError] = UndefinedError) -> None:  # fmt: skip
        super().__init__(hint, obj, name, exc)
        if name is not None:
            self.missing.append(str(name) if _LOGGED.fullmatch(str(name)) else "[?]")

    def _same(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __add__(self, other: Any) -> Any:
        return other if isinstance(other, str) else self

    __radd__ = __add__
    __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _same
    __mod__ = __rmod__ = __pow__ = __rpow__ = __pos__ = __neg__ = _same
    __call__ = __getitem__ = _same

    def _false(self, *args: Any, **kwargs: Any) -> Any:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _false

    def _int(self, *args: Any, **kwargs: Any) -> Any:
        return 0

    def _float(self, *args: Any, **kwargs: Any) -> Any:
        return 0.0

    __int__ = _int
    __float__ = _float

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __str__(self) -> str:
        return ""


def _undefined_class(missing: list[str]) -> type[FieldUndefined]:
    return type("RenderUndefined", (FieldUndefined,), {"__slots__": (), "missing": missing})


def _scalar_text(value: Any) -> str:
    """The text a string concatenation makes of a number or boolean."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise SecurityError(f"cannot add a {type(value).__name__} to a string")


class FieldSandbox(SandboxedEnvironment):
    """One render's environment: its budget, its missing names, its escaping."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, budget: Budget, missing: list[str], html: bool) -> None:
        super().__init__(
            variable_start_string="<$",
            variable_end_string="$>",
            block_start_string=_NEVER_START + "%",
            block_end_string="%" + _NEVER_END,
            comment_start_string=_NEVER_START + "#",
            comment_end_string="#" + _NEVER_END,
            line_statement_prefix=None,
            line_comment_prefix=None,
            keep_trailing_newline=True,
            autoescape=html,
            optimized=False,  # no constant folding: every value goes through the budget
            undefined=_undefined_class(missing),
            finalize=self._finalize,
        )
        self.budget = budget
        #: the string keys the template writes as literals (``x["OrderId"]``)
        self.literal_keys: frozenset[str] = frozenset()
        self.globals.clear()
        self.filters = {name: self._charged(FILTERS[name]) for name in SAFE_FILTERS}
        self.tests = {name: TESTS[name] for name in SAFE_TESTS}

    # -- what a field code produces

    def _charge_value(self, value: Any) -> Any:
        if isinstance(value, str):
            self.budget.charge(len(value))
        return value

    def _charged(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # keeps Jinja's pass_environment marker
        def charged(*args: Any, **kwargs: Any) -> Any:
            return self._charge_value(fn(*args, **kwargs))

        return charged

    def _finalize(self, value: Any) -> Any:
        """What a ``<$ ... $>`` writes: strings, numbers, booleans; anything else is empty."""
        if isinstance(value, Undefined) or value is None:
            return ""
        if isinstance(value, bool | int | float):
            value = _scalar_text(value)
        if not isinstance(value, str):
            return ""
        self.budget.charge(len(value))
        return value

    # -- access: fields and characters of strings only

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Fields):
            found, value = obj.lookup(attribute)
            if found:
                return self._charge_value(value)
            return self.undefined(name=f"{obj.path}.{attribute}")
        if isinstance(obj, Undefined):
            return obj
        return self.undefined(name=f"(value).{attribute}")

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Fields) and isinstance(argument, str):
            found, value = obj.lookup(argument)
            if found:
                return self._charge_value(value)
            # a key written in the template is a name; a key computed from a value
            # (``AttachedData[Contact.FirstName]``) would put that value in the log
            literal = argument in self.literal_keys and _NAME.fullmatch(argument)
            name = argument if literal else "?"
            return self.undefined(name=f"{obj.path}[{name}]")
        if (
            isinstance(obj, str)
            and isinstance(argument, int | slice)
            and not isinstance(argument, bool)
        ):
            try:
                return self._charge_value(obj[argument])
            except (IndexError, TypeError, ValueError):
                return self.undefined(name="(value)[?]")
        if isinstance(obj, Undefined):
            return obj
        return self.undefined(name="(value)[?]")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Nothing is callable; calling a missing name (``range(...)``) is empty."""
        if isinstance(__obj, Undefined):
            return __obj
        raise SecurityError("field codes cannot call anything")

    # -- operators: sizes checked before the value is made

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if isinstance(left, Undefined) or isinstance(right, Undefined):
            if operator == "+":
                other = right if isinstance(left, Undefined) else left
                if isinstance(other, str):
                    return other
            return left if isinstance(left, Undefined) else right
        if operator == "+" and (isinstance(left, str) or isinstance(right, str)):
            left_text, right_text = _scalar_text(left), _scalar_text(right)
            self.budget.charge(len(left_text) + len(right_text))
            return left_text + right_text
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting is not available in field codes")
        sequences = (str, list, tuple)
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, sequences) and isinstance(times, int):
                    self.budget.charge(len(seq) * max(times, 0))
                    return seq * times
        if operator == "+" and isinstance(left, list | tuple) and isinstance(right, list | tuple):
            self.budget.charge(len(left) + len(right))
        _check_number(operator, left, right)
        return self._charge_value(self.binop_table[operator](left, right))

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        if isinstance(arg, Undefined):
            return arg
        return self.unop_table[operator](arg)


def _check_number(operator: str, left: Any, right: Any) -> None:
    """Refuse integer arithmetic whose result would exceed :data:`MAX_INT_BITS`."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    bits = max(abs(left).bit_length(), abs(right).bit_length())
    if operator == "*":
        bits = abs(left).bit_length() + abs(right).bit_length()
    elif operator == "**":
        bits = abs(left).bit_length() * max(right, 0) if abs(left) > 1 else 1
    if bits > MAX_INT_BITS:
        raise SecurityError(f"a number beyond {MAX_INT_BITS} bits")


class RenderError(Exception):
    """A template that cannot be rendered: the message says where, never a value."""


def template_line(exc: BaseException) -> int | None:
    """The template line a render error happened on (Jinja's rewritten traceback)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def ext_reply_value(text: str | None, html: bool) -> Any:
    """The external resource's reply as a part shows it: escaped in HTML, line breaks kept."""
    if text is None:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not html:
        return text
    return Markup("<br>\n").join(escape(line) for line in text.split("\n"))


def render_template(
    source: str,
    where: str,
    variables: Mapping[str, Any],
    *,
    html: bool,
    budget: Budget,
    missing: list[str],
) -> str:
    """Render one template text (*where* names its file in errors)."""
    env = FieldSandbox(budget, missing, html)
    source = source.replace(EXT_REPLY_TAG, f"<$ {EXT_REPLY_NAME} $>")
    try:
        tree = env.parse(source)
        env.literal_keys = frozenset(
            node.arg.value
            for node in tree.find_all(nodes.Getitem)
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)
        )
        template = env.from_string(tree)
        output = str(template.render(dict(variables)))
    except TemplateSyntaxError as exc:
        raise RenderError(f"{where}:{exc.lineno}: {exc.message}") from None
    except BudgetExceeded as exc:
        line = template_line(exc)
        raise RenderError(f"{where}{'' if line is None else f':{line}'}: {exc}") from None
    except SecurityError as exc:
        line = template_line(exc)
        raise RenderError(f"{where}{'' if line is None else f':{line}'}: refused: {exc}") from None
    except RecursionError:
        raise RenderError(f"{where}: nested too deeply") from None
    except Exception as exc:  # values may be in the message: only its kind and line
        line = template_line(exc)
        raise RenderError(
            f"{where}{'' if line is None else f':{line}'}: cannot be rendered "
            f"({type(exc).__name__})"
        ) from None
    budget.charge(0)
    return output


def field_codes(source: str) -> list[str]:
    """The fields a template reads, in order of first use, as it writes them:
    ``Contact.FirstName``, ``Interaction.AttachedData["OrderId"]``, ``ExtAgentReply``
    (for ``[ExtAgentReply]``). Nothing is evaluated; a template that does not
    parse reads none (rendering it names its error)."""
    env = FieldSandbox(Budget(0), [], html=False)
    try:
        tree = env.parse(source.replace(EXT_REPLY_TAG, f"<$ {EXT_REPLY_NAME} $>"))
    except (TemplateSyntaxError, RecursionError):
        return []
    found: list[str] = []

    def path(node: nodes.Node) -> str | None:
        """``A.b["c"]`` of a chain of names, attributes and literal keys, else None."""
        if isinstance(node, nodes.Name):
            return node.name
        if isinstance(node, nodes.Getattr):
            base = path(node.node)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, nodes.Getitem):
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
            base = path(node.node) if isinstance(key, str) else None
            return None if base is None else f"{base}[{json.dumps(key, ensure_ascii=False)}]"
        return None

    def visit(node: nodes.Node) -> None:
        if isinstance(node, nodes.Name | nodes.Getattr | nodes.Getitem):
            name = path(node)
            if name is not None:
                found.append(name)
                return
        for child in node.iter_child_nodes():
            visit(child)

    try:
        visit(tree)
    except RecursionError:
        return []
    return list(dict.fromkeys(found))
