"""What proves A1111 prompt weights, measured on the bundled model with its evaluator.

`(red:1.4) house, (night:0.6)` against the same words unweighted (`red house, night`), and the reverse
weighting `(red:0.6) house, (night:1.4)`, each on the same N seeds, through the CLI as a user runs it
(`diffcli txt2img PROMPT -n N --seed 0`, the model's default settings). For each image the evaluator
gives its probability of colour = red and of time = night; the figures are the means over the seeds,
how often each is the evaluator's top answer, and the mean log-odds (which still move where the
evaluator is sure: the bundled model draws an uncontested "red house, night" right nearly every
time). The bar: the weighted prompt moves red up and night down against the unweighted one (and the
reverse weighting the other way). A contested pair, "red blue house, night day" with and without
`(red:1.4)`/`(night:0.6)`, shows the weights deciding between two named values.

    python bench/prompt_weights.py [-n 100] [--out DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffcli.bundled.evaluator import HEADS, load_evaluator, to_tensor

PROMPTS = {
    "unweighted": "red house, night",
    "weighted": "(red:1.4) house, (night:0.6)",
    "reverse": "(red:0.6) house, (night:1.4)",
    # contested: two colours and two times named, so the weights decide between them
    "contested": "red blue house, night day",
    "contested-weighted": "(red:1.4) blue house, (night:0.6) day",
}


def generate(prompt: str, n: int, out: Path) -> list[Path]:
    """N images of PROMPT (seeds 0..N-1) in OUT; images already there from an earlier run are reused."""
    done = sorted(out.glob("*.png"))
    if len(done) == n:
        return done
    cmd = [
        sys.executable,
        "-m",
        "diffcli",
        "txt2img",
        prompt,
        "-n",
        str(n),
        "--seed",
        "0",
        "--batch-size",
        "25",
        "-o",
        str(out),
        "--quiet",
        "--no-server",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [Path(line) for line in done.stdout.split()]


def probabilities(evaluator, paths: list[Path]) -> dict[str, np.ndarray]:
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        _, logits = evaluator.net(to_tensor(images))
    red = torch.softmax(logits["color"], 1)[:, HEADS["color"].index("red")].numpy()
    night = torch.softmax(logits["time"], 1)[:, HEADS["time"].index("night")].numpy()
    top_red = (logits["color"].argmax(1) == HEADS["color"].index("red")).numpy()
    top_night = (logits["time"].argmax(1) == HEADS["time"].index("night")).numpy()
    return {
        "p_red": red,
        "p_night": night,
        "top_red": top_red,
        "top_night": top_night,
        "odds_red": _log_odds(logits["color"], HEADS["color"].index("red")),
        "odds_night": _log_odds(logits["time"], HEADS["time"].index("night")),
    }


def _log_odds(logits, k: int) -> np.ndarray:
    """log P(k) - log P(not k): unlike P itself, it still moves where the evaluator is sure."""
    others = torch.cat([logits[:, :k], logits[:, k + 1 :]], 1)
    return (logits[:, k] - torch.logsumexp(others, 1)).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="seeds per prompt")
    ap.add_argument("--out", type=Path, default=None, help="keep the images here")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="prompt-weights-"))
    evaluator = load_evaluator()
    rows = {}
    for name, prompt in PROMPTS.items():
        t0 = time.perf_counter()
        paths = generate(prompt, args.n, out / name)
        rows[name] = probabilities(evaluator, paths)
        print(f"{name:10s} {prompt!r}: {len(paths)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"\nbundled model, {args.n} seeds (0..{args.n - 1}) per prompt, default settings\n")
    print("| prompt | mean P(red) | top = red | log-odds red | mean P(night) | top = night | log-odds night |")
    print("|---|---|---|---|---|---|---|")
    for name, prompt in PROMPTS.items():
        r = rows[name]
        print(
            f"| `{prompt}` | {r['p_red'].mean():.3f} | {r['top_red'].mean():.2f} | {r['odds_red'].mean():.2f} "
            f"| {r['p_night'].mean():.3f} | {r['top_night'].mean():.2f} | {r['odds_night'].mean():.2f} |"
        )
    verdicts = {}
    for weighted, base, sign in (
        ("weighted", "unweighted", (+1, -1)),
        ("reverse", "unweighted", (-1, +1)),
        ("contested-weighted", "contested", (+1, -1)),
    ):
        for key, want in zip(("odds_red", "odds_night"), sign):
            diff = rows[weighted][key] - rows[base][key]  # paired by seed
            moved = np.mean(np.sign(diff) == want)
            verdicts[weighted, key] = bool(np.sign(diff.mean()) == want)
            print(
                f"{weighted} vs {base}, {key}: mean change {diff.mean():+.2f} (paired by seed; {moved:.0%} of "
                f"seeds move the weighted way)"
            )
    bar = verdicts["weighted", "odds_red"] and verdicts["weighted", "odds_night"]
    print(
        f"\nbar ({PROMPTS['weighted']!r} moves red up and night down vs {PROMPTS['unweighted']!r}, mean "
        f"log-odds over the seeds): {'met' if bar else 'NOT met'}"
    )
    missed = [f"{w} {k}" for (w, k), ok in verdicts.items() if not ok]
    print(f"every comparison its way: {'yes' if not missed else 'no: ' + ', '.join(missed)}")


if __name__ == "__main__":
    main()
