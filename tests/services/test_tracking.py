"""Link rewriting and the open pixel (`instrument_html`), and the tracking URLs themselves."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from app.config import Settings
from app.services import tokens
from app.services.tracking import clean_url
from app.services.tracking import click_from_token
from app.services.tracking import click_url
from app.services.tracking import instrument_html
from app.services.tracking import open_url
from app.services.tracking import safe_target
from app.services.tracking import send_id_from_token
from app.services.tracking import unsubscribe_url

PUBLIC = "https://mail.example.org"
KEYS = ("current-key", "previous-key")
SEND = "snd_01TEST"
_PIXEL_ATTRIBUTES: dict[str, str | None] = {
    "src": open_url(PUBLIC, KEYS, SEND), "width": "1", "height": "1", "alt": "", "border": "0",
    "style": "display:block;width:1px;height:1px;border:0;margin:0;padding:0"}


class _Tags(HTMLParser):
    """Every start tag of a document, as (tag, attributes) in order."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # The first of repeated attributes wins, as in a browser.
        self.tags.append((tag, dict(reversed(attrs))))


def _instrument(document: str) -> tuple[str, list[str]]:
    return instrument_html(document, public_url=PUBLIC, secret_keys=KEYS, send_id=SEND)


def _hrefs(document: str) -> list[str | None]:
    return [attrs.get("href") for tag, attrs in _Tags(document).tags if tag == "a"]


def _click(index: int) -> str:
    return click_url(PUBLIC, KEYS, SEND, index)


def _pixel_src() -> str:
    return open_url(PUBLIC, KEYS, SEND)


def test_http_and_https_links_become_click_urls_in_order() -> None:
    html, links = _instrument('<p><a href="https://a.example/x">A</a> and '
                              '<a href="http://b.example/">B</a></p>')

    assert links == ["https://a.example/x", "http://b.example/"]
    assert _hrefs(html) == [_click(0), _click(1)]
    assert click_from_token(KEYS, _click(1).rsplit("/", 1)[1]) == (SEND, 1)
    assert "a.example" not in html and "b.example" not in html


@pytest.mark.parametrize("href", [
    "mailto:someone@example.com", "tel:+441234567890", "#section-2", "/relative/path",
    "javascript:void(0)", "ftp://files.example/x", "sms:123",
    f"{PUBLIC}/unsubscribe/TOKEN", f"{PUBLIC}/t/c/ALREADY-TRACKED",
])
def test_other_links_are_left_exactly_as_written(href: str) -> None:
    document = f'<a href="{href}" class="x">link</a>'

    html, links = _instrument(document)

    assert links == []
    assert html.startswith(document)


def test_only_the_href_of_a_tags_is_rewritten() -> None:
    document = ('<a data-href="https://d.example/" title="see href=https://t.example/" '
                'href="https://real.example/">x</a>'
                '<link href="https://css.example/s.css"><area href="https://area.example/">'
                '<img src="https://img.example/i.png"><a name="anchor">no href</a>')

    html, links = _instrument(document)

    assert links == ["https://real.example/"]
    [(_, first), *rest] = _Tags(html).tags
    assert first == {"data-href": "https://d.example/", "title": "see href=https://t.example/",
                     "href": _click(0)}
    assert [attrs for _, attrs in rest[:3]] == [{"href": "https://css.example/s.css"},
                                                {"href": "https://area.example/"},
                                                {"src": "https://img.example/i.png"}]


def test_a_link_can_opt_out_of_tracking() -> None:
    document = '<a href="https://login.example/magic" data-kraiter-track="OFF">Sign in</a>'

    html, links = _instrument(document)

    assert links == []
    assert html.startswith(document)


def test_entity_encoded_urls_are_stored_decoded_and_whitespace_trimmed() -> None:
    html, links = _instrument('<a href="https://s.example/?a=1&amp;b=2&#38;c=&quot;3&quot;">x</a>'
                              '<a href=" &#104;ttps://e.example/p\n ath ">y</a>')

    assert links == ['https://s.example/?a=1&b=2&c="3"', "https://e.example/p ath"]
    assert _hrefs(html) == [_click(0), _click(1)]


