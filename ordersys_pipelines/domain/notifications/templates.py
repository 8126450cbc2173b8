"""Rendering notifications from Jinja2 templates.

One template per notification type, `<type>.j2`, with a `subject` and a `body` block. The
packaged templates live next to this module; a file of the same name in the templates folder
setting (ORDERSYS_NOTIFY_TEMPLATES) overrides one. Undefined fields are errors
(StrictUndefined): a template that uses a field the context does not have fails with a
TemplateRenderError naming the template and the field, instead of sending a hole to a customer.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ordersys_pipelines.domain.money import for_customer

if TYPE_CHECKING:  # imported by the functions that render: only the dispatch's runs need Jinja2
    import jinja2

PACKAGED_TEMPLATES = Path(__file__).with_name("templates")
BLOCKS = ("subject", "body")

_MISSING_PATTERNS = (
    re.compile(r"'(?P<field>[^']+)' is undefined"),
    re.compile(r"has no attribute '(?P<field>[^']+)'"),
    re.compile(r"has no element (?P<field>.+)$"),
)


class TemplateRenderError(Exception):
    """A notification template that cannot be rendered: names the template and the field."""

    def __init__(
        self, template: str, message: str, field: str | None = None, line: int | None = None,
        source: str | None = None,
    ):
        self.template = template
        self.field = field
        self.line = line
        where = f"template {template!r}"
        if source and source != template:
            where += f" (in {source!r}" + (f" line {line})" if line else ")")
        elif line:
            where += f" line {line}"
        what = f"missing field {field!r} ({message})" if field else message
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def _money(context, cents: int) -> str:
    return for_customer(cents, context["currency"])


@functools.cache
def _environment_class() -> type[jinja2.Environment]:
    """Made on first use, as Jinja2 is imported only by the runs that render."""
    import jinja2

    class PlainGlobalsEnvironment(jinja2.Environment):
        """Templates whose globals are a plain dict, not jinja2's ChainMap over the environment's:
        every render and every include makes a context that copies the globals, and walking the
        ChainMap for it was a third of rendering. The globals are complete when the environment
        is made (nothing is added later), so a copy sees the same names."""

        def make_globals(self, d):
            return {**self.globals, **(d or {})}

    return PlainGlobalsEnvironment


@functools.lru_cache(maxsize=8)
def environment(templates_dir: str | None = None) -> jinja2.Environment:
    """The template environment: the override folder first, then the packaged templates."""
    import jinja2

    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(PACKAGED_TEMPLATES))]
    if templates_dir:
        loaders.insert(0, jinja2.FileSystemLoader(templates_dir))
    env = _environment_class()(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain-text messages
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates are read once per process: checking every template and include for changes
        # at every message was a third of rendering. A changed template applies to the next run.
        auto_reload=False,
    )
    env.filters["money"] = jinja2.pass_context(_money)
    return env


def template_name(notification_type: str) -> str:
    return f"{notification_type}.j2"


@functools.lru_cache(maxsize=256)
def checked_template(name: str, templates_dir: str | None) -> jinja2.Template:
    """The template `name` with both blocks; kept for the process, like the environment's
    templates (an error is raised, not kept: a fixed template is found on the next call)."""
    import jinja2

    try:
        template = environment(templates_dir).get_template(name)
    except jinja2.TemplateNotFound:
        searched = [templates_dir] if templates_dir else []
        raise TemplateRenderError(
            name, f"no such template in {', '.join([*searched, str(PACKAGED_TEMPLATES)])}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(exc.name or name, f"syntax error: {exc.message}", line=exc.lineno) from None
    missing = [block for block in BLOCKS if block not in template.blocks]
    if missing:
        raise TemplateRenderError(name, f"has no {' or '.join(missing)} block")
    return template


def render(notification_type: str, context: dict[str, Any], templates_dir: str | None = None) -> Rendered:
    """Subject (one line) and body of `notification_type` for `context`."""
    import jinja2

    name = template_name(notification_type)
    template = checked_template(name, templates_dir)
    parts = {}
    shared = template.new_context(context)  # blocks only read it (a `set` in a block is local)
    for block in BLOCKS:
        try:
            parts[block] = "".join(template.blocks[block](shared))
        except jinja2.UndefinedError as exc:
            raise _undefined_error(name, template, exc) from None
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(name, str(exc)) from None
    # A header is one line; stray template newlines would make an invalid (or injected) header.
    subject = " ".join(parts["subject"].split())
    if not subject:
        raise TemplateRenderError(name, "the subject block renders empty")
    return Rendered(subject=subject, body=parts["body"].strip() + "\n")


def _undefined_error(name: str, template: jinja2.Template, exc: jinja2.UndefinedError) -> TemplateRenderError:
    message = str(exc)
    field = next((m.group("field") for p in _MISSING_PATTERNS if (m := p.search(message))), None)
    # Frames of compiled template code know their template, which maps code lines to template
    # lines; the innermost such frame is where the field is used (the template or an include).
    source = line = None
    traceback = exc.__traceback__
    while traceback is not None:
        frame_template = traceback.tb_frame.f_globals.get("__jinja_template__")
        if frame_template is not None:
            source = frame_template.name
            line = frame_template.get_corresponding_lineno(traceback.tb_lineno)
        traceback = traceback.tb_next
    return TemplateRenderError(name, message, field=field, line=line, source=source)
