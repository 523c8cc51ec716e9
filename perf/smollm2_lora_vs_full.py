"""One SFT step of SmolLM2-135M-Instruct, full fine-tune vs LoRA (rank 16, every linear layer), on the same batch.

    python -m appo.train.tool_demos --out runs/smollm2/data           # demos.jsonl (or reuse it)
    grep '"source": "word"' runs/smollm2/data/demos.jsonl | head -8 > runs/smollm2/i28/demos_word8.jsonl
    OMP_NUM_THREADS=1 nice -n 19 python perf/smollm2_lora_vs_full.py 1 [demos.jsonl]

Arms interleaved full, LoRA, full, LoRA (a fresh model each), one JSON line per arm: wall seconds and CPU
seconds (``time.process_time``) of ``sft_train`` over one batch of 8 (lr 1e-4 full, 1e-3 LoRA). On a shared
machine quote the CPU seconds; the wall time measures the load. Results: docs/results/smollm2_coldstart/
lora_vs_full_step.jsonl, docs/results.md (issue 28).
"""

import json
import sys
import time

import torch

from appo.config import load_config
from appo.prompts import resolve_system_prompt
from appo.train.components import build_model, build_tools_for
from appo.train.sft import sft_train
from appo.train.sft_run import demonstrations, render_all

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
demos = sys.argv[2] if len(sys.argv) > 2 else "runs/smollm2/i28/demos_word8.jsonl"
for arm in ["full", "lora", "full", "lora"]:
    ov = [f"data.train_files=[{demos}]", "trainer.default_local_dir=runs/smollm2/i28/probe"]
    if arm == "lora":
        ov += ["model.lora_rank=16", "model.lora_alpha=32"]
    cfg = load_config("smollm2_coldstart", ov)
    model, tok = build_model(cfg)
    tools, _ = build_tools_for(cfg, "runs/smollm2/i28/probe")
    exs = render_all(demonstrations(cfg), tok, tools, "tags",
                     resolve_system_prompt(cfg.rollout.system_prompt, tools, "tags"))
    t0, c0 = time.perf_counter(), time.process_time()
    sft_train(model, exs, lr=1e-4 if arm == "full" else 1e-3, epochs=1, batch_size=8, grad_clip=1.0,
              weight_decay=0.0, seed=0, pad_id=tok.pad_token_id)
    print(json.dumps({"arm": arm, "wall": round(time.perf_counter() - t0, 1), "cpu": round(time.process_time() - c0, 1),
                      "tokens": sum(len(e[0]) for e in exs)}), flush=True)
    for t in tools:
        t.close()
