"""CPU cost per generated token of HFEngine decoding SmolLM2 at several batch sizes (greedy eval's choice).

Real held-out prompts (GSM8K test rows rendered with the chat template and the eval's system prompt), the same
prompts cycled to fill each batch, ``--new-tokens`` sampled at temperature 1 (EOS may end a row early: the cost
is divided by the tokens actually generated), batch sizes run in the order given (repeat one to see the drift).
Reports process CPU seconds (one thread: what the batch size changes; wall time also carries the machine's load)
per generated token and per decode step. Leaves out the agent loop's tool round trips and the padding that
rows of unequal length cost inside a batch (``perf/smollm2_eval_batch.py`` measures those on real evaluation).

    OMP_NUM_THREADS=1 python perf/smollm2_decode_batch.py --model runs/smollm2/sft_word160/sft_model
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-sizes", default="25,50,100,25")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from appo.data.sources import load_examples
    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer

    system = "Use <python>code</python> to compute; answer as <answer>\\boxed{answer}</answer>."
    lm, tok = load_model_and_tokenizer(args.model, device="cpu")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    examples = load_examples(["gsm8k"], "test", max(sizes))
    texts = [tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": ex.question}],
                                     add_generation_prompt=True, tokenize=False) for ex in examples]
    prompts = [tuple(tok.encode(t, add_special_tokens=False)) for t in texts]
    rows = []
    for b in sizes:
        engine = HFEngine(lm, tok, max_batch_size=b)
        reqs = [GenerationRequest(prompts[i % len(prompts)]) for i in range(b)]
        c0, w0 = time.process_time(), time.perf_counter()
        engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens, seed=0))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        st = engine.stats
        rows.append({"batch": b, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                     "generated_tokens": st.generated_tokens, "decode_steps": st.decode_steps,
                     "prefill_cpu_share": round(st.prefill_seconds / max(wall, 1e-9), 3),
                     "cpu_ms_per_token": round(1000 * cpu / max(st.generated_tokens, 1), 2)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
