r"""Flux, written safely: one builder for every Flux query mlobs sends.

The read API (:mod:`pipeline_sdk.read.influx`) and the dashboards (``dashboards/flux.py``)
build their queries here, so a value reaches Flux in one way only:

* **A value is a string literal**, :func:`string`, escaped as the Flux spec says: a
  backslash as ``\\``, a double quote as ``\"`` and ``${`` (where Flux's string
  interpolation starts) as ``\${``; a newline, carriage return and tab as ``\n``,
  ``\r`` and ``\t``.  libflux's scanner reads a ``$`` and the character after it
  as one piece of text, so a ``$`` just before an escape would swallow its backslash:
  that ``$`` is written as its byte, ``\x24`` (``$"`` is ``"\x24\""``).  Whatever
  the value holds, it stays one string.
* **A name is an identifier**, checked (:func:`identifier`): a letter or ``_``, then
  letters, digits or ``_``, as in ``r.<column>``, ``{r with <column>: ...}`` and a call
  ``<function>()``; a name that is not one raises :class:`FluxError`.
* **A Grafana variable is a construct of its own**, never text inside a string:

  - :class:`Var`, a variable whose values come from the data (a query variable: a
    pipeline, a step, run ids, a service), is only ever matched as a regular
    expression: ``r.<tag> =~ /^${<name>:regex}$/``.  Grafana's ``regex`` format
    escapes every character a regular expression reads specially, ``/`` included, so a
    value stays one literal inside one regex literal, whatever it holds (a quote,
    ``${``, a backslash, a slash); several values (a multi-value variable) become
    ``(a|b)``.  Grafana's other formats are not safe in Flux: without a format a value
    is inserted raw (a ``"`` ends the string it stands in), ``:doublequote`` does not
    escape a backslash, and ``:json`` leaves ``${`` as it is (Flux would evaluate what
    follows) and writes a control character as ``\uXXXX``, which Flux does not read.
  - :class:`Choice`, a custom variable whose options the dashboard fixes (the
    reducer ``last``/``min``/``max``/``mean``, the log levels), may name a function
    (``${agg}()``), stand inside a string literal (:func:`text`) or be a set
    (``${level:json}``), because each option is checked to be an identifier: no
    option needs escaping anywhere.

A query (:class:`Flux`) starts from one stream of :mod:`pipeline_sdk.contract`: every
column a step names is checked against the stream's tags and fields when the query is
built.  A step written out by hand (:meth:`Flux.then`) is fixed code: it may not name a
Grafana variable (``$x``, ``${x}``, ``[[x]]``), which only the constructs above write.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Self

from . import contract as c
from .durations import SECOND_NS

FLUX_COLUMNS = frozenset({"_time", "_value", "_field", "_measurement", "_start", "_stop"})  # every table's
DASHBOARD_RANGE = "range(start: v.timeRangeStart, stop: v.timeRangeStop)"  # Grafana's time range
# Grafana's macro for the datasource's default bucket: the chart sets it from the one value of the
# bucket Fluentd writes to, so a dashboard never spells the bucket out.
DASHBOARD_BUCKET = "v.defaultBucket"
FLUX_DURATION_UNITS = (  # a Flux duration literal's units that mlobs writes, largest first (ns in each)
    ("w", 7 * 86400 * SECOND_NS),
    ("d", 86400 * SECOND_NS),
    ("h", 3600 * SECOND_NS),
    ("m", 60 * SECOND_NS),
    ("s", SECOND_NS),
    ("ms", 1_000_000),
    ("us", 1000),
    ("ns", 1),
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
GRAFANA_SYNTAX = re.compile(r"\$|\[\[")  # where Grafana finds a variable: $x, ${x}, ${x:format}, [[x]]


class FluxError(ValueError):
    """A query that cannot be written: a name its stream lacks, a bad identifier or value."""


# ---- values and names -------------------------------------------------------------------------------


def string(value: str) -> str:
    """A Flux string literal of ``value``: backslash, quote, ``${``, newline, CR and tab escaped."""
    if not isinstance(value, str):
        raise FluxError(f"value={value!r} is invalid: a Flux string literal is made of a str")
    written: list[str] = []  # each character as the literal holds it, the last one first
    for ch in reversed(value):
        if ch != "$":
            written.append(_ESCAPES.get(ch, ch))
        elif written and written[-1].startswith("{"):
            written.append("\\$")  # and the "{" after it: the spec's \${
        elif written and written[-1].startswith("\\"):
            written.append("\\x24")  # libflux reads "$" and the character after it as one: not "$\"
        else:
            written.append("$")
    return '"' + "".join(reversed(written)) + '"'


def strings(values: Iterable[str]) -> str:
    """A Flux array of string literals: ``["a", "b"]``."""
    return "[" + ", ".join(string(v) for v in values) + "]"


def identifier(name: object, what: str = "name") -> str:
    """``name`` when it is a Flux identifier (what ``r.<name>`` can name), else FluxError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise FluxError(f"{what}={name!r} is invalid: must be a Flux identifier (letters, digits, _)")
    return name


def duration(ns: int) -> str:
    """A Flux duration literal of ``ns`` nanoseconds, exactly: 6h, 1h30m, 1s500ms, -6h (whole units only)."""
    if type(ns) is not int or ns == 0:
        raise FluxError(f"ns={ns!r} is invalid: must be a whole number of nanoseconds, not 0")
    parts, rest = [], abs(ns)
    for unit, size in FLUX_DURATION_UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return ("-" if ns < 0 else "") + "".join(parts)


def range_ns(start_ns: int | None, stop_ns: int | None) -> str:
    """``range()`` from ``start_ns`` (0 when None) to ``stop_ns`` (now when None), exact Unix ns."""
    start = 0 if start_ns is None else start_ns
    for arg, value in (("start_ns", start), ("stop_ns", stop_ns)):
        if value is not None and type(value) is not int:
            raise FluxError(f"{arg}={value!r} is invalid: must be Unix nanoseconds (an int)")
    stop = f", stop: time(v: {stop_ns})" if stop_ns is not None else ""
    return f"range(start: time(v: {start}){stop})"


def range_ago(ns: int) -> str:
    """``range()`` over the last ``ns`` nanoseconds (relative to when the query runs): -6h."""
    if type(ns) is not int or ns <= 0:
        raise FluxError(f"ns={ns!r} is invalid: must be a whole number of nanoseconds above 0")
    return f"range(start: {duration(-ns)})"


# ---- Grafana variables ------------------------------------------------------------------------------


_SUFFIX = re.compile(r"[A-Za-z0-9_.]*")


@dataclass(frozen=True)
class Var:
    """A Grafana variable whose values come from the data: matched only as ``=~ /^${name:regex}$/``.

    ``suffix``, fixed letters, digits, ``_`` and ``.`` (matched literally), follows the value: a
    metric named after a feature, ``/^${feature:regex}\\.baseline_quantiles$/``.
    """

    name: str
    suffix: str = ""

    def __post_init__(self) -> None:
        identifier(self.name, "Var.name")
        if not _SUFFIX.fullmatch(self.suffix):
            raise FluxError(
                f"Var {self.name}: suffix={self.suffix!r} is invalid: "
                "only letters, digits, _ and . may follow"
            )

    def matches(self, column: str) -> str:
        """The predicate ``r.<column>`` is one of the variable's values (one, several or All)."""
        literal = self.suffix.replace(".", "\\.")
        return f"r.{identifier(column, 'column')} =~ /^${{{self.name}:regex}}{literal}$/"


@dataclass(frozen=True)
class Choice:
    """A custom Grafana variable of fixed options, each an identifier: safe as code and in a string."""

    name: str
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        identifier(self.name, "Choice.name")
        if not isinstance(self.options, tuple) or not self.options:
            raise FluxError(f"Choice {self.name}: options={self.options!r} must be a non-empty tuple")
        for option in self.options:
            identifier(option, f"Choice {self.name} option")
        if len(set(self.options)) != len(self.options):
            raise FluxError(f"Choice {self.name}: options {list(self.options)} repeat one")

    @property
    def value(self) -> str:
        """The chosen option as it is (``${agg}``): an identifier, so code or string content."""
        return f"${{{self.name}}}"

    def among(self, column: str) -> str:
        """The predicate ``r.<column>`` is one of the chosen options (a multi-value variable)."""
        return f"contains(value: r.{identifier(column, 'column')}, set: ${{{self.name}:json}})"


def text(*parts: str | Choice) -> str:
    """A string literal of fixed text and chosen options: ``text(" (", agg, ")")`` is ``" (${agg})"``.

    Grafana replaces every variable in a query's text, inside string literals too, so the
    fixed text may not hold its syntax (``$``, ``[[``).
    """
    for part in parts:
        if isinstance(part, str) and GRAFANA_SYNTAX.search(part):
            raise FluxError(f"text part {part!r} holds Grafana's variable syntax ($ or [[): use a Choice")
    body = "".join(p.value if isinstance(p, Choice) else string(p)[1:-1] for p in parts)
    return f'"{body}"'


# ---- filters ----------------------------------------------------------------------------------------

Equal = str | Var  # a tag's value: one value, or a data variable
Among = Sequence[str] | Var | Choice  # a tag's values: several values, or a variable


def equal_to(tag: str, value: Equal, absent: str | None = None) -> str:
    """The predicate ``r.<tag>`` is ``value``; when ``value`` is ``absent``, a row without the tag too."""
    if isinstance(value, Var):
        return value.matches(tag)
    condition = f"r.{identifier(tag, 'tag')} == {string(value)}"
    return f"not exists r.{tag} or {condition}" if absent is not None and value == absent else condition


def one_of(tag: str, values: Among, absent: str | None = None) -> str:
    """The predicate ``r.<tag>`` is one of ``values``; when one is ``absent``, a row without the tag too."""
    if isinstance(values, (Var, Choice)):
        return values.matches(tag) if isinstance(values, Var) else values.among(tag)
    if isinstance(values, str) or not values:
        raise FluxError(f"among {tag}={values!r} is invalid: must be one or more values (a tuple) or a Var")
    condition = f"contains(value: r.{identifier(tag, 'tag')}, set: {strings(values)})"
    return f"not exists r.{tag} or {condition}" if absent is not None and absent in values else condition


# ---- queries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flux:
    """A Flux query over one contract stream, built step by step: each step a line of the pipe."""

    stream: c.Stream
    lines: tuple[str, ...]
    columns: frozenset[str]  # what later steps may name: tags, fields, Flux's own, those steps made
    # A column a subclass's own step makes -> that step: an error naming it early says where it comes from.
    made_by: ClassVar[Mapping[str, str]] = MappingProxyType({})

    @classmethod
    def select(
        cls,
        stream: c.Stream,
        *,
        fields: Iterable[str],
        time_range: str,
        bucket: str = c.INFLUXDB_BUCKET,
        bucket_macro: bool = False,
        equal: Mapping[str, Equal] | None = None,
        among: Mapping[str, Among] | None = None,
        absent: Mapping[str, str] | None = None,
    ) -> Self:
        """``from |> range |> filter``: one measurement, some fields, tags equal to a value or among some.

        ``time_range`` is a ``range()`` step (:data:`DASHBOARD_RANGE`, :func:`range_ns`,
        :func:`range_ago`).  ``bucket_macro`` reads from :data:`DASHBOARD_BUCKET` instead of
        ``bucket`` (in a dashboard).  ``absent`` maps a tag that older points lack to the value
        such a point reads as: a filter that takes that value also takes them.
        """
        names, equals, amongs, defaults = tuple(fields), equal or {}, among or {}, absent or {}
        unknown_fields = [f for f in names if f not in stream.fields]
        if unknown_fields or not names:
            raise FluxError(
                f"fields {unknown_fields or list(names)!r} not in measurement {stream.measurement!r}"
            )
        unknown_tags = [t for t in (*equals, *amongs) if t not in stream.tags]
        if unknown_tags:
            raise FluxError(f"tags {unknown_tags} not in measurement {stream.measurement!r}")
        if not time_range.startswith("range(start: "):
            raise FluxError(f"time_range={time_range!r} is invalid: must be a range() step")
        lines = [
            f"from(bucket: {DASHBOARD_BUCKET if bucket_macro else string(bucket)})",
            time_range,
            f"filter(fn: (r) => r._measurement == {string(stream.measurement)})",
        ]
        lines += [f"filter(fn: (r) => {equal_to(t, v, defaults.get(t))})" for t, v in equals.items()]
        lines += [f"filter(fn: (r) => {one_of(t, v, defaults.get(t))})" for t, v in amongs.items()]
        lines.append("filter(fn: (r) => " + " or ".join(f"r._field == {string(f)}" for f in names) + ")")
        return cls(stream, tuple(lines), frozenset({*stream.tags, *stream.fields, *FLUX_COLUMNS}))

    @property
    def text(self) -> str:
        return "\n  |> ".join(self.lines)

    def _known(self, names: Iterable[str], where: str) -> None:
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            made = {n: self.made_by[n] for n in unknown if n in self.made_by}
            hint = "".join(f"; {[n]} only after {step} made it" for n, step in made.items())
            raise FluxError(
                f"{where}: {unknown} not in measurement {self.stream.measurement!r} "
                f"(tags {list(self.stream.tags)}, fields {list(self.stream.fields)}){hint}"
            )

    def _step(self, step: str, uses: Iterable[str] = (), adds: Iterable[str] = ()) -> Self:
        self._known(tuple(uses), step)
        columns = self.columns | {identifier(a, "column") for a in adds}
        return dataclasses.replace(self, lines=(*self.lines, step), columns=columns)

    def then(self, step: str, *, uses: Iterable[str] = (), adds: Iterable[str] = ()) -> Self:
        """Append fixed code ``step``; ``uses`` are the columns it names, ``adds`` those it makes."""
        if GRAFANA_SYNTAX.search(step):
            raise FluxError(
                f"step {step!r} names a Grafana variable: use Var or Choice (pipeline_sdk.flux), never text"
            )
        return self._step(step, uses, adds)

    def where(self, equal: Mapping[str, Equal]) -> Self:
        """``filter()``: rows whose every tag is its value (a string, escaped, or a :class:`Var`)."""
        if not equal:
            raise FluxError("where() needs at least one tag and its value")
        return self._step(
            f"filter(fn: (r) => {' and '.join(equal_to(t, v) for t, v in equal.items())})", equal
        )

    def group(self, *columns: str) -> Self:
        """``group(columns: [...])``; with none, ``group()``: every row in one table."""
        return self._step(f"group(columns: {strings(columns)})" if columns else "group()", columns)

    def keep(self, *columns: str) -> Self:
        flux = self._step(f"keep(columns: {strings(columns)})", columns)
        return dataclasses.replace(flux, columns=frozenset(columns))

    def pivot_fields(self, row_key: tuple[str, ...] = ("_time",)) -> Self:
        """One column per field (``value``, ``index``...), one row per ``row_key``."""
        return self.pivot_by("_field", row_key)

    def pivot_by(self, column: str, row_key: tuple[str, ...]) -> Self:
        """One column per value of ``column`` (e.g. a param's name); the names are data, not schema."""
        step = f'pivot(rowKey: {strings(row_key)}, columnKey: {strings([column])}, valueColumn: "_value")'
        return self._step(step, (*row_key, column))

    def sort(self, *columns: str, desc: bool | None = False) -> Self:
        """``sort()`` by ``columns``, ascending unless ``desc``; ``desc=None`` leaves Flux's default."""
        order = "" if desc is None else f", desc: {str(bool(desc)).lower()}"
        return self._step(f"sort(columns: {strings(columns)}{order})", columns)

    def call(self, function: str | Choice) -> Self:
        """A call without arguments: ``last()``, ``count()``, or the chosen one (``${agg}()``)."""
        name = function.value if isinstance(function, Choice) else identifier(function, "function")
        return self._step(f"{name}()")

    def limit(self, n: int) -> Self:
        if type(n) is not int or n < 1:
            raise FluxError(f"limit n={n!r} is invalid: must be a whole number, 1 or more")
        return self._step(f"limit(n: {n})")

    def with_column(self, column: str, expression: str, *, uses: Iterable[str] = ()) -> Self:
        """``map()`` setting ``column`` to ``expression`` (fixed code over ``r``) in every row."""
        step = f"map(fn: (r) => ({{r with {identifier(column, 'column')}: {expression}}}))"
        if GRAFANA_SYNTAX.search(expression):
            raise FluxError(f"expression {expression!r} names a Grafana variable: use append_text()")
        return self._step(step, uses, adds=[column])

    def append_text(self, column: str, *parts: str | Choice) -> Self:
        """``column`` (a string) with :func:`text` of ``parts`` after it: ``name (${agg})``."""
        name = identifier(column, "column")
        return self._step(f"map(fn: (r) => ({{r with {name}: r.{name} + {text(*parts)}}}))", [name])

    def rename(self, mapping: Mapping[str, str]) -> Self:
        body = ", ".join(f"{string(k)}: {string(v)}" for k, v in mapping.items())
        return self._step(f"rename(columns: {{{body}}})", mapping, adds=mapping.values())
