"""Liquid rendering (contract §6): context, escaping, text part, MJML, and the sandbox limits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.services.rendering import RenderedEmail
from app.services.rendering import RenderError
from app.services.rendering import build_context
from app.services.rendering import check_template
from app.services.rendering import html_to_text
from app.services.rendering import render_email
from app.services.rendering import template_variables

ANN = {"id": "cnt_1", "email": "ann@example.test",
       "properties": {"firstName": "Ann", "plan": "pro"}}


def _render(html: str, *, subject: str = "Hi", text: str | None = None,
            mjml: str | None = None, contact: dict[str, Any] | None = None,
            **context: Any) -> RenderedEmail:
    ctx = build_context(contact=contact or ANN, **context)
    return render_email(subject=subject, html=None if mjml else html, mjml=mjml, text=text,
                        context=ctx)


def _fails_fast(html: str, *, within: float = 2.0) -> RenderError:
    started = time.monotonic()
    with pytest.raises(RenderError) as caught:
        _render(html)
    assert time.monotonic() - started < within
    return caught.value


# --- context ---------------------------------------------------------------------------------

def test_context_exposes_contact_properties_variables_event_and_unsubscribe_url() -> None:
    source = ("{{ contact.email }}|{{ contact.id }}|{{ contact.properties.plan }}|{{ firstName }}"
              "|{{ variables.orderId }}|{{ orderId }}|{{ event.event }}"
              "|{{ event.properties.amount }}|{{ unsubscribeUrl }}")
    rendered = _render(source, variables={"orderId": "A-1"},
                       event={"event": "purchase.completed", "properties": {"amount": 60}},
                       unsubscribe_url="https://k.test/unsubscribe/tok")

    assert rendered.html == ("ann@example.test|cnt_1|pro|Ann|A-1|A-1|purchase.completed|60"
                             "|https://k.test/unsubscribe/tok")


def test_variables_win_over_properties_and_reserved_names_win_over_both() -> None:
    contact = {"id": "cnt_1", "email": "a@example.test",
               "properties": {"plan": "free", "contact": "shadow", "unsubscribeUrl": "x"}}

    rendered = _render("{{ plan }} {{ contact.email }} {{ unsubscribeUrl }}", contact=contact,
                       variables={"plan": "pro", "event": "shadow"}, unsubscribe_url="u")

    assert rendered.html == "pro a@example.test u"


def test_liquid_features_used_by_real_templates() -> None:
    source = (
        "Hi {{ nickname | default: 'there' }}, {{ firstName | upcase }}!"
        "{% if plan == 'pro' %} [pro]{% else %} [free]{% endif %}"
        "{% for item in items %} {{ forloop.index }}.{{ item.name }}x{{ item.qty }}="
        "{{ item.price | times: item.qty }}{% endfor %}"
        "{% assign total = items | map: 'price' | sum %} total {{ total }}"
        "{% unless vip %} (not vip){% endunless %} {{ items | size }} items"
    )
    items = [{"name": "Tea", "qty": 2, "price": 3}, {"name": "Cake", "qty": 1, "price": 5}]

    rendered = _render(source, variables={"items": items})

    assert rendered.html == ("Hi there, ANN! [pro] 1.Teax2=6 2.Cakex1=5 total 8 (not vip) "
                             "2 items")


def test_missing_variables_render_empty() -> None:
    assert _render("[{{ nothing }}][{{ contact.properties.nothing.deeper }}]").html == "[][]"


def test_the_subject_is_liquid_and_one_line() -> None:
    rendered = _render("<p>x</p>", subject="Order {{ orderId }}\nfor {{ firstName }}",
                       variables={"orderId": "A&B"})

    assert rendered.subject == "Order A&B for Ann"


# --- escaping and the text part --------------------------------------------------------------

def test_variables_are_html_escaped_in_the_html_body_only() -> None:
    contact = {"id": "c", "email": "a@example.test",
               "properties": {"firstName": "<script>alert(1)</script>"}}

    rendered = _render("<p>Hello {{ firstName }}</p>", subject="Hi {{ firstName }}",
                       text="Hello {{ firstName }}", contact=contact)

    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert rendered.subject == "Hi <script>alert(1)</script>"
    assert rendered.text == "Hello <script>alert(1)</script>"


def test_text_part_is_derived_from_the_html_when_not_given() -> None:
    html = ("<html><head><title>T</title><style>p {color: red}</style></head><body>"
            "<div style='display:none'>preheader</div>"
            "<h1>Welcome {{ firstName }}</h1><p>Line one<br>line two &amp; more</p>"
            "<ul><li>first</li><li>second</li></ul>"
            "<p><a href='https://acme.test/start?a=1&amp;b=2'>Get started</a> or "
            "<a href='https://acme.test/docs'>https://acme.test/docs</a></p>"
            "<p><a href='{{ unsubscribeUrl }}'>Unsubscribe</a></p></body></html>")

    rendered = _render(html, unsubscribe_url="https://k.test/unsubscribe/tok")

    assert rendered.text == (
        "Welcome Ann\n\nLine one\nline two & more\n\n- first\n- second\n\n"
        "Get started (https://acme.test/start?a=1&b=2) or https://acme.test/docs\n\n"
        "Unsubscribe (https://k.test/unsubscribe/tok)")


def test_a_given_text_part_is_used_as_is() -> None:
    rendered = _render("<p>html</p>", text="Plain {{ firstName }} & co")

    assert rendered.text == "Plain Ann & co"


def test_html_to_text_leaves_out_scripts_and_keeps_image_alt_text() -> None:
    text = html_to_text("<script>var x = 1;</script><img src='l.png' alt='Acme'><p>Body</p>")

    assert text == "Acme\n\nBody"


# --- MJML ---------------------------------------------------------------------------------------

MJML = """<mjml><mj-body>
{% if plan == 'pro' %}<mj-section><mj-column><mj-text>Pro section</mj-text></mj-column>
</mj-section>{% endif %}
<mj-section><mj-column><mj-text>Hello {{ firstName }} &amp; {{ tag }}</mj-text>
<mj-button href="https://acme.test/o/{{ orderId }}">View order</mj-button>
</mj-column></mj-section></mj-body></mjml>"""


def test_mjml_is_rendered_with_liquid_then_compiled_to_html() -> None:
    rendered = _render("", mjml=MJML, variables={"orderId": "A-1", "tag": "<b>"})

    assert rendered.html.lower().startswith("<!doctype html>")
    assert "<mj-" not in rendered.html
    assert "Pro section" in rendered.html
    assert "Hello Ann &amp; &lt;b&gt;" in rendered.html
    assert 'href="https://acme.test/o/A-1"' in rendered.html
    assert "View order (https://acme.test/o/A-1)" in rendered.text


def test_invalid_mjml_and_mj_include_are_refused() -> None:
    with pytest.raises(RenderError) as caught:
        check_template(subject="s", html=None, mjml="<mjml><mj-body><mj-section>", text=None)
    assert caught.value.part == "mjml"
    assert "Invalid MJML" in caught.value.message

    include = '<mjml><mj-body><mj-include path="/etc/passwd" /></mj-body></mjml>'
    with pytest.raises(RenderError):
        _render("", mjml=include)


def test_check_template_accepts_mjml_with_liquid_around_sections() -> None:
    check_template(subject="Hi {{ firstName }}", html=None, mjml=MJML, text=None)


# --- invalid Liquid -----------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "line"), [
    ("<p>one</p>\n<p>two</p>\n{% if %}x{% endif %}", 3),
    ("line 1\n{{ name | no_such_filter }}", 2),
    ("{{ name }\nmore", 1),
    ("a\n{% for x in items %}\nno end\n", 4),
    ("{% endif %}", 1),
])
def test_invalid_liquid_names_the_part_and_line(source: str, line: int) -> None:
    with pytest.raises(RenderError) as caught:
        check_template(subject="ok", html=source, mjml=None, text=None)

    assert caught.value.line == line
    assert caught.value.part == "html"
    assert f"html, line {line}" in caught.value.message


def test_invalid_liquid_in_subject_or_text_names_that_part() -> None:
    with pytest.raises(RenderError) as caught:
        check_template(subject="Hi {{ ", html="<p>x</p>", mjml=None, text=None)
    assert caught.value.part == "subject"

    with pytest.raises(RenderError) as caught:
        check_template(subject="Hi", html="<p>x</p>", mjml=None, text="a\nb {% unless %}")
    assert caught.value.part == "text"
    assert caught.value.line == 2


def test_templates_cannot_include_other_templates() -> None:
    for tag in ("{% include 'secret' %}", "{% render 'secret' %}"):
        with pytest.raises(RenderError):
            check_template(subject="s", html=tag, mjml=None, text=None)


def test_runtime_errors_are_render_errors() -> None:
    error = _fails_fast("ok\n{{ 10 | divided_by: 0 }}")

    assert error.line == 2
    assert error.part == "html"


# --- the sandbox -------------------------------------------------------------------------------

def test_a_huge_loop_fails_cleanly() -> None:
    error = _fails_fast("{% for i in (1..100000000) %}x{% endfor %}")

    assert "loop iteration limit" in error.message


def test_nested_loops_count_against_the_same_limit() -> None:
    _fails_fast("{% for i in (1..1000) %}{% for j in (1..1000) %}.{% endfor %}{% endfor %}")


def test_huge_output_fails_cleanly() -> None:
    line = "x" * 1000
    error = _fails_fast(f"{{% for i in (1..5000) %}}{line}{{% endfor %}}")

    assert "limit" in error.message


def test_growing_a_string_in_a_capture_or_filters_fails_cleanly() -> None:
    _fails_fast("{% capture s %}{% for i in (1..9000) %}" + "y" * 200
                + "{% endfor %}{% endcapture %}{{ s | size }}")
    # Each replace multiplies the length by ten: without a check this needs terabytes.
    chained = "{{ 'aaaaaaaaaa' " + "| replace: 'a', 'aaaaaaaaaa' " * 15 + "| size }}"
    _fails_fast(chained)
    doubling = "{% assign s = 'ab' %}" + "{% assign s = s | append: s %}" * 40 + "{{ s | size }}"
    _fails_fast(doubling)


def test_growing_arrays_and_numbers_fails_cleanly() -> None:
    _fails_fast("{% assign a = 'x,y' | split: ',' %}" + "{% assign a = a | concat: a %}" * 40
                + "{{ a | join: ',' | size }}")
    _fails_fast("{% assign n = 999999999 %}" + "{% assign n = n | times: n %}" * 30 + "{{ n }}")
    _fails_fast("{{ (1..100000000) | sort | size }}")
    _fails_fast("{{ (1..100000000) | join: ',' | size }}")


def test_normal_templates_stay_well_inside_the_limits() -> None:
    items = [{"name": f"item {n}", "price": n} for n in range(500)]

    rendered = _render("{% for item in items %}<p>{{ item.name }}: {{ item.price }}</p>"
                       "{% endfor %}", variables={"items": items})

    assert rendered.html.count("<p>") == 500


# --- variables ---------------------------------------------------------------------------------

def test_template_variables_lists_the_context_paths_read() -> None:
    names = template_variables(
        subject="Hi {{ firstName | default: 'there' }}",
        html="{% for item in variables.items %}{{ item.name }}{% endfor %}"
             "{% assign local = 1 %}{{ local }}{{ contact.properties.plan }}"
             "<a href='{{ unsubscribeUrl }}'>x</a>",
        mjml=None, text="{{ contact.email }}")

    assert names == ["contact.email", "contact.properties.plan", "firstName",
                     "unsubscribeUrl", "variables.items"]
