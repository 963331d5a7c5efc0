import subprocess
import sys

import pytest

from diffcli.bundled import MODEL_DIR, unknown_words
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
    assert ids[:7] == [tokenizer.bos_token_id] + [tokenizer.convert_tokens_to_ids(w + "</w>") for w in
                                                  "a red castle at dusk".split()] + [tokenizer.eos_token_id]


def test_unknown_words():
    assert unknown_words("A red castle at dusk!") == []
    assert unknown_words("the castle of a wizard, with dragons.") == ["wizard", "dragons"]
    assert unknown_words("night. lighthouse. sea.") == []


def test_package_import_is_light():
    code = ("import sys, diffcli; t = 'torch' in sys.modules; import diffcli.bundled as b; b.unknown_words('castle'); "
            "print(b.MODEL_DIR.name, t or 'torch' not in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["tiny", "True"]
