"""Liquid rendering of templates (contract §6): sandboxed, cached, HTML-escaped, text derived.

Subject, HTML body and text part are Liquid. Only the HTML body auto-escapes what variables
print, so `&` in a subject stays `&`. An MJML body gets its Liquid rendered first and is compiled
to HTML afterwards, so Liquid control flow may wrap whole sections. Rendering runs inside limits
(loop iterations, output size, locals size, context depth, big strings and lists made by filters,
a wall-clock budget): a hostile template fails with `RenderError`, it never hangs or eats memory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

import mrml
from liquid import BoundTemplate
from liquid import Environment
from liquid.exceptions import LiquidError
from liquid.exceptions import LiquidSyntaxError
from liquid.static_analysis import TemplateAnalysis

# Generous for e-mail (Gmail clips messages past ~100 KB) and small enough to bound memory.
OUTPUT_LIMIT = 1024 * 1024
LOOP_ITERATION_LIMIT = 10_000
LOCALS_LIMIT = 2 * 1024 * 1024
CONTEXT_DEPTH_LIMIT = 30
SEQUENCE_LIMIT = 100_000
INTEGER_BITS_LIMIT = 256
RENDER_SECONDS_LIMIT = 5.0
_CACHE_SIZE = 2048

_deadline: ContextVar[float] = ContextVar("kraiter_render_deadline", default=0.0)


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered e-mail: the subject line, the HTML body and the plain-text part."""

    subject: str
    html: str
    text: str


class RenderError(Exception):
    """A template that does not parse, or whose rendering broke a sandbox limit."""

    def __init__(self, message: str, *, line: int | None = None,
                 part: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.part = part  # `subject`, `html`, `mjml` or `text`, when known


class _LimitExceeded(LiquidError):
    """A filter result or a render that outgrew the sandbox."""


# --- the sandbox ---------------------------------------------------------------------------

def _check_budget() -> None:
    deadline = _deadline.get()
    if deadline and time.monotonic() > deadline:
        raise _LimitExceeded("render time limit reached", token=None)


def _check_value(value: object, what: str) -> None:
    if isinstance(value, str):
        if len(value) > OUTPUT_LIMIT:
            raise _LimitExceeded(f"{what}: string size limit reached", token=None)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if value.bit_length() > INTEGER_BITS_LIMIT:
            raise _LimitExceeded(f"{what}: number size limit reached", token=None)
    elif isinstance(value, (list, tuple, range, dict)) and len(value) > SEQUENCE_LIMIT:
        raise _LimitExceeded(f"{what}: array size limit reached", token=None)


class _GuardedFilter:
    """Wraps a built-in filter: inputs and result are size-checked, the time budget is checked.

    Checking every result bounds each intermediate value, so a chain of filters cannot grow a
    string or number geometrically; `replace` and `join` are checked before they run because
    their result can be the product of two bounded sizes.
    """

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self._name = name
        self._func = func
        self.with_context = getattr(func, "with_context", False)
        self.with_environment = getattr(func, "with_environment", False)

    def __getattr__(self, attribute: str) -> Any:
        # `validate` (argument checks at parse time) and friends come from the wrapped filter.
        return getattr(self._func, attribute)

    def __call__(self, left: object, *args: object, **kwargs: object) -> object:
        _check_budget()
        _check_value(left, self._name)
        for arg in args:
            _check_value(arg, self._name)
        if self._name == "replace" and len(args) >= 2:
            _check_replace(left, args[0], args[1])
        elif self._name == "join":
            _check_join(left, args[0] if args else " ")
        result = self._func(left, *args, **kwargs)
        _check_value(result, self._name)
        return result


def _check_replace(left: object, old: object, new: object) -> None:
    text, old_text, new_text = str(left), str(old), str(new)
    growth = text.count(old_text) * max(len(new_text) - len(old_text), 0)
    if len(text) + growth > OUTPUT_LIMIT:
        raise _LimitExceeded("replace: string size limit reached", token=None)


def _check_join(left: object, separator: object) -> None:
    if not isinstance(left, Iterable) or isinstance(left, (str, Mapping)):
        return
    total, step = 0, len(str(separator))
    for item in left:
        total += step + (len(item) if isinstance(item, str) else 24)
        if total > OUTPUT_LIMIT:
            raise _LimitExceeded("join: string size limit reached", token=None)


class _SandboxEnvironment(Environment):
    """Liquid with resource limits; no `include`/`render` (templates cannot read each other)."""

    loop_iteration_limit = LOOP_ITERATION_LIMIT
    output_stream_limit = OUTPUT_LIMIT
    local_namespace_limit = LOCALS_LIMIT
    context_depth_limit = CONTEXT_DEPTH_LIMIT

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        """Register the standard tags and filters, minus partials, with guarded filters."""
        super().setup_tags_and_filters(extra=extra)
        for tag in ("include", "render"):
            self.tags.pop(tag, None)
        self.filters = {name: _GuardedFilter(name, func) for name, func in self.filters.items()}


_HTML_ENV = _SandboxEnvironment(autoescape=True)
_TEXT_ENV = _SandboxEnvironment(autoescape=False)


# --- parsing, with a cache --------------------------------------------------------------------

def _error_line(error: LiquidError, source: str) -> int | None:
    try:
        position = error.context()
    except ValueError:  # a token that points outside its source
        return None
    if position is not None:
        return position[0]
    if isinstance(error, LiquidSyntaxError):
        # Without a token the parser ran off the end (an unclosed block): blame the last line.
        return source.count("\n") + 1
    return None


def _error_text(error: LiquidError) -> str:
    message = error.message
    return str(message) if message else type(error).__name__


@lru_cache(maxsize=_CACHE_SIZE)
def _parse(source: str, html: bool) -> BoundTemplate | RenderError:
    """Parse once per distinct source; the sender renders the same few templates all day."""
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        template = env.from_string(source)
    except LiquidError as error:
        # Cache the failure too, so a broken template does not get re-parsed on every send.
        return RenderError(_error_text(error), line=_error_line(error, source))
    # Filters are looked up when they run; find a misspelt one now, not at send time.
    for name, spans in _analysis(template).filters.items():
        if name not in env.filters:
            return RenderError(f"unknown filter '{name}'",
                               line=spans[0].line_col(source)[0] if spans else None)
    return template


def _analysis(template: BoundTemplate) -> TemplateAnalysis:
    try:
        return template.analyze()
    except Exception:  # analysis is a convenience: never let it fail a template that parsed
        return TemplateAnalysis(variables={}, locals={}, globals={}, filters={}, tags={})


def _template(source: str, *, html: bool, part: str) -> BoundTemplate:
    parsed = _parse(source, html)
    if isinstance(parsed, RenderError):
        raise RenderError(_located(part, parsed.message, parsed.line), line=parsed.line,
                          part=part)
    return parsed


def _located(part: str, message: str, line: int | None) -> str:
    where = f"{part}, line {line}" if line is not None else part
    return f"Invalid Liquid in {where}: {message}"


def _render(source: str, context: Mapping[str, Any], *, html: bool, part: str) -> str:
    template = _template(source, html=html, part=part)
    try:
        return template.render(**context)
    except LiquidError as error:
        line = _error_line(error, source)
        where = f"{part}, line {line}" if line is not None else part
        raise RenderError(f"Rendering {where} failed: {_error_text(error)}", line=line,
                          part=part) from None
    except Exception as error:
        # A filter's own Python error (a huge number to text, deeply nested data) is the
        # template's problem, and the sender must get a RenderError rather than crash.
        raise RenderError(f"Rendering {part} failed: {error}", part=part) from None


# --- MJML ----------------------------------------------------------------------------------

_MJML_OPTIONS = mrml.ParserOptions(include_loader=mrml.noop_loader())


def compile_mjml(source: str) -> str:
    """Compile MJML to HTML; `mj-include` is refused (no files or URLs are read)."""
    try:
        return str(mrml.to_html(source, parser_options=_MJML_OPTIONS).content)
    except Exception as error:  # mrml raises OSError, but its error types are not API
        raise RenderError(f"Invalid MJML in mjml: {error}", part="mjml") from None


# --- plain text from HTML ----------------------------------------------------------------------

_SKIP = frozenset({"head", "style", "script", "title", "template", "noscript"})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
                        "blockquote", "pre", "section", "article", "header", "footer"})
