"""AUTOMATIC1111's prompt syntax (`--prompt-syntax a1111`, the default): weights, BREAK, long prompts, LoRA tags.

    (word:1.3)  weight 1.3        (word)  x1.1        [word]  /1.1        \\( \\) \\[ \\]  literal brackets
    BREAK       start a new chunk of the text encoder's window
    <lora:NAME:0.8>  apply LoRA NAME from the LoRA folder at weight 0.8 (taken out of the prompt)

A prompt longer than the text encoder's window is encoded in chunks of (window - 2) tokens, each with
its own start and end token, and the chunks' embeddings are concatenated, as AUTOMATIC1111 does; a
chunk that fills up ends after its last comma when one is near. Each token's embedding is multiplied
by its weight and the chunk is rescaled to its original mean (A1111's "Original" emphasis).

Why not compel: compel 2.5.1 reads its own grammar, in which `(red:1.4)` is the literal text
"red:1 . 4" at weight 1, `[red]` is literal and BREAK is a word; its weighting (a lerp from the empty
prompt's embedding) and its long-prompt splitting also differ from A1111's. So the A1111 grammar is
parsed here (the algorithm of A1111's modules/prompt_parser.py) and encoded with the pipeline's own
tokenizers and text encoders into diffusers' `prompt_embeds`.

A prompt without any of this (one run of text at weight 1 that fits the window) goes to the pipeline
as plain text, so its pixels are exactly what `--prompt-syntax plain` gives. No torch at import.
"""

from __future__ import annotations

import re

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")
ROUND, SQUARE = 1.1, 1 / 1.1
BREAK = ("BREAK", -1.0)


def parse(text: str) -> list[tuple[str, float]]:
    """TEXT as (text, weight) runs; BREAK stands alone as ("BREAK", -1). Unbalanced brackets apply to the
    end of the prompt, as in A1111."""
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _ATTENTION.finditer(text):
        part, weight = m.group(0), m.group(1)
        if part.startswith("\\"):
            res.append([part[1:], 1.0])
        elif part == "(":
            round_open.append(len(res))
        elif part == "[":
            square_open.append(len(res))
        elif weight is not None and round_open and _number(weight) is not None:
            multiply(round_open.pop(), _number(weight))
        elif part == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif part == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, piece in enumerate(_BREAK.split(part)):
                if i:
                    res.append(list(BREAK))
                res.append([piece, 1.0])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    merged: list[list] = []
    for item in res or [["", 1.0]]:
        if merged and merged[-1][1] == item[1] and item[1] != BREAK[1] and merged[-1][1] != BREAK[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, float(w)) for t, w in merged]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "(a:1.2.3)": not a weight
        return None


def words(text: str) -> str:
    """TEXT's words without weights, brackets and BREAKs."""
    return " ".join(t for t, w in parse(text) if (t, w) != BREAK)


def plain_text(text: str) -> str | None:
    """The text a prompt reads as when it uses no weights and no BREAK (escapes undone); None otherwise."""
    runs = parse(text)
    if len(runs) == 1 and runs[0][1] == 1.0:
        return runs[0][0]
    return None


def take_lora_tags(prompt: str) -> tuple[str, list[str]]:
    """(PROMPT without its `<lora:NAME:WEIGHT>` tags, ["NAME:WEIGHT", ...]); a tag without a weight is 1."""
    specs = []
    for m in _LORA_TAG.finditer(prompt):
        name, weight = m.group(1).strip(), (m.group(2) or "").strip()
        specs.append(f"{name}:{weight}" if weight else name)
    text = _LORA_TAG.sub("", prompt)
    return (re.sub(r"\s{2,}", " ", text).strip(" ,") if specs else prompt), specs


# ------------------------------------------------------------------------------- encoding (torch)


def _chunks(tokenizer, text: str) -> list[tuple[list[int], list[float]]]:
    """A1111's chunking of TEXT: (token ids with start/end/padding, weight per token) per window."""
    window = tokenizer.model_max_length
    length = window - 2
    backtrack = 20 if length >= 75 else length * 20 // 75  # A1111's comma_padding_backtrack, for 75-token chunks
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    comma = None if comma == tokenizer.unk_token_id else comma  # a vocabulary without a comma token
    runs = parse(text)
    ids_per_run = tokenizer([t for t, _ in runs], truncation=False, add_special_tokens=False)["input_ids"]
    chunks: list[tuple[list[int], list[float]]] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal tokens, weights, last_comma
        filler = length - len(tokens)
        ids = [bos, *tokens, eos] + [pad] * filler
        chunks.append((ids, [1.0, *weights, 1.0] + [1.0] * filler))
        tokens, weights, last_comma = [], [], -1

    for ids, (run_text, weight) in zip(ids_per_run, runs):
        if (run_text, weight) == BREAK:
            close()
            continue
        for token in ids:
            if token == comma:
                last_comma = len(tokens)
            elif backtrack and len(tokens) == length and last_comma != -1 and len(tokens) - last_comma <= backtrack:
                cut = last_comma + 1
                rest, rest_w = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close()
                tokens, weights = rest, rest_w
            if len(tokens) == length:
                close()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close()
    return chunks


def needs_embeddings(pipe, texts) -> bool:
    """Whether any of TEXTS uses weights or BREAK, or is longer than the text encoder's window."""
    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    if tokenizer is None:
        return False
    for text in texts:
        if not text:
            continue
        plain = plain_text(text)
        if plain is None:
            return True
        if len(tokenizer(plain, truncation=False, add_special_tokens=False).input_ids) > tokenizer.model_max_length - 2:
            return True
    return False


