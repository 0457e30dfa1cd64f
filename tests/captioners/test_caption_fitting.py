"""Caption fitting: properties over arbitrary model output, plus the cases that pin the behaviour."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from aiposter.captioners.fitting import (
    ALT_TEXT_MAX,
    ELLIPSIS,
    LIMITS,
    clean,
    compose,
    count_hashtags,
    count_mentions,
    fit_alt_text,
    fit_caption,
    limits_for,
    shorten,
    threads_weight,
)

PLATFORMS = [*LIMITS, "mastodon"]  # and one the fitter does not know

WORDS = st.one_of(
    st.text(min_size=1, max_size=12),                                     # anything at all
    st.sampled_from(["sea", "dune", "light", "Zürich", "東京", "naïve", "don't", "e-mail", "x" * 40]),
    st.from_regex(r"#[a-z_]{1,12}", fullmatch=True),
    st.from_regex(r"@[a-z0-9_.]{1,12}", fullmatch=True),
    st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "❤️", "🇳🇱", "…", "end.", "Really?!", "(yes)", '"quoted."']),
    st.sampled_from(["a@b.com", "x#y", "##", "#", "@"]),
)
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", "\t", "  ", "\u00a0", "\r\n", "\u3000"])


@st.composite
def captions(draw: st.DrawFn) -> str:
    """Model-like output: words and separators, often far over every limit (a run-on model repeats
    itself, and repeating keeps hypothesis's examples small)."""
    words = draw(st.lists(WORDS, min_size=1, max_size=60))
    return "".join(w + draw(SEPARATORS) for w in words) * draw(st.sampled_from([1, 1, 5, 30, 120]))


ANY_TEXT = st.one_of(captions(), st.text(max_size=3000))


def is_subsequence(words: list[str], of: list[str]) -> bool:
    remaining = iter(of)
    return all(word in remaining for word in words)


def is_word_prefix(prefix: str, text: str) -> bool:
    """``prefix`` starts ``text`` and stops at its end or right before whitespace."""
    return text.startswith(prefix) and (len(prefix) == len(text) or text[len(prefix)].isspace())


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT, platform=st.sampled_from(PLATFORMS))
def test_fitted_caption_is_within_every_limit(text, platform):
    fitted = fit_caption(text, platform)
    limits = limits_for(platform)
    assert limits.length(fitted) <= limits.max_length
    assert count_hashtags(fitted) <= limits.max_hashtags
    assert count_mentions(fitted) <= limits.max_mentions


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT, platform=st.sampled_from(PLATFORMS))
def test_fitted_caption_never_cuts_a_word(text, platform):
    cleaned = clean(text)
    fitted = fit_caption(text, platform)
    # The fitter may append one ellipsis; everything else is whole words of the input, in order.
    candidates = [fitted, fitted.removesuffix(ELLIPSIS)]
    assert any(is_subsequence(c.split(), cleaned.split()) for c in candidates)
    limits = limits_for(platform)
    if count_hashtags(cleaned) <= limits.max_hashtags and count_mentions(cleaned) <= limits.max_mentions:
        # Only the length had to give: a prefix of the input that ends where a word ends.
        assert any(is_word_prefix(c, cleaned) for c in candidates)


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT, platform=st.sampled_from(PLATFORMS))
def test_a_caption_within_the_limits_is_only_cleaned(text, platform):
    limits = limits_for(platform)
    cleaned = clean(text)
    if (limits.length(cleaned) <= limits.max_length and count_hashtags(cleaned) <= limits.max_hashtags
            and count_mentions(cleaned) <= limits.max_mentions):
        assert fit_caption(text, platform) == cleaned


@settings(max_examples=200, deadline=None)
@given(body=ANY_TEXT, tags=st.lists(st.from_regex(r"#\w{1,30}", fullmatch=True), max_size=60),
       platform=st.sampled_from(PLATFORMS))
