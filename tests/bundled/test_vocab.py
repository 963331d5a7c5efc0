import subprocess
import sys

import pytest

from diffcli.bundled import MODEL_DIR, unknown_words, unknown_words_warning
from diffcli.bundled.vocab import DOMAIN_WORDS, build_tokenizer


@pytest.fixture(scope="module", params=["built", "shipped"])
def tokenizer(request, tmp_path_factory):
    if request.param == "built":
        return build_tokenizer(tmp_path_factory.mktemp("tok"))
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(MODEL_DIR / "tokenizer")


def test_every_domain_word_is_one_token(tokenizer):
    assert len(DOMAIN_WORDS) > 100
    for w in DOMAIN_WORDS:
        toks = tokenizer.tokenize(w)
        assert len(toks) == 1, (w, toks)
    ids = {tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w)[0]) for w in DOMAIN_WORDS}
    assert len(ids) == len(DOMAIN_WORDS) and tokenizer.unk_token_id not in ids


def test_unknown_words_still_tokenize(tokenizer):
    toks = tokenizer.tokenize("zebra")
    assert len(toks) > 1 and "".join(toks).replace("</w>", "") == "zebra"
    ids = tokenizer("a red castle at dusk", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == tokenizer.model_max_length <= 77
    assert ids[:7] == [tokenizer.bos_token_id] + [
        tokenizer.convert_tokens_to_ids(w + "</w>") for w in "a red castle at dusk".split()
    ] + [tokenizer.eos_token_id]


def test_unknown_words():
    assert unknown_words("A red castle at dusk!") == []
    assert unknown_words("the castle of a wizard, with dragons.") == ["wizard", "dragons"]
    assert unknown_words("night. lighthouse. sea.") == []


def test_unknown_words_are_reported_as_typed():
    # letters and digits stay together: "8k" is not reported as "k"
    assert unknown_words("castle at dusk, 8k, highly detailed") == ["8k", "highly", "detailed"]
    assert unknown_words("4K castle, 1920s house") == ["4k", "1920s"]
    # hyphenated words: known when every part is, else shown whole; a possessive 's is no word
    assert unknown_words("snow-covered castle's roof") == ["roof"]
    assert unknown_words("a sci-fi house") == ["sci-fi"]
    # each word once, non-ASCII letters kept
    assert unknown_words("café, café, dragon") == ["café", "dragon"]


def test_warning_names_the_words_and_what_the_model_knows():
    msg = unknown_words_warning("red castle at dusk, 8k")
    assert msg.startswith("the bundled model does not know: 8k;")
    assert ", k" not in msg and ": k" not in msg
    for word in ("castle", "lighthouse", "purple", "snow", "night", "left"):
        assert word in msg
    assert "docs/bundled-model.md" in msg


def test_warning_says_plainly_when_no_word_was_understood():
    msg = unknown_words_warning("a wizard with dragons")
    assert msg.startswith("the bundled model understood no word of this prompt (unknown: wizard, dragons)")
    assert "random scene" in msg and "castle" in msg
    # img2img, inpaint, upscale: the input image decides, not a random scene
    msg = unknown_words_warning("a wizard with dragons", from_image=True)
    assert "the prompt will not steer the result" in msg and "random scene" not in msg
    # only filler words: nothing unknown, but nothing to draw either
    assert "names nothing the bundled model draws" in unknown_words_warning("a beautiful picture")


def test_no_warning_when_every_word_is_known():
    assert unknown_words_warning("A red castle at dusk!") is None
    assert unknown_words_warning("snowy field at night with a violet cottage on the right") is None
    assert unknown_words_warning("") is None and unknown_words_warning(" ,. ") is None


def test_long_lists_are_cut():
    msg = unknown_words_warning("castle " + " ".join(f"w{i}" for i in range(20)))
    assert "w11 and 8 more;" in msg and "w12" not in msg


def test_package_import_is_light():
    code = (
        "import sys, diffcli; t = 'torch' in sys.modules; import diffcli.bundled as b; b.unknown_words('castle'); "
        "b.unknown_words_warning('8k'); "
        "print(b.MODEL_DIR.name, t or 'torch' not in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["tiny", "True"]