def test_uppercase_tags_and_single_or_unquoted_values() -> None:
    document = ("<A HREF='https://single.example/?q=1'>s</A>"
                "<a href=https://bare.example/path?x=1&y=2>b</a>"
                "<a\n  class=button\n  HREF = \"https://spaced.example/\"\n>c</a>")

    html, links = _instrument(document)

    assert links == ["https://single.example/?q=1", "https://bare.example/path?x=1&y=2",
                     "https://spaced.example/"]
    assert _hrefs(html) == [_click(0), _click(1), _click(2)]
    assert html.startswith('<A HREF="')
    assert "</A>" in html and "class=button" in html


def test_the_first_href_wins_like_in_a_browser() -> None:
    html, links = _instrument('<a href="https://first.example/" href="https://second.example/">'
                              "x</a>")

    assert links == ["https://first.example/"]
    assert _hrefs(html) == [_click(0)]
    assert "https://second.example/" in html


def test_links_in_comments_and_scripts_are_not_links() -> None:
    document = ('<!-- <a href="https://comment.example/">x</a> -->'
                '<script>document.write(\'<a href="https://script.example/">\')</script>'
                '<style>a[href="https://style.example/"]{color:red}</style>')

    html, links = _instrument(document)

    assert links == []
    assert html.startswith(document)


def test_offsets_survive_unusual_line_breaks_and_characters() -> None:
    document = ("<p>\u0130stanbul\r\u2028caf\u00e9\x0c</p>\r\n<a href='https://one.example/'>1</a>"
                "\r<p>\U0001F600</p>\n<a href=\"https://two.example/\">2</a>")

    html, links = _instrument(document)

    assert links == ["https://one.example/", "https://two.example/"]
    assert html.startswith("<p>\u0130stanbul\r\u2028caf\u00e9\x0c</p>\r\n<a href=\"")
    assert _hrefs(html) == [_click(0), _click(1)]


def test_pixel_goes_just_before_the_closing_body_tag() -> None:
    html, _ = _instrument('<html><BODY><a href="https://x.example/">x</a>'
                          "<p>\u0130\u0130\u0130</p></BODY >\n</html>")

    before, after = html.split("<img ", 1)
    assert after.endswith("></BODY >\n</html>")
    assert before.endswith("<p>\u0130\u0130\u0130</p>")
    [(_, attrs)] = [t for t in _Tags(html).tags if t[0] == "img"]
    assert attrs["src"] == _pixel_src()
    assert (attrs["width"], attrs["height"], attrs["alt"]) == ("1", "1", "")


def test_pixel_is_appended_without_a_body_tag() -> None:
    html, links = _instrument("<p>Hello</p>")

    assert links == []
    assert html.startswith("<p>Hello</p><img ")
    assert _Tags(html).tags[-1] == ("img", _PIXEL_ATTRIBUTES)


def test_pixel_goes_before_unfinished_markup_at_the_end() -> None:
    html, _ = _instrument("<p>Hello</p><span class=")

    assert html.startswith("<p>Hello</p><img ")
    assert html.endswith("><span class=")
    assert ("img", _PIXEL_ATTRIBUTES) in _Tags(html).tags


def test_a_body_end_tag_inside_a_comment_is_ignored() -> None:
    html, _ = _instrument("<body><p>x</p><!-- </body> --></body>")

    assert html.startswith("<body><p>x</p><!-- </body> --><img ")
    assert html.endswith("></body>")


