"""Fit captions to each platform's limits, whatever the model wrote.

The model is told the limits, but its output is untrusted text: it may run long, stack hashtags or
contain control characters. A platform rejects an over-limit caption outright (Instagram error 2207010,
Threads "text must be at most 500 characters"), so every caption passes through :func:`fit_caption`
before it is stored. Shortening is done at a sentence end when that keeps most of the text, else at the
last whole word followed by an ellipsis; a word is never cut, and the result is never over the limit.

Lengths are counted conservatively, so that our count is never below the platform's:

* Instagram and Facebook: UTF-16 code units (what JavaScript's ``length`` reports), which is at least the
  number of code points.
* Threads: Meta counts emoji as their UTF-8 byte length. Without a list of what Meta calls an emoji,
  every character that is not an ordinary letter, digit, punctuation mark or space of the Basic
  Multilingual Plane (symbols, pictographs, variation selectors, joiners, combining marks) counts as its
  UTF-8 length.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

ELLIPSIS = "…"

Weight = Callable[[str], int]  # how much one character counts towards a length limit


def code_point(ch: str) -> int:
    return 1


def utf16_units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def threads_weight(ch: str) -> int:
    code = ord(ch)
    if code < 0x80 or (code < 0x10000 and unicodedata.category(ch)[0] in "LNPZ"):
        return 1
    return len(ch.encode("utf-8"))


def measure(text: str, weight: Weight) -> int:
    return sum(map(weight, text))


@dataclass(frozen=True)
class PlatformLimits:
    max_length: int
    weight: Weight
    max_hashtags: int
    max_mentions: int

    def length(self, text: str) -> int:
        return measure(text, self.weight)


LIMITS: dict[str, PlatformLimits] = {
    "instagram": PlatformLimits(2200, utf16_units, max_hashtags=30, max_mentions=20),
    # Threads links one topic tag per post; more '#' words are noise.
    "threads": PlatformLimits(500, threads_weight, max_hashtags=1, max_mentions=20),
    # Facebook accepts ~63,000 characters; nobody reads that far, and a runaway model should not post it.
    "facebook": PlatformLimits(5000, utf16_units, max_hashtags=30, max_mentions=50),
}
# A platform we do not know yet gets the strictest limits, not none.
DEFAULT_LIMITS = LIMITS["threads"]

ALT_TEXT_MAX = 250  # Instagram takes 1,000; screen-reader users are served by a sentence or two

# Instagram counts any '#word' or '@word', even inside a token; count the same, to stay under its limits.
_HASHTAG = re.compile(r"#\w")
_MENTION = re.compile(r"@\w")
# A sentence ends at . ! ? … (optionally closed by quotes or brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s)")
_SPACE_RUN = re.compile(r"\s+")


def limits_for(platform: str) -> PlatformLimits:
    return LIMITS.get(platform, DEFAULT_LIMITS)


def clean(text: str) -> str:
    """Drop what no caption should carry: control characters other than newline and tab, lone
    surrogates, unassigned and private-use code points, and surrounding whitespace. Format characters
    (ZWJ, variation selectors) stay, so that composed emoji survive."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = [ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs", "Cn", "Co")]
    return "".join(kept).strip()


def count_hashtags(text: str) -> int:
    return len(_HASHTAG.findall(text))


def count_mentions(text: str) -> int:
    return len(_MENTION.findall(text))


def fit_caption(text: str, platform: str) -> str:
    """``text`` cleaned and fitted to ``platform``: within its length, hashtag and mention limits."""
    limits = limits_for(platform)
    text = clean(text)
    text = _drop_excess_tokens(text, _HASHTAG, limits.max_hashtags)
    text = _drop_excess_tokens(text, _MENTION, limits.max_mentions)
    return shorten(text, limits.max_length, limits.weight)


def compose(body: str, hashtags: list[str], platform: str) -> str:
    """The caption for ``platform``: ``body``, a blank line, then ``hashtags``, all fitted.

    Hashtags go in as many as the platform allows after those already in the body, and never take more
    than a quarter of the length budget: when the text must give way the tags shrink first, but the body
    is what readers see.
    """
    limits = limits_for(platform)
    body = clean(body)
    room = max(0, limits.max_hashtags - count_hashtags(body))
    present = {t.lower() for t in re.findall(r"#\w+", body)}
    tags = [t for t in hashtags
            if count_hashtags(t) == 1 and len(t.split()) == 1 and t.lower() not in present][:room]
    while tags and limits.length(" ".join(tags)) > limits.max_length // 4:
        tags.pop()
    if not tags:
        return fit_caption(body, platform)
    block = " ".join(tags)
    body = shorten(body, limits.max_length - limits.length(block) - 2, limits.weight)
    return fit_caption(f"{body}\n\n{block}" if body else block, platform)


def fit_alt_text(text: str, max_length: int = ALT_TEXT_MAX) -> str:
    """Alt text as screen readers want it: one plain line, no emoji, and '#tag' or '@name' read as
    plain words."""
    text = unicodedata.normalize("NFC", clean(text))  # NFC, so that accents are part of their letters
    plain = "".join(ch if _is_plain(ch) else " " if ch.isspace() else "" for ch in text)
    plain = re.sub(r"[#@]+(?=\w)", "", plain)
    return shorten(" ".join(plain.split()), max_length, code_point)


def _is_plain(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNPZ" or ch in "+-=<>%&$€£"


def shorten(text: str, max_length: int, weight: Weight = code_point) -> str:
    """``text`` if it fits, else its longest prefix that ends a sentence (when that keeps at least half
    of the budget), else its longest prefix of whole words followed by an ellipsis.

    The result never exceeds ``max_length`` and never ends inside a word. A text with no word boundary
    before the limit (one giant token) yields "": a broken word is worse than no caption, and the
    pipeline reports an empty caption instead of posting it.
    """
    # prefix[i] is the length of text[:i]; one pass, so shortening is linear in the text.
    prefix = [0, *accumulate(map(weight, text))]
    if prefix[-1] <= max_length:
        return text
    best = 0
    for match in _SENTENCE_END.finditer(text):
        if prefix[match.end()] > max_length:
            break
        best = match.end()
    if best and prefix[best] >= max_length // 2:
        return text[:best]
    budget = max_length - measure(ELLIPSIS, weight)
    cut = 0
    for match in _SPACE_RUN.finditer(text):
        if prefix[match.start()] > budget:
            break
        cut = match.start()
    return f"{text[:cut]}{ELLIPSIS}" if cut else ""


def _drop_excess_tokens(text: str, pattern: re.Pattern[str], limit: int) -> str:
    """Remove whole whitespace-separated tokens, from the end, until ``pattern`` matches ``limit`` times
    or fewer; the rest of the text is untouched."""
    excess = len(pattern.findall(text)) - limit
    if excess <= 0:
        return text
    tokens = re.split(r"(\s+)", text)
    for i in range(len(tokens) - 1, -1, -1):
        if excess <= 0:
            break
        hits = len(pattern.findall(tokens[i]))
        if hits:
            tokens[i] = ""
            excess -= hits
    return _tidy_spaces("".join(tokens))


def _tidy_spaces(text: str) -> str:
    """Collapse the runs of spaces that removing tokens leaves behind, keeping paragraph breaks."""
    lines = [re.sub(r"[ \t]{2,}", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