def test_composed_caption_is_within_every_limit(body, tags, platform):
    fitted = compose(body, tags, platform)
    limits = limits_for(platform)
    assert limits.length(fitted) <= limits.max_length
    assert count_hashtags(fitted) <= limits.max_hashtags
    assert count_mentions(fitted) <= limits.max_mentions


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT)
def test_alt_text_is_short_plain_and_one_line(text):
    alt = fit_alt_text(text)
    assert len(alt) <= ALT_TEXT_MAX
    assert "\n" not in alt and "\t" not in alt
    assert count_hashtags(alt) == 0 and count_mentions(alt) == 0
    # No emoji, pictographs, joiners or control characters: letters, digits, punctuation, spaces, and
    # the odd math or currency sign.
    categories = {unicodedata.category(ch) for ch in alt}
    assert all(c[0] in "LNPZ" or c in ("Sm", "Sc") for c in categories)


@given(text=st.text(max_size=400), limit=st.integers(min_value=0, max_value=300))
def test_shorten_never_exceeds_the_limit(text, limit):
    assert len(shorten(text, limit)) <= limit


# --------------------------------------------------------------------------- examples


def test_prefers_a_sentence_end_that_keeps_most_of_the_text():
    two = "The sea was calm. The light was soft and golden over the dunes. And then more words follow"
    assert shorten(two, 70) == "The sea was calm. The light was soft and golden over the dunes."


def test_falls_back_to_a_word_boundary_with_an_ellipsis():
    text = "Short. " + "averyveryverylongword " * 10
    assert shorten(text, 60) == "Short. averyveryverylongword averyveryverylongword…"


def test_a_single_giant_word_is_dropped_not_cut():
    assert fit_caption("x" * 600, "threads") == ""


def test_threads_counts_emoji_by_their_utf8_length():
    assert threads_weight("a") == threads_weight("é") == threads_weight("東") == 1
    assert threads_weight("😀") == 4 and threads_weight("❤") == 3 and threads_weight("\u200d") == 3
    fitted = fit_caption("😀 " * 200, "threads")
    assert limits_for("threads").length(fitted) <= 500
    assert len(fitted) < 250  # by code points it would have kept far more


def test_instagram_keeps_30_hashtags_and_20_mentions():
    tags = " ".join(f"#t{i}" for i in range(40))
    mentions = " ".join(f"@u{i}" for i in range(25))
    fitted = fit_caption(f"Hello {mentions}\n\n{tags}", "instagram")
    kept_mentions = " ".join(f"@u{i}" for i in range(20))
    assert fitted == f"Hello {kept_mentions}\n\n" + " ".join(f"#t{i}" for i in range(30))


def test_compose_appends_hashtags_the_platform_allows():
    tags = ["#sea", "#dunes", "#summer"]
    assert compose("At the beach.", tags, "instagram") == "At the beach.\n\n#sea #dunes #summer"
    assert compose("At the beach.", tags, "threads") == "At the beach.\n\n#sea"
    assert compose("At the #sea.", tags, "threads") == "At the #sea."
    assert compose("At the #sea.", tags, "instagram") == "At the #sea.\n\n#dunes #summer"


def test_compose_shortens_the_body_to_keep_the_tags():
    fitted = compose("word " * 200, ["#sea"], "threads")
    assert fitted.endswith("…\n\n#sea")
    assert limits_for("threads").length(fitted) <= 500


def test_clean_drops_control_characters_but_keeps_emoji_sequences():
    assert clean(" a\x00b\x1b[31mc\r\nd 👨‍👩‍👧 ") == "ab[31mc\nd 👨‍👩‍👧"


def test_alt_text_reads_tags_as_words():
    alt = fit_alt_text("A dog 🐶 on the #beach with @anna.\nSunny.")
    assert alt == "A dog on the beach with anna. Sunny."


def test_the_template_captioner_fits_its_output_too(tmp_path):
    from aiposter.captioners import build
    from aiposter.config import Config
    from aiposter.core.ports import CaptionRequest

    request = CaptionRequest(tmp_path / "x.jpg", "IMG_1.jpg", "Trips", ["instagram", "threads"],
                             prompt_template="{{ folder }} " + "word " * 200 + "{{ hashtags }}",
                             default_hashtags=["sea", "sun"])
    result = build("template", Config()).caption(request)
    assert len(result.captions["threads"]) <= 500 and result.captions["threads"].endswith("…")
    assert result.captions["instagram"].endswith("#sea #sun")
