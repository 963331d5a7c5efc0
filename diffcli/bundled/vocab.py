"""Domain vocabulary and a CLIP BPE tokenizer in which every domain word is one token.

Import-light: building/loading the tokenizer imports transformers lazily.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .words import PUNCTUATION, STOP_WORDS, SYNONYMS, VALUES, WORD_TO_ATTR, parse_prompt  # noqa: F401

DOMAIN_WORDS: tuple[str, ...] = tuple(sorted({w for d in SYNONYMS.values() for w in d} | set(STOP_WORDS)))
MODEL_MAX_LENGTH = 32
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


# A word as a person typed it: letters and digits together ("8k" stays "8k", not "k"), joined by
# hyphens or apostrophes ("sci-fi", "castle's"); everything else separates words.
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_JOINERS = re.compile(r"['\u2019-]")
_LIST_AT_MOST = 12


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _parts(word: str) -> list[str]:
    """The vocabulary words of one typed word: "snow-covered" -> snow, covered; "castle's" -> castle."""
    if word.endswith(("'s", "\u2019s")):
        word = word[:-2]
    return _JOINERS.split(word)


def _known(part: str) -> bool:
    return part in WORD_TO_ATTR or part in STOP_WORDS


def unknown_words(text: str) -> list[str]:
    """Words of ``text`` outside the domain vocabulary, once each, as typed ("8k", "sci-fi").

    Stop words, punctuation and a possessive "'s" are ignored; a hyphenated word counts as known when
    all its parts are.
    """
    out: list[str] = []
    for word in _words(text):
        if not all(_known(p) for p in _parts(word)) and word not in out:
            out.append(word)
    return out


def known_words_summary() -> str:
    """One sentence on what the bundled model draws."""
    names = {"obj": "objects", "color": "colours", "ground": "grounds", "time": "times", "position": "positions"}
    lists = "; ".join(f"{names[a]} {', '.join(VALUES[a])}" for a in ("obj", "color", "ground", "time", "position"))
    return f"It knows {lists}; synonyms in docs/bundled-model.md."


def unknown_words_warning(prompt: str, from_image: bool = False) -> str | None:
    """The warning for PROMPT with the bundled model, or None when it understands every word.

    Names the words it does not know, says plainly when it understood none (it then draws a random
    scene; FROM_IMAGE, for img2img, inpaint and upscale: the prompt does not steer the result), and
    says what it does know.
    """
    words = _words(prompt or "")
    if not words:
        return None  # an empty prompt is a deliberate random scene
    unknown = unknown_words(prompt)
    understood = any(p in WORD_TO_ATTR for w in words for p in _parts(w))
    shown = ", ".join(unknown[:_LIST_AT_MOST]) + (
        f" and {len(unknown) - _LIST_AT_MOST} more" if len(unknown) > _LIST_AT_MOST else ""
    )
    if not understood:
        head = (
            f"the bundled model understood no word of this prompt (unknown: {shown})"
            if unknown
            else "this prompt names nothing the bundled model draws"
        )
        result = "the prompt will not steer the result" if from_image else "it will draw a random scene"
        return f"{head}, so {result}. {known_words_summary()}"
    if unknown:
        return f"the bundled model does not know: {shown}; it draws the rest. {known_words_summary()}"
    return None


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one (ASCII) word."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        r, i = min(pairs)
        if r == 1 << 30:
            break
        a, b = parts[i], parts[i + 1]
        out, j = [], 0
        while j < len(parts):  # merge all occurrences, like CLIP
            if j < len(parts) - 1 and parts[j] == a and parts[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(parts[j])
                j += 1
        parts = out
    return parts


def build_vocab(words=DOMAIN_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id) and merge list such that each word in ``words`` is one token."""
    base = list(_bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}

    def add(pair):
        if pair not in ranks:
            ranks[pair] = len(merges)
            merges.append(pair)

    for w in words:  # left-to-right chain
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        acc = parts[0]
        for p in parts[1:]:
            add((acc, p))
            acc += p
    for _ in range(50):  # fix words that other merges break apart: append merges of what's left
        bad = False
        for w in words:
            parts = _bpe(w, ranks)
            if len(parts) > 1:
                bad = True
                add((parts[0], parts[1]))
        if not bad:
            break
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tokenizer(out_dir: str | Path):
    """Write vocab.json/merges.txt to ``out_dir`` and return the loaded ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tok = CLIPTokenizer(
        str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=MODEL_MAX_LENGTH, pad_token=EOS
    )
    tok.save_pretrained(out)
    return tok