_LINE = frozenset({"div", "tr", "li", "br", "dd", "dt", "center", "address"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})
_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextConverter(HTMLParser):
    """HTML → readable text: paragraphs kept, links as `label (url)`, markup dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        # The element being skipped (head, style, or hidden like MJML's preview text) and how
        # deep inside further elements of the same name we are.
        self._skipping: str | None = None
        self._skip_depth = 0
        self._pre_depth = 0
        self._links: list[tuple[str, int]] = []  # (href, index in out where the label starts)

    def _newlines(self, count: int) -> None:
        self.out.append("\n" * count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skipping is not None:
            self._skip_depth += tag == self._skipping
            return
        attributes = dict(attrs)
        style = (attributes.get("style") or "").replace(" ", "").lower()
        if tag in _SKIP or ("display:none" in style and tag not in _VOID):
            self._skipping, self._skip_depth = tag, 1
        elif tag == "a":
            self._links.append(((attributes.get("href") or "").strip(), len(self.out)))
        elif tag == "img":
            alt = (attributes.get("alt") or "").strip()
            if alt:
                self.out.append(f" {alt} ")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "hr":
            self.out.append("\n----\n")
        elif tag in _PARAGRAPH:
            self._pre_depth += tag == "pre"
            self._newlines(2)
        elif tag in _LINE:
            self._newlines(1)
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._skipping is not None:
            if tag == self._skipping:
                self._skip_depth -= 1
                if not self._skip_depth:
                    self._skipping = None
                    if tag in _PARAGRAPH or tag in _LINE:
                        self._newlines(1)
            return
        if tag == "a" and self._links:
            self._close_link(*self._links.pop())
        elif tag in _PARAGRAPH:
            self._pre_depth = max(self._pre_depth - (tag == "pre"), 0)
            self._newlines(2)
        elif tag in _LINE and tag != "li":  # an item's line break comes with the next one's dash
            self._newlines(1)

    def _close_link(self, href: str, start: int) -> None:
        label = _SPACE.sub(" ", "".join(self.out[start:])).strip()
        if not href or href.startswith("#") or href.lower().startswith("javascript:"):
            return
        shown = href[7:] if href.lower().startswith("mailto:") else href
        if not label:
            self.out.append(shown)
        elif label != shown:
            self.out.append(f" ({shown})")

    def handle_data(self, data: str) -> None:
        if self._skipping is not None:
            return
        self.out.append(data if self._pre_depth else _SPACE.sub(" ", data))

    def text(self) -> str:
        """The converted text, whitespace tidied."""
        lines = (line.strip() if not line.startswith("    ") else line.rstrip()
                 for line in "".join(self.out).split("\n"))
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """A plain-text alternative for an HTML body (no GPL converter needed)."""
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    return converter.text()


# --- the public interface ------------------------------------------------------------------------

_RESERVED = ("contact", "variables", "event", "unsubscribeUrl")


def build_context(*, contact: Mapping[str, Any], variables: Mapping[str, Any] | None = None,
                  event: Mapping[str, Any] | None = None,
                  unsubscribe_url: str = "") -> dict[str, Any]:
    """The Liquid context of contract §6.

    Top level: contact properties, then variables over them (the send's data is more specific),
    then the reserved names over both, so a property called `contact` cannot hide the contact.
    """
    properties = dict(contact.get("properties") or {})
    extra = dict(variables or {})
    context: dict[str, Any] = {**properties, **extra}
    context.update({
        "contact": {"id": contact.get("id"), "email": contact.get("email"),
                    "properties": properties},
        "variables": extra,
        "event": dict(event) if event is not None else None,
        "unsubscribeUrl": unsubscribe_url,
    })
    return context


def render_email(*, subject: str, html: str | None, mjml: str | None, text: str | None,
                 context: Mapping[str, Any]) -> RenderedEmail:
    """Render subject, body and text part with `context`; a failure is a `RenderError`."""
    token = _deadline.set(time.monotonic() + RENDER_SECONDS_LIMIT)
    try:
        rendered_subject = _render(subject, context, html=False, part="subject")
        # A subject is one header line: folding newlines here keeps the header valid.
        rendered_subject = _SPACE.sub(" ", rendered_subject).strip()
        if mjml is not None:
            body = compile_mjml(_render(mjml, context, html=True, part="mjml"))
        else:
            body = _render(html or "", context, html=True, part="html")
        plain = _render(text, context, html=False, part="text") if text else html_to_text(body)
    finally:
        _deadline.reset(token)
    return RenderedEmail(subject=rendered_subject, html=body, text=plain)


def check_template(*, subject: str, html: str | None, mjml: str | None,
                   text: str | None) -> None:
    """Parse every part; raise RenderError naming the part and line of the first problem."""
    _template(subject, html=False, part="subject")
    if html is not None:
        _template(html, html=True, part="html")
    if mjml is not None:
        template = _template(mjml, html=True, part="mjml")
        _check_mjml(mjml, template)
    if text is not None:
        _template(text, html=False, part="text")


def _check_mjml(source: str, template: BoundTemplate) -> None:
    # Liquid runs before MJML at send time, so check the MJML that an empty context produces;
    # if even that fails to render (say, a division by an unset number), check the raw source.
    token = _deadline.set(time.monotonic() + RENDER_SECONDS_LIMIT)
    try:
        candidate = template.render()
    except LiquidError:
        candidate = source
    finally:
        _deadline.reset(token)
    compile_mjml(candidate)


def template_variables(*, subject: str, html: str | None, mjml: str | None,
                       text: str | None) -> list[str]:
    """The context paths a template reads (best effort, sorted): `firstName`, `contact.email`."""
    names: set[str] = set()
    for source, is_html in ((subject, False), (html, True), (mjml, True), (text, False)):
        if source:
            names.update(_variables_of(source, is_html))
    return sorted(names)


@lru_cache(maxsize=_CACHE_SIZE)
def _variables_of(source: str, html: bool) -> frozenset[str]:
    parsed = _parse(source, html)
    if isinstance(parsed, RenderError):
        return frozenset()
    return frozenset(_variable_path(variable.segments)
                     for variables in _analysis(parsed).globals.values()
                     for variable in variables)


def _variable_path(segments: Iterable[object]) -> str:
    path = ""
    for segment in segments:
        if isinstance(segment, str) and re.fullmatch(r"[A-Za-z_][\w-]*", segment):
            path = f"{path}.{segment}" if path else segment
        elif isinstance(segment, (str, int)):
            path = f"{path}[{segment!r}]" if isinstance(segment, str) else f"{path}[{segment}]"
        else:
            break  # a computed index (`a[b]`): stop at what is known
    return path
