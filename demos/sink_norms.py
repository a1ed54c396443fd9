"""Per-layer token-norm ratios of a real model: how the attention-sink rule was chosen.

    python demos/sink_norms.py [--model smollm2-135m] [--limit 40]

One sentence per forward with HF's own ``output_hidden_states`` (independent of the engine's
hooks). For each token, its state norm divided by the median norm of the sentence's other
non-special tokens; prints per layer the first real token's ratio (min / median), the 99.9th
percentile and maximum of all other tokens, BOS's ratio when the tokenizer adds one, and the
largest ratios with their token and position.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from layer_analysis.probe.data import load_parallel, named_datasets
from layer_analysis.probe.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flores = named_datasets()["flores-devtest"][0] is not None
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="flores-devtest" if flores else "default")
    parser.add_argument("--languages", default="en,de,zh,el,ar,hi")
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu", dtype="float32")
    tok = loaded.tokenizer
    corpus = load_parallel(args.data).select(args.languages.split(","), args.limit)
    first, others, bos, top = {}, {}, {}, []
    for sentence in (s for side in corpus.sides.values() for s in side.sentences):
        enc = tok(sentence, return_tensors="pt", return_special_tokens_mask=True)
        with torch.no_grad():
            hidden = loaded.model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states
        real = ~enc["special_tokens_mask"][0].bool()
        first_real = int(torch.nonzero(real)[0])
        rest = real.clone()
        rest[first_real] = False
        for layer, states in enumerate(hidden[:-1]):  # the last is after the final norm
            norms = states[0].norm(dim=-1)
            ratio = norms / norms[rest].median()
            first.setdefault(layer, []).append(float(ratio[first_real]))
            others.setdefault(layer, []).extend(ratio[rest].tolist())
            if first_real > 0:
                bos.setdefault(layer, []).append(float(ratio[0]))
            for position in torch.nonzero(rest).flatten().tolist():
                if ratio[position] > 5:
                    token = tok.convert_ids_to_tokens(int(enc["input_ids"][0, position]))
                    top.append((round(float(ratio[position]), 1), layer, position, token))
    print(f"{args.model}: BOS added: {bool(bos)}; {len(first[0])} sentences")
    print("layer  first token min / median   others p99.9 / max   BOS median")
    for layer in sorted(first):
        f, o = np.array(first[layer]), np.array(others[layer])
        b = f"{np.median(bos[layer]):8.1f}" if bos else "       -"
        print(f"{layer:5d}  {f.min():8.1f} / {np.median(f):8.1f}   {np.quantile(o, 0.999):8.2f} / "
              f"{o.max():7.2f}   {b}")
    print("largest other-token ratios (ratio, layer, position, token):")
    print(sorted(top, reverse=True)[:20])


if __name__ == "__main__":
    main()
