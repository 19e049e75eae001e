"""Prints fill-mask predictions of a converted model for a few sentences (Hindi by default).

Runs offline on a local folder written by ``conversion.convert``::

    python -m conversion.fill_mask_demo --model_dir hf/hindi-bert-tiny --top_k 5
    python -m conversion.fill_mask_demo --model_dir hf/hindi-bert-tiny "मुझे [MASK] पसंद है।"

``[MASK]`` in a sentence stands for the tokenizer's mask token; each sentence needs exactly one.
"""

from __future__ import annotations

import argparse
import os
import sys

MASK = "[MASK]"
SENTENCES = (
    "भारत की राजधानी [MASK] है।",
    "हिन्दी भारत में सबसे ज़्यादा बोली जाने वाली [MASK] है।",
    "गंगा भारत की सबसे लंबी [MASK] है।",
    "मुझे किताबें [MASK] बहुत पसंद है।",
)


def predict(model_dir: str, sentences, *, top_k: int = 5) -> list[tuple[str, list[dict]]]:
    """``(sentence, predictions)`` for each sentence; a prediction has ``token_str`` and ``score``.

    Raises:
        ValueError: for a sentence without exactly one ``[MASK]``.
    """
    bad = [s for s in sentences if s.count(MASK) != 1]
    if bad:
        raise ValueError(f"each sentence needs exactly one {MASK}: {bad}")
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # Loading BertForMaskedLM from a BertForPreTraining folder leaves the pooler and NSP head
    # unused; transformers reports that at warning level, which is expected here.
    hf_logging.set_verbosity_error()
    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, top_k=top_k)
    mask = fill.tokenizer.mask_token
    return [(s, fill(s.replace(MASK, mask))) for s in sentences]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.fill_mask_demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model_dir", required=True, help="a folder written by conversion.convert")
    parser.add_argument("--top_k", type=int, default=5, help="predictions per sentence")
    parser.add_argument("sentences", nargs="*", help=f"sentences with one {MASK} (default: a few Hindi ones)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        print(f"fill_mask_demo: error: {args.model_dir}/config.json not found", file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        results = predict(args.model_dir, args.sentences or SENTENCES, top_k=args.top_k)
    except ValueError as e:
        print(f"fill_mask_demo: error: {e}", file=sys.stderr)
        return 1
    for sentence, predictions in results:
        print(sentence)
        for p in predictions:
            print(f"  {p['score']:.3f}  {p['token_str']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
