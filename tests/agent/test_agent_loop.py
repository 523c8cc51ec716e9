"""The agent loop with a scripted engine: masks, spans, limits, truncation, forks, token alignment."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from agent_doubles import CrashingTool, LongTool, ScriptedEngine, StubPython, StubSearch, default_score, script_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appo.agent.loop import AgentLoop, LoopLimits, LoopStart, TokenAlignmentError, fork_start, verify_token_alignment
from appo.agent.protocols import get_protocol
from appo.engine.base import SamplingParams
from appo.types import Example, ToolResult

EX = Example(id="t/0", question="What is 2+3?", answers=("5",), kind="math", metric="math_equiv", data_source="t")
CALL_PY = "<think>add</think><python>print(2+3)</python>"
CALL_SEARCH = "<think>ok</think><search>paris</search>"
ANSWER = "<think>done</think><answer>\\boxed{5}</answer>"


def _tools(*extra):
    tools = {"python": StubPython(), "search": StubSearch()}
    for t in extra:
        tools[t.name] = t
    return tools


def run_loop(tok, scripts, *, protocol="tags", tools=None, limits=None, params=None, starts=None, n=1,
             honour_stops=True, key_prefix=""):
    tools = tools if tools is not None else _tools()
    engine = ScriptedEngine(tok, script_policy(tok, scripts), honour_stops=honour_stops)
    loop = AgentLoop(engine, tok, protocol, tools, params or SamplingParams(max_new_tokens=64),
                     limits or LoopLimits(max_tool_calls=3, max_response_tokens=256), random.Random(0),
                     key_prefix=key_prefix)
    prompt = tuple(get_protocol(protocol).build_prompt_ids(EX, tok, tools))
    for s in starts or [LoopStart(group=0, uid=u, prompt_ids=prompt) for u in range(n)]:
        loop.add(s)
    rows = loop.run()
    return rows, loop, engine, tools, prompt


def enc(tok, text):
    return list(tok.encode(text, add_special_tokens=False))


def test_tags_masks_logprobs_and_spans_exact(tiny_tokenizer):
    tok = tiny_tokenizer
    rows, loop, engine, tools, prompt = run_loop(tok, lambda k: [CALL_PY, CALL_SEARCH, ANSWER])
    (row,) = rows
    t0, t1, t2 = enc(tok, CALL_PY), enc(tok, CALL_SEARCH), enc(tok, ANSWER)
    r0 = enc(tok, "\n<result>\nout:10\n</result>\n")
    r1 = enc(tok, "\n<result>\ndoc about paris\n</result>\n")
    assert list(row.response_ids) == t0 + r0 + t1 + r1 + t2
    assert list(row.loss_mask) == [1] * len(t0) + [0] * len(r0) + [1] * len(t1) + [0] * len(r1) + [1] * len(t2)
    P = len(prompt)
    for t, (tid, m) in enumerate(zip(row.response_ids, row.loss_mask)):
        want = default_score(P + t, tid) if m else (0.0, 0.0)
        assert (row.logprobs[t], row.entropies[t]) == want
    a = len(t0) + len(r0)
    py_open = tok.convert_tokens_to_ids("<python>")
    s0, s1 = row.tool_spans
    assert (s0.call_start, s0.call_end, s0.result_end, s0.name, s0.ok) == (t0.index(py_open), len(t0), a, "python",
                                                                           True)
    assert (s1.call_start, s1.call_end, s1.result_end, s1.name) == (
        a + t1.index(tok.convert_tokens_to_ids("<search>")), a + len(t1), a + len(t1) + len(r1), "search")
    assert row.stop_reason == "answer" and row.num_tool_calls == 2
    assert row.prompt_ids == prompt and row.response_text == tok.decode(list(row.response_ids),
                                                                        skip_special_tokens=False)
    # The engine saw the sampled ids plus the tool ids as prefixes, one call per turn, under one key.
    prefixes = [r.prefix_ids for reqs, _ in engine.calls for r in reqs]
    assert prefixes == [prompt, prompt + tuple(t0 + r0), prompt + tuple(t0 + r0 + t1 + r1)]
    assert engine.request_keys() == ["0/0"] * 3
    assert set(engine.calls[0][1].stop) >= {"</python>", "</search>", "</answer>"}
    assert tools["python"].seen == [{"code": "print(2+3)"}] and tools["search"].seen == [{"query": "paris"}]


def test_hermes_rollout_appends_template_suffix_with_mask_zero(tiny_tokenizer):
    tok = tiny_tokenizer
    call = '<tool_call>\n' + json.dumps({"name": "python", "arguments": {"code": "print(5)"}}) + '\n</tool_call>'
    final = "It is \\boxed{5}.<|im_end|>"
    rows, *_ = run_loop(tok, lambda k: [call, final], protocol="hermes")
    (row,) = rows
    t0, t1 = enc(tok, call), enc(tok, final)
    suffix = enc(tok, "<|im_end|>\n<|im_start|>user\n<tool_response>\nout:8\n</tool_response><|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert list(row.response_ids) == t0 + suffix + t1
    assert list(row.loss_mask) == [1] * len(t0) + [0] * len(suffix) + [1] * len(t1)
    assert row.stop_reason == "answer" and row.response_ids[-1] == tok.eos_token_id
    (span,) = row.tool_spans
    assert (span.call_start, span.call_end, span.result_end) == (0, len(t0), len(t0) + len(suffix))


def test_tool_limit_stop(tiny_tokenizer):
    rows, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, CALL_PY, ANSWER], limits=LoopLimits(max_tool_calls=1))
    (row,) = rows
    assert row.stop_reason == "max_tool_calls" and row.num_tool_calls == 1
    assert row.response_text.endswith("</python>") and row.loss_mask[-1] == 1


def test_tool_limit_message_then_stop(tiny_tokenizer):
    lim = LoopLimits(max_tool_calls=1, on_tool_limit="message")
    rows, _, _, tools, _ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, CALL_PY, ANSWER], limits=lim)
    (row,) = rows
    assert row.stop_reason == "answer" and [s.ok for s in row.tool_spans] == [True, False]
    assert "tool-call limit reached" in row.response_text and len(tools["python"].seen) == 1
    rows, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, CALL_PY, CALL_PY], limits=lim)
    assert rows[0].stop_reason == "max_tool_calls" and rows[0].num_tool_calls == 2


def test_zero_tool_calls_allowed(tiny_tokenizer):
    rows, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, ANSWER], limits=LoopLimits(max_tool_calls=0))
    assert rows[0].stop_reason == "max_tool_calls" and rows[0].num_tool_calls == 0


def test_tool_result_truncated_to_budget(tiny_tokenizer):
    tok = tiny_tokenizer
    budget = len(enc(tok, CALL_PY)) + 10
    rows, *_ = run_loop(tok, lambda k: [CALL_PY, ANSWER], tools={"python": LongTool()},
                        limits=LoopLimits(max_response_tokens=budget))
    (row,) = rows
    assert row.stop_reason == "max_length" and len(row.response_ids) == budget
    assert row.tool_spans[0].result_end == budget and list(row.loss_mask[-10:]) == [0] * 10


def test_length_limit_during_generation(tiny_tokenizer):
    rows, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, ANSWER], limits=LoopLimits(max_response_tokens=4))
    (row,) = rows
    assert row.stop_reason == "max_length" and len(row.response_ids) == 4 and set(row.loss_mask) == {1}
    assert row.num_tool_calls == 0


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_small_per_call_cap_continues_turns_identically(tiny_tokenizer, cap):
    """max_new_tokens caps one engine call only; the loop finds stop strings across calls."""

    class Calc(StubPython):
        name = "calc"

    scripts = lambda k: ["<calc>1+1</calc>", CALL_PY, ANSWER]  # noqa: E731  "</calc>" is several tokens
    full, *_ = run_loop(tiny_tokenizer, scripts, tools=_tools(Calc()))
    capped, _, engine, _, _ = run_loop(tiny_tokenizer, scripts, tools=_tools(Calc()),
                                       params=SamplingParams(max_new_tokens=cap))
    assert len(engine.calls) > 3
    for f in ("response_ids", "loss_mask", "logprobs", "tool_spans", "stop_reason"):
        assert getattr(full[0], f) == getattr(capped[0], f), f


def test_engine_running_past_stop_is_cut_and_stays_aligned(tiny_tokenizer):
    rows, loop, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY + "<think>junk", ANSWER + "trailing"],
                              honour_stops=False)
    (row,) = rows
    assert "junk" not in row.response_text and "trailing" not in row.response_text
    assert row.stop_reason == "answer" and row.response_text.endswith("</answer>")
    verify_token_alignment(row, loop.generations(0))


def test_user_stop_string_ends_with_no_action(tiny_tokenizer):
    rows, *_ = run_loop(tiny_tokenizer, lambda k: ["<think>hmm HALT more"], params=SamplingParams(stop=("HALT",)))
    assert rows[0].stop_reason == "no_action"


def test_eos_without_answer_and_unclosed_call(tiny_tokenizer):
    rows, *_ = run_loop(tiny_tokenizer, lambda k: ["I give up<|im_end|>"])
    assert rows[0].stop_reason == "eos"
    rows, _, _, tools, _ = run_loop(tiny_tokenizer, lambda k: ["<python>print(1)<|im_end|>", ANSWER])
    (row,) = rows
    assert row.stop_reason == "answer" and row.tool_spans[0].ok is False
    assert "was not closed" in row.response_text and tools["python"].seen == []


def test_malformed_calls_get_error_results_and_rollout_continues(tiny_tokenizer):
    tools = {"python": StubPython()}
    rows, *_ = run_loop(tiny_tokenizer, lambda k: ["<python> </python>", "<search>q</search>", ANSWER], tools=tools)
    (row,) = rows
    assert [(s.name, s.ok) for s in row.tool_spans] == [("python", False), ("search", False)]
    assert "Error: empty <python> call" in row.response_text and "unknown tool 'search'" in row.response_text
    assert tools["python"].seen == [] and row.stop_reason == "answer"
    rows, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, ANSWER], tools={"python": CrashingTool()})
    assert rows[0].tool_spans[0].ok is False and "Error: RuntimeError: boom" in rows[0].response_text


def test_calls_grouped_per_tool_per_round(tiny_tokenizer):
    scripts = {"0/0": [CALL_PY, ANSWER], "0/1": [CALL_PY, ANSWER], "0/2": [CALL_SEARCH, ANSWER], "0/3": [ANSWER]}
    rows, loop, engine, tools, _ = run_loop(tiny_tokenizer, lambda k: scripts[k], n=4, key_prefix="")
    assert tools["python"].batches == [2] and tools["search"].batches == [1]
    assert [len(reqs) for reqs, _ in engine.calls] == [4, 3]
    assert [r.stop_reason for r in rows] == ["answer"] * 4
    loop.release()
    assert engine.released == [["0/0", "0/1", "0/2", "0/3"]]


def test_no_retokenisation_drift(tiny_tokenizer):
    """The engine samples a non-canonical split; the response keeps it, re-encoding the text would not."""
    tok = tiny_tokenizer
    vocab = tok.get_vocab()
    chars = [vocab[c] for c in "<python>print(1)</python>"]  # one token per character (byte-level alphabet)
    answer = enc(tok, ANSWER)

    def policy(prefix, key, rng):
        return chars if "</result>" not in tok.decode(list(prefix)) else answer

    engine = ScriptedEngine(tok, policy)
    loop = AgentLoop(engine, tok, "tags", _tools(), SamplingParams(), LoopLimits(), random.Random(0))
    loop.add(LoopStart(group=0, uid=0, prompt_ids=tuple(enc(tok, "<|im_start|>assistant\n"))))
    (row,) = loop.run()
    assert list(row.response_ids[: len(chars)]) == chars
    assert row.tool_spans[0].ok and row.num_tool_calls == 1
    naive = enc(tok, tok.decode(chars))
    assert naive != chars  # decode -> encode drifts: "<python>" becomes one added token
    verify_token_alignment(row, loop.generations(0))
    n, k = len(chars), len(naive)
    assert k < n
    drifted = replace(row, response_ids=tuple(naive) + row.response_ids[n:], logprobs=row.logprobs[n - k:],
                      entropies=row.entropies[n - k:], loss_mask=row.loss_mask[n - k:])
    with pytest.raises(TokenAlignmentError):
        verify_token_alignment(drifted, loop.generations(0))


def test_alignment_check_catches_tampering(tiny_tokenizer):
    rows, loop, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, ANSWER])
    (row,) = rows
    gens = loop.generations(0)
    verify_token_alignment(row, gens)
    bad_mask = replace(row, loss_mask=(0,) + row.loss_mask[1:])
    with pytest.raises(TokenAlignmentError):
        verify_token_alignment(bad_mask, gens)
    bad_lp = replace(row, logprobs=(row.logprobs[0] + 1.0,) + row.logprobs[1:])
    with pytest.raises(TokenAlignmentError):
        verify_token_alignment(bad_lp, gens)


# -- forks -----------------------------------------------------------------------------------------
def _parent(tok, scripts=lambda k: [CALL_PY, ANSWER], limits=None):
    rows, *_ = run_loop(tok, scripts, limits=limits)
    return rows[0]


def test_fork_inside_call_text_completes_the_call(tiny_tokenizer):
    tok = tiny_tokenizer
    parent = _parent(tok)
    span = parent.tool_spans[0]
    t = span.call_start + 1
    rows, _, engine, tools, _ = run_loop(tok, lambda k: [CALL_PY, ANSWER], starts=[fork_start(parent, t, uid=1)])
    (fork,) = rows
    assert fork.response_ids == parent.response_ids and fork.loss_mask == parent.loss_mask
    assert fork.tool_spans == parent.tool_spans and fork.stop_reason == "answer"
    assert (fork.origin, fork.parent, fork.split, fork.root) == ("branch", 0, t, 0)
    assert engine.calls[0][0][0].prefix_ids == parent.prompt_ids + parent.response_ids[: t + 1]
    assert tools["python"].seen == [{"code": "print(2+3)"}]


def test_fork_at_call_close_runs_tool_without_generating(tiny_tokenizer):
    tok = tiny_tokenizer
    parent = _parent(tok)
    span = parent.tool_spans[0]
    rows, _, engine, tools, _ = run_loop(tok, lambda k: [CALL_PY, ANSWER],
                                         starts=[fork_start(parent, span.call_end - 1, uid=1)])
    assert rows[0].response_ids == parent.response_ids and rows[0].tool_spans == parent.tool_spans
    assert engine.calls[0][0][0].prefix_ids == parent.prompt_ids + parent.response_ids[: span.result_end]
    assert len(tools["python"].seen) == 1


def test_fork_at_step_boundary_and_inside_result(tiny_tokenizer):
    tok = tiny_tokenizer
    parent = _parent(tok)
    span = parent.tool_spans[0]
    start = fork_start(parent, span.result_end - 1, uid=1)
    assert start.tool_spans == parent.tool_spans
    rows, _, engine, tools, _ = run_loop(tok, lambda k: [CALL_PY, ANSWER], starts=[start])
    assert engine.calls[0][0][0].prefix_ids == parent.prompt_ids + parent.response_ids[: span.result_end]
    assert rows[0].response_ids == parent.response_ids and tools["python"].seen == []
    with pytest.raises(ValueError, match="inside a tool result"):
        fork_start(parent, span.result_end - 2, uid=1)
    with pytest.raises(ValueError, match="outside the response"):
        fork_start(parent, len(parent.response_ids), uid=1)


def test_fork_at_last_token_reproduces_parent(tiny_tokenizer):
    parent = _parent(tiny_tokenizer)
    rows, _, engine, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, ANSWER],
                                   starts=[fork_start(parent, len(parent.response_ids) - 1, uid=1)])
    assert engine.calls == [] and rows[0].response_ids == parent.response_ids and rows[0].stop_reason == "answer"


def test_fork_carries_tool_call_count(tiny_tokenizer):
    tok = tiny_tokenizer
    lim = LoopLimits(max_tool_calls=1)
    parent = _parent(tok, limits=lim)
    assert parent.stop_reason == "answer"
    b = parent.tool_spans[0].result_end - 1
    # The fork's script calls again after the first result: the prefix's call counts, so it is stopped.
    rows, *_ = run_loop(tok, lambda k: [CALL_PY, CALL_SEARCH], starts=[fork_start(parent, b, uid=1)], limits=lim)
    assert rows[0].stop_reason == "max_tool_calls" and rows[0].num_tool_calls == 1


def test_fork_of_fork_keeps_root(tiny_tokenizer):
    parent = _parent(tiny_tokenizer)
    child = replace(parent, uid=1, origin="branch", parent=0, split=3, root=0)
    start = fork_start(child, 5, uid=2)
    assert (start.parent, start.root, start.split) == (1, 0, 5)


def test_loop_start_validates(tiny_tokenizer):
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        LoopStart(group=0, uid=0, prompt_ids=())
    with pytest.raises(ValueError, match="must match"):
        LoopStart(group=0, uid=0, prompt_ids=(1,), response_ids=(1, 2), logprobs=(0.0,), entropies=(0.0,),
                  loss_mask=(1,))
    with pytest.raises(ValueError):
        LoopLimits(on_tool_limit="ignore")
    assert ToolResult("x").ok


def test_real_python_tool_in_the_loop(tiny_tokenizer):
    from appo.tools.python_sandbox import PythonTool

    tool = PythonTool()
    try:
        rows, *_ = run_loop(tiny_tokenizer, lambda k: [CALL_PY, ANSWER], tools={"python": tool}, n=2)
    finally:
        tool.close()
    for row in rows:
        assert "</python>\n<result>\n5\n</result>\n<think>" in row.response_text and row.tool_spans[0].ok


def _fuzz_loop(tok, protocol, turns_ids, cap, budget):
    """Run one row whose engine emits the given id lists turn after turn; check the invariants."""
    state = {"n": 0}

    def policy(prefix, key, rng):
        ids = turns_ids[min(state["n"], len(turns_ids) - 1)]
        state["n"] += 1
        return ids

    engine = ScriptedEngine(tok, policy)
    loop = AgentLoop(engine, tok, protocol, _tools(), SamplingParams(max_new_tokens=cap),
                     LoopLimits(max_tool_calls=2, max_response_tokens=budget), random.Random(0))
    loop.add(LoopStart(group=0, uid=0, prompt_ids=(1, 5, 6)))
    (row,) = loop.run()  # runs verify_token_alignment
    assert len(row.response_ids) <= budget
    assert row.num_tool_calls <= 2
    expected = [1] * len(row.response_ids)
    for s in row.tool_spans:
        assert s.call_start <= s.call_end <= s.result_end
        expected[s.call_end: s.result_end] = [0] * (s.result_end - s.call_end)
    assert list(row.loss_mask) == expected
    if row.stop_reason == "max_length":
        assert len(row.response_ids) == budget or not row.response_ids or engine.calls


_SNIPPETS = ["<python>", "</python>", "<search>", "</search>", "<answer>", "</answer>", "<tool_call>",
             "</tool_call>", "<|im_end|>", '{"name": "python", "arguments": {"code": "1"}}', "print(1)", "\n"]
_PIECE = st.one_of(st.integers(min_value=0, max_value=394), st.sampled_from(_SNIPPETS))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["tags", "hermes"]), st.lists(st.lists(_PIECE, max_size=10), min_size=1, max_size=4),
       st.integers(1, 6), st.integers(1, 60))
def test_fuzz_loop_on_random_token_streams(tiny_tokenizer, protocol, turns, cap, budget):
    tok = tiny_tokenizer
    turns_ids = [[i for x in turn for i in ([x] if isinstance(x, int) else enc(tok, x))] for turn in turns]
    _fuzz_loop(tok, protocol, turns_ids, cap, budget)