def test_urls_are_built_from_public_url_and_carry_only_ids() -> None:
    opened, clicked, unsubscribe = (open_url(PUBLIC, KEYS, SEND), _click(3),
                                    unsubscribe_url(PUBLIC, KEYS, SEND))

    assert opened.startswith(f"{PUBLIC}/t/o/")
    assert clicked.startswith(f"{PUBLIC}/t/c/")
    assert unsubscribe.startswith(f"{PUBLIC}/unsubscribe/")
    assert send_id_from_token(KEYS, tokens.OPEN, opened.rsplit("/", 1)[1]) == SEND
    assert send_id_from_token(KEYS, tokens.UNSUBSCRIBE, unsubscribe.rsplit("/", 1)[1]) == SEND
    # Purposes are separate: an open token is not an unsubscribe token.
    assert send_id_from_token(KEYS, tokens.UNSUBSCRIBE, opened.rsplit("/", 1)[1]) is None


def test_first_key_signs_and_every_listed_key_verifies() -> None:
    old = tokens.make_token(("previous-key",), tokens.OPEN, [SEND])

    assert tokens.make_token(KEYS, tokens.OPEN, [SEND]) == tokens.make_token(
        ("current-key",), tokens.OPEN, [SEND])
    assert send_id_from_token(KEYS, tokens.OPEN, old) == SEND
    assert send_id_from_token(("current-key",), tokens.OPEN, old) is None


def test_secret_key_lists_several_comma_separated_keys(tmp_path: Path) -> None:
    settings = Settings.from_env({"SECRET_KEY": "new-key, old-key,,", "KRAITER_DATA_DIR":
                                  str(tmp_path)})

    assert settings.secret_keys == ("new-key", "old-key")


@pytest.mark.parametrize(("url", "safe"), [
    ("https://example.com/a?b=c#d", True),
    ("http://example.com", True),
    ("HTTPS://EXAMPLE.COM/", True),
    ("https://example.com/a b", True),
    ("javascript:alert(1)", False),
    ("//example.com/", False),
    ("https:example.com", False),
    ("https:///path-only", False),
    ("https://example.com/\r\nSet-Cookie: x=1", False),
    ("https://example.com/\x00", False),
    ("https://[::1", False),
    (None, False),
    (42, False),
])
def test_only_plain_http_urls_are_redirect_targets(url: object, safe: bool) -> None:
    assert safe_target(url) == (url if safe else None)


_FRAGMENTS = [
    '<a href="https://a.example/?x=1&amp;y=2">', "<A HREF='http://b.example'>", "</a>", "<p>",
    '<a href=https://c.example/p>', '<a title="href=https://t.example" href="https://d.example">',
    '<a data-href="https://e.example">', '<a href="mailto:x@y">', "text \r\n", "\u2028", "\u0130",
    '<!-- <a href="https://f.example"> -->', "<script>\"<a href='https://g.example'>\"</script>",
    "</body>", '<a\nhref\n=\n"https://h.example"\n>', '<a href="https://i.example" href="x">',
    '<a href="  https://k.example/\t ">', "<", ">", '"', "'", '<a href="https://l.example"/>',
    "&amp;", "<a href=>", "<a href>", '<a href="https://n.example" data-kraiter-track=off>',
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_rewriting_changes_nothing_but_tracked_hrefs(fragments: list[str]) -> None:
    document = "".join(fragments)

    html, links = _instrument(document)

    def expected(attrs: dict[str, str | None]) -> dict[str, str | None]:
        href = clean_url(attrs.get("href") or "")
        if href.startswith(("http://", "https://")) and attrs.get("data-kraiter-track") != "off":
            return {**attrs, "href": f"LINK {href}"}
        return attrs

    def followed(attrs: dict[str, str | None]) -> dict[str, str | None]:
        click = click_from_token(KEYS, (attrs.get("href") or "").rsplit("/t/c/", 1)[-1])
        return {**attrs, "href": f"LINK {links[click[1]]}"} if click else attrs

    before = [(tag, expected(attrs) if tag == "a" else attrs)
              for tag, attrs in _Tags(document).tags]
    after = [(tag, followed(attrs) if tag == "a" else attrs) for tag, attrs in _Tags(html).tags]
    assert after.count(("img", _PIXEL_ATTRIBUTES)) == 1  # however broken the HTML, it loads
    after.remove(("img", _PIXEL_ATTRIBUTES))
    assert after == before
