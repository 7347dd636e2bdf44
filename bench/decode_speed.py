"""CPU greedy decoding: the engine's loop that drops finished rows against transformers ``generate``.

Both decode the same held-out CoNLL-2003 sentences with the same model, batches and token limit,
alternating for ``--rounds`` rounds; reported: seconds of each, the ratio, and how many outputs are
identical (all of them, or the loop is wrong).

    python bench/decode_speed.py --model work/models/sft/model --data work/data --n 512 --out bench/results/decode_speed.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a trained model folder (an untrained one never stops)")
    ap.add_argument("--data", required=True, help="prepared data folder (conll2003/test.jsonl)")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from reasoning_ner.config import load_config
    from reasoning_ner.inference import TransformersEngine
    from reasoning_ner.modeling import load_model_and_tokenizer
    from reasoning_ner.records import read_records
    from reasoning_ner.training.generate import record_prompts

    records = read_records(Path(args.data) / "conll2003" / "test.jsonl")
    prompts = record_prompts(random.Random(0).sample(records, min(args.n, len(records))), load_config(profile="tiny-cpu").prompt)
    model, tok = load_model_and_tokenizer(args.model)
    model.eval()
    engine = TransformersEngine.for_model(model, tok, batch_size=args.batch_size)
    pruning = engine._prunes_finished_rows

    def run(prune: bool) -> tuple[float, list]:
        engine._prunes_finished_rows = pruning if prune else (lambda: False)
        t0 = time.perf_counter()
        out = engine.generate(prompts, args.max_new_tokens)
        return time.perf_counter() - t0, out

    times: dict[str, list[float]] = {"pruning": [], "generate": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, prune in (("generate", False), ("pruning", True)):
            seconds, outputs[name] = run(prune)
            times[name].append(round(seconds, 2))
    same = sum(a.text == b.text for a, b in zip(outputs["pruning"], outputs["generate"]))
    looped = sum(g.finish_reason == "length" for g in outputs["generate"])
    result = {
        "model": args.model, "sentences": len(prompts), "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "hit_the_limit": looped, "seconds": times,
        "speedup": round(statistics.mean(times["generate"]) / statistics.mean(times["pruning"]), 2),
        "identical_outputs": same, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