def supports(pipe) -> bool:
    """The pipelines of families that take weighted prompts as embeddings (CLIP text encoders: Stable
    Diffusion 1/2 and SDXL) take A1111 embeddings."""
    from diffcli import families

    names = {cls for f in families.families().values() if f.takes("weighted-prompts") for cls in f.pipelines.values()}
    window = getattr(getattr(pipe, "tokenizer", None), "model_max_length", None)
    return (
        type(pipe).__name__ in names
        and getattr(pipe, "text_encoder", None) is not None
        and isinstance(window, int)
        and 3 <= window <= 100_000
    )


def encode(pipe, text: str, chunk_count: int | None = None):
    """(embeddings [1, chunks x window, dim], pooled or None) of TEXT, as many chunks as CHUNK_COUNT when
    given (padded with empty chunks, as A1111 pads the shorter of a prompt and its negative)."""
    import torch

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    device = pipe._execution_device
    per_encoder, pooled = [], None
    for tokenizer, encoder in pairs:
        chunks = _chunks(tokenizer, text)
        if chunk_count is not None:
            chunks += _chunks(tokenizer, "")[:1] * (chunk_count - len(chunks))
        parts = []
        for ids, weights in chunks:
            ids_t = torch.tensor([ids], device=device)
            with torch.no_grad():
                out = encoder(ids_t, output_hidden_states=sdxl)
            if sdxl:
                if pooled is None and out[0].ndim == 2:  # text_encoder_2's projected pooled output, first chunk
                    pooled = out[0]
                z = out.hidden_states[-2]
            else:
                z = out[0]
            w = torch.tensor(weights, dtype=z.dtype, device=z.device).reshape(1, -1, 1)
            if not torch.all(w == 1):
                mean = z.mean()
                z = z * w
                z = z * (mean / z.mean())
            parts.append(z)
        per_encoder.append(torch.cat(parts, dim=1))
    count = max(e.shape[1] for e in per_encoder)
    if any(e.shape[1] != count for e in per_encoder):  # two tokenizers that chunk differently: pad the shorter
        return encode(pipe, text, count // pipe.tokenizer.model_max_length)
    embeds = torch.cat(per_encoder, dim=-1) if sdxl else per_encoder[0]
    dtype = pipe.text_encoder_2.dtype if sdxl else pipe.text_encoder.dtype
    return embeds.to(dtype=dtype, device=device), pooled


def _chunk_count(pipe, text: str) -> int:
    counts = [len(_chunks(pipe.tokenizer, text))]
    if getattr(pipe, "text_encoder_2", None) is not None:
        counts.append(len(_chunks(pipe.tokenizer_2, text)))
    return max(counts)


def chunk_groups(pipe, prompts: list[str], negatives: list[str] | None, syntax: str) -> list[list[int]]:
    """The indices of PROMPTS grouped by how many chunks each (with its negative) is read in, in order: a
    batch denoises each group on its own, so no prompt is padded beyond what it gets alone."""
    everything = [list(range(len(prompts)))]
    if syntax != "a1111" or not supports(pipe) or not needs_embeddings(pipe, [*prompts, *(negatives or [])]):
        return everything
    groups: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        count = max(_chunk_count(pipe, prompt or ""), _chunk_count(pipe, negatives[i] or "") if negatives else 1)
        groups.setdefault(count, []).append(i)
    return list(groups.values())


def pipeline_kwargs(pipe, prompts: list[str], negatives: list[str] | None, syntax: str) -> dict:
    """The prompt arguments of one pipeline call: plain text (`prompt`, `negative_prompt`), or under
    SYNTAX "a1111", when some prompt needs them, A1111 embeddings (`prompt_embeds`, ...; the negative
    ones are unused by a call without guidance)."""
    texts = [*prompts, *(negatives or [])]
    if syntax != "a1111" or not supports(pipe) or not needs_embeddings(pipe, texts):
        if syntax == "a1111":  # escapes undone; brackets that weight nothing are not words
            prompts = [plain_text(p) if plain_text(p) is not None else p for p in prompts]
            negatives = [plain_text(n) if plain_text(n) is not None else n for n in negatives] if negatives else None
        return {"prompt": prompts, "negative_prompt": negatives}
    import torch

    count = max(_chunk_count(pipe, t) for t in texts if t) if any(texts) else 1
    encoded = [encode(pipe, p, count) for p in prompts]
    kwargs = {"prompt_embeds": torch.cat([e for e, _ in encoded])}
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if sdxl:
        kwargs["pooled_prompt_embeds"] = torch.cat([p for _, p in encoded])
    zeros = negatives is None and sdxl and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    if zeros:  # what diffusers' SDXL pipelines do for an empty negative prompt
        kwargs["negative_prompt_embeds"] = torch.zeros_like(kwargs["prompt_embeds"])
        kwargs["negative_pooled_prompt_embeds"] = torch.zeros_like(kwargs["pooled_prompt_embeds"])
    else:
        neg = [encode(pipe, n or "", count) for n in (negatives or [""] * len(prompts))]
        kwargs["negative_prompt_embeds"] = torch.cat([e for e, _ in neg])
        if sdxl:
            kwargs["negative_pooled_prompt_embeds"] = torch.cat([p for _, p in neg])
    return kwargs
