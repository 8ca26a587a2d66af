"""
Attacker-controlled text (exception classes and messages, routes, SQL) made
safe for each place an alert shows it.  Pure functions.

* ``bound``: collapse control characters and whitespace, cut to a length
  (``...`` marks the cut).  Every string from telemetry goes through it.
* ``slack``: Slack's three entities (``& < >``), so no ``<!channel>``,
  ``<@U123>`` or ``<url|text>`` link can be formed; ``@`` gets a zero-width
  space after it, so ``@channel``/``@here``/``@everyone`` are not words Slack
  matches; ``://`` is broken so no bare URL is auto-linked.  Slack has no
  markdown escape: messages put this text in ``plain_text`` objects and send
  the top-level text with ``mrkdwn: false``.
* ``discord``: every markdown character backslash-escaped, mentions broken
  like Slack's, URLs broken; messages also send ``allowed_mentions:
  {"parse": []}`` so even a missed mention pings nobody.
* ``header``: one line for an email header (no CR/LF, no control chars).
* ``html``: ``html.escape`` (quotes too).
"""

import html as _html
import re

ZWSP = "\u200b"
_CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029\u0085]+")
_SPACES = re.compile(r"\s+")
_DISCORD_MARKDOWN = re.compile(r"([\\*_~`|>#\-\[\]()<:])")


def bound(text, limit):
    """One line, at most ``limit`` characters (then ``...``)."""
    if text is None:
        return ""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", str(text))).strip()
    if len(text) > limit:
        text = text[:max(0, limit - 3)].rstrip() + "..."
    return text


def _defang(text):
    text = text.replace("@", "@" + ZWSP)
    return re.sub(r"(?i)([a-z][a-z0-9+.-]*):(//)", lambda m: m.group(1) + ":" + ZWSP
                  + m.group(2), text)


def slack(text, limit=200):
    text = bound(text, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _defang(text)


def discord(text, limit=200):
    text = bound(text, limit)
    text = _defang(text)
    return _DISCORD_MARKDOWN.sub(r"\\\1", text)


def header(text, limit=200):
    return bound(text, limit)


def html(text, limit=2000):
    return _html.escape(bound(text, limit), quote=True)
