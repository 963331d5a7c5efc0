"""The bundled model's words: scene attributes, their synonyms, the filler words, and the prompt parser.

Plain data and the standard library only, so a command can check a prompt's words (the unknown-words
warning, diffcli.bundled.unknown_words_warning) without importing numpy or PIL; diffcli.bundled.scenes
renders and captions scenes with them.
"""

from __future__ import annotations

import re

TIMES = ("dawn", "day", "dusk", "night")
GROUNDS = ("grass", "sand", "snow", "sea")
OBJECTS = ("castle", "house", "tree", "lighthouse", "mountain")
COLORS = ("red", "blue", "green", "yellow", "white", "black", "purple", "orange")
POSITIONS = ("left", "center", "right")
ATTRIBUTES = ("time", "ground", "obj", "color", "position")
VALUES = {"time": TIMES, "ground": GROUNDS, "obj": OBJECTS, "color": COLORS, "position": POSITIONS}

# word -> canonical value (single words only; phrases are built from these words)
SYNONYMS: dict[str, dict[str, str]] = {
    "time": {
        "dawn": "dawn",
        "sunrise": "dawn",
        "daybreak": "dawn",
        "morning": "dawn",
        "day": "day",
        "daytime": "day",
        "noon": "day",
        "midday": "day",
        "afternoon": "day",
        "sunny": "day",
        "daylight": "day",
        "dusk": "dusk",
        "sunset": "dusk",
        "evening": "dusk",
        "twilight": "dusk",
        "sundown": "dusk",
        "night": "night",
        "midnight": "night",
        "nighttime": "night",
        "starry": "night",
        "moonlit": "night",
    },
    "ground": {
        "grass": "grass",
        "grassy": "grass",
        "meadow": "grass",
        "field": "grass",
        "lawn": "grass",
        "sand": "sand",
        "sandy": "sand",
        "desert": "sand",
        "beach": "sand",
        "dunes": "sand",
        "snow": "snow",
        "snowy": "snow",
        "winter": "snow",
        "ice": "snow",
        "icy": "snow",
        "sea": "sea",
        "water": "sea",
        "ocean": "sea",
        "lake": "sea",
        "waves": "sea",
    },
    "obj": {
        "castle": "castle",
        "fortress": "castle",
        "house": "house",
        "cottage": "house",
        "cabin": "house",
        "hut": "house",
        "tree": "tree",
        "oak": "tree",
        "lighthouse": "lighthouse",
        "mountain": "mountain",
        "peak": "mountain",
        "hill": "mountain",
    },
    "color": {c: c for c in COLORS} | {"crimson": "red", "violet": "purple", "golden": "yellow"},
    "position": {
        "left": "left",
        "right": "right",
        "center": "center",
        "centre": "center",
        "middle": "center",
        "centered": "center",
    },
}
WORD_TO_ATTR = {w: (a, v) for a, d in SYNONYMS.items() for w, v in d.items()}

# grammar / filler words: part of the vocabulary but carrying no attribute
STOP_WORDS = (
    "a",
    "an",
    "the",
    "at",
    "on",
    "in",
    "of",
    "with",
    "by",
    "and",
    "to",
    "under",
    "during",
    "over",
    "near",
    "is",
    "are",
    "side",
    "ground",
    "sky",
    "scene",
    "picture",
    "image",
    "photo",
    "view",
    "standing",
    "stands",
    "its",
    "some",
    "there",
    "beside",
    "big",
    "small",
    "little",
    "tall",
    "old",
    "lone",
    "single",
    "one",
    "object",
    "landscape",
    "time",
    "covered",
    "colored",
    "coloured",
    "painted",
    "bright",
    "dark",
    "light",
    "sun",
    "moon",
    "stars",
    "above",
    "below",
    "behind",
    "front",
    "from",
    "for",
    "very",
    "nice",
    "pretty",
    "beautiful",
    "scenery",
    "drawing",
)
PUNCTUATION = (".", ",", ";", ":", "!", "-")
# The other words of the instructions `tiny-edit` is trained on (diffcli.training.edit.TEMPLATES): not in the
# tokenizer's vocabulary (it spells them out character by character), but known to that model.
EDIT_WORDS = (
    "make",
    "it",
    "change",
    "turn",
    "into",
    "paint",
    "put",
    "move",
    "shift",
    "place",
    "replace",
    "instead",
    "now",
    "colour",
    "color",
)


_WORD_RE = re.compile(r"[a-z]+")


def parse_prompt(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse a prompt into stated attributes (canonical values) and a list of unknown words.

    The first mention of each attribute wins.
    """
    found: dict[str, str] = {}
    unknown: list[str] = []
    for w in _WORD_RE.findall(text.lower()):
        if w in WORD_TO_ATTR:
            attr, val = WORD_TO_ATTR[w]
            found.setdefault(attr, val)
        elif w not in STOP_WORDS:
            unknown.append(w)
    return found, unknown
