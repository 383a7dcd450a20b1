"""The few HTML pages people see (unsubscribe, a broken link): plain, accessible, self-contained.

No external assets, no scripts, no cookies: the page works in any browser, on a phone, and with
a screen reader, and loads nothing that could tell a third party who opened it.
"""

from __future__ import annotations

from html import escape

from flask import Response

_STYLE = """
:root{color-scheme:light dark}
body{margin:0;font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:#f4f4f5;color:#18181b}
main{box-sizing:border-box;max-width:32rem;margin:12vh auto 2rem;padding:2rem 1.5rem;
background:#fff;border-radius:.75rem}
h1{font-size:1.5rem;line-height:1.25;margin:0 0 .75rem}
p{margin:0 0 1rem}
button{font:inherit;font-weight:600;min-height:2.75rem;padding:.625rem 1.25rem;border:0;
border-radius:.5rem;background:#1d4ed8;color:#fff;cursor:pointer}
button:hover{background:#1e40af}
button:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
@media (max-width:36rem){main{margin:0;min-height:100vh;border-radius:0}button{width:100%}}
@media (prefers-color-scheme:dark){body{background:#18181b;color:#f4f4f5}
main{background:#27272a}button{background:#3b82f6;color:#0b1120}button:hover{background:#60a5fa}}
"""

# Nothing but inline styles and a same-origin form; never framed (no clickjacking of the
# unsubscribe button); the token in the URL is not sent anywhere as a Referer.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
}


def _page(title: str, body: str, status: int) -> Response:
    document = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return Response(document, status=status, mimetype="text/html", headers=_HEADERS)


def unsubscribe_confirmation(action: str) -> Response:
    """The page a link in the e-mail opens: nothing changes until the button is pressed."""
    return _page("Unsubscribe", (
        "<h1>Unsubscribe from these e-mails?</h1>\n"
        "<p>Press the button and we will stop sending you these e-mails.</p>\n"
        f'<form method="post" action="{escape(action)}">\n'
        # The same body a mail client sends for one-click unsubscribe (RFC 8058).
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
        '<button type="submit">Unsubscribe</button>\n</form>'), 200)


def already_unsubscribed() -> Response:
    """The confirmation page for someone who has unsubscribed before."""
    return _page("Unsubscribed", (
        "<h1>You're already unsubscribed</h1>\n"
        "<p>You will not receive these e-mails any more. There is nothing else to do.</p>"), 200)


def unsubscribed() -> Response:
    """The answer to the unsubscribe POST (also what a mail client's one-click POST gets)."""
    return _page("Unsubscribed", (
        "<h1>You're unsubscribed</h1>\n"
        "<p>You will not receive these e-mails any more. You can close this page.</p>"), 200)


def link_not_found() -> Response:
    """A tracking or unsubscribe link that is broken, tampered with or no longer valid."""
    return _page("Link not found", (
        "<h1>This link does not work</h1>\n"
        "<p>It may have been cut short when it was copied. Try opening it again from the "
        "e-mail.</p>"), 404)
