"""The client side of OpenAI-compatible endpoints: a chat-level agent loop with our tools and rewards.

``appo eval --endpoint URL`` evaluates any OpenAI-compatible server (``appo serve``, vLLM, SGLang, a
hosted API) as an agent. The agent loop of training (:mod:`appo.agent.loop`) is token-in/token-out over
an :class:`~appo.engine.base.Engine`; an endpoint only speaks messages, so :class:`ChatAgent` runs the same
episode at the message level:

1. send ``messages`` (system prompt + question, built as the local evaluation builds them) and our tools'
   OpenAI schemas (``Tool.schema()``);
2. when the reply has ``tool_calls``, run each with the same :class:`~appo.tools.base.Tool` objects
   (unknown names and bad JSON become ``ok=False`` results, as in the loop), append the assistant message
   and one ``tool`` message per call, and ask again;
3. a reply without calls ends the episode.

The reward sees a transcript written in the ``protocol``'s syntax (tags: ``<name>body</name>`` then
``<result>...</result>``; hermes: ``<tool_call>{json}</tool_call>`` then ``<tool_response>...``), so the
same reward functions and metrics apply (the format check reads both). What differs from the local
loop: the server decides how calls are written and parsed (``appo serve`` uses the model's own protocol),
several calls in one reply are all run, ``max_response_tokens`` counts the model's completion tokens only
(the server reports no tool-token counts), there is no token-level data (log-probs, masks), and the
sampling seed is only a request to the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from appo.agent.loop import LoopLimits
from appo.agent.protocols import get_protocol, tool_map
from appo.engine.base import SamplingParams
from appo.eval import EvalResult, EvalRow, check_benchmark_args, run_benchmarks, summarize
from appo.rewards.base import RewardFn
from appo.rewards.llm_judge import openai_client
from appo.serve.chat import call_text
from appo.tools.base import Tool
from appo.types import Example, ToolResult


def check_endpoint(client, endpoint: str, model: str | None) -> str:
    """The model id to use at ``endpoint``; ValueError naming the URL when it cannot be reached, or naming the
    served ids when ``model`` is not among them."""
    import openai

    try:
        ids = [m.id for m in client.models.list().data]
    except openai.APIConnectionError as exc:
        raise ValueError(f"cannot reach the endpoint {endpoint} ({exc}); start the server (appo serve MODEL) or "
                         "fix the URL (http://host:port/v1)") from None
    except openai.APIStatusError as exc:
        if model:  # a server without /v1/models: trust the given id
            return model
        raise ValueError(f"the endpoint {endpoint} does not list its models ({exc.status_code}); pass --model NAME") \
            from None
    if model is None:
        if not ids:
            raise ValueError(f"the endpoint {endpoint} lists no model; pass --model NAME")
        return ids[0]
    if ids and model not in ids:
        raise ValueError(f"model {model!r} is not served at {endpoint}; it serves: {', '.join(ids)}")
    return model


@dataclass(frozen=True)
class ChatRollout:
    """One finished chat-level episode."""

    messages: list[dict]
    """The conversation sent (system, user, assistant and tool messages) plus the final reply."""
    transcript: str
    """Model text and tool results written in the protocol's syntax (what rewards read)."""
    tool_calls: int
    """Tool calls run (errors included)."""
    tool_errors: int
    """Calls whose result had ``ok=False``."""
    stop_reason: str
    """``answer`` (an ``</answer>`` in the last reply), ``eos`` (a reply without calls), ``max_tool_calls``,
    ``max_length`` (the token budget ran out or the server stopped at ``max_tokens``)."""
    completion_tokens: int = 0
    """Completion tokens the server reported, summed over the turns."""
    turns: list[dict] = field(default_factory=list)
    """Per request: finish reason and completion tokens."""


def _result_text(protocol: str, text: str) -> str:
    if protocol == "tags":
        return get_protocol("tags").result_template.format(text=text)
    return f"\n<tool_response>\n{text}\n</tool_response>\n"


def _run_call(tools: Mapping[str, Tool], name: str, raw_args: str | None) -> tuple[dict, ToolResult]:
    try:
        args = json.loads(raw_args or "{}")
    except ValueError as exc:
        return {}, ToolResult(text=f"Error: the arguments of {name!r} are not valid JSON ({str(exc)[:100]})",
                              ok=False, error="parse")
    if not isinstance(args, dict):
        return {}, ToolResult(text=f"Error: the arguments of {name!r} must be a JSON object", ok=False, error="parse")
    if name not in tools:
        return args, ToolResult(text=f"Error: unknown tool {name!r}; available: {', '.join(sorted(tools)) or 'none'}",
                                ok=False, error="unknown_tool")
    return args, tools[name].safe_call(args)


class ChatAgent:
    """A chat-level agent over an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(self, client, model: str, tools: Sequence[Tool] | Mapping[str, Tool], *, protocol: str = "tags",
                 params: SamplingParams = SamplingParams(temperature=0.0, max_new_tokens=512),
                 limits: LoopLimits = LoopLimits()):
        self.client, self.model = client, model
        self.tools = tool_map(tools)
        self.protocol = get_protocol(protocol)
        self.params, self.limits = params, limits

    def initial_messages(self, example: Example, system_prompt: str | None = None) -> list[dict]:
        """System prompt + question as :meth:`ToolProtocol.build_prompt_ids` builds them locally."""
        msgs = ([dict(m) for m in example.messages] if example.messages
                else [{"role": "user", "content": example.question}])
        has_system = bool(msgs) and msgs[0].get("role") == "system"
        if system_prompt is not None:
            return [{"role": "system", "content": system_prompt}] + (msgs[1:] if has_system else msgs)
        if not has_system:
            return [{"role": "system", "content": self.protocol.default_system_prompt(self.tools)}] + msgs
        return msgs

    def _create(self, kwargs: dict[str, Any]):
        """One chat completion; a request the server refuses (4xx) is a ValueError naming the server's reason,
        which the CLI prints as one line (e.g. a server that parses no tool calls, as `vllm serve` without
        ``--enable-auto-tool-choice``). Connection errors and 5xx keep the client's own exception."""
        import openai

        try:
            return self.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            if not 400 <= exc.status_code < 500:
                raise
            reason = exc.body.get("message", exc.message) if isinstance(exc.body, dict) else exc.message
            raise ValueError(f"the endpoint refused the request ({exc.status_code}): {reason}; check that it serves "
                             f"{self.model!r} with tool calls enabled") from None

    def run(self, messages: Sequence[Mapping[str, Any]], seed: int | None = None) -> ChatRollout:
        """Run one episode from ``messages`` until a reply without calls or a limit."""
        msgs = [dict(m) for m in messages]
        schemas = [t.schema() for t in self.tools.values()]
        transcript, calls, errors, used, turns = "", 0, 0, 0, []
        while True:
            remaining = self.limits.max_response_tokens - used
            if remaining <= 0:
                stop = "max_length"
                break
            kwargs: dict[str, Any] = {"model": self.model, "messages": msgs, "temperature": self.params.temperature,
                                      "top_p": self.params.top_p,
                                      "max_tokens": min(self.params.max_new_tokens, remaining)}
            if schemas:
                kwargs["tools"] = schemas
            if seed is not None:
                kwargs["seed"] = seed
            resp = self._create(kwargs)
            choice = resp.choices[0]
            n_tok = resp.usage.completion_tokens if resp.usage is not None else 0
            used += n_tok
            turns.append({"finish_reason": choice.finish_reason, "completion_tokens": n_tok})
            content = choice.message.content or ""
            transcript += content
            tcs = list(choice.message.tool_calls or [])
            if not tcs:
                msgs.append({"role": "assistant", "content": content})
                stop = "max_length" if choice.finish_reason == "length" else (
                    "answer" if "</answer>" in content else "eos")
                break
            msgs.append({"role": "assistant", "content": content or None,
                         "tool_calls": [{"id": tc.id, "type": "function",
                                         "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                                        for tc in tcs]})
            stop = None
            for tc in tcs:
                if calls >= self.limits.max_tool_calls:
                    stop = "max_tool_calls"
                    break
                args, result = _run_call(self.tools, tc.function.name, tc.function.arguments)
                calls += 1
                errors += not result.ok
                transcript += call_text(self.protocol, self.tools, tc.function.name, args)
                transcript += _result_text(self.protocol.name, result.text)
                msgs.append({"role": "tool", "tool_call_id": tc.id, "content": result.text})
            if stop is not None:
                break
        return ChatRollout(msgs, transcript, calls, errors, stop, used, turns)


def evaluate_endpoint(
    client,
    model: str,
    examples: Sequence[Example],
    *,
    reward_fn: RewardFn,
    tools: Sequence[Tool],
    protocol: str = "tags",
    params: SamplingParams = SamplingParams(temperature=0.0, max_new_tokens=512),
    limits: LoopLimits = LoopLimits(),
    n: int = 1,
    workers: int = 8,
    seed: int | None = None,
    system_prompt: str | None = None,
    on_done: Callable[[int, int, dict], None] | None = None,
) -> EvalResult:
    """:func:`appo.eval.evaluate` for an endpoint: ``n`` episodes per example (``workers`` at once) with
    :class:`ChatAgent`, scored by ``reward_fn`` on the transcripts; the same summary (acc/em/f1, tool calls,
    truncation rate). ``on_done(done, total, summary)`` after each ``workers``-sized wave."""
    if not examples:
        raise ValueError("evaluate_endpoint() got no examples; check the benchmark names / --limit")
    agent = ChatAgent(client, model, tools, protocol=protocol, params=params, limits=limits)
    jobs = [(ex, k) for ex in examples for k in range(n)]
    rows: list[EvalRow] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(jobs), max(1, workers)):
            wave = jobs[start: start + max(1, workers)]
            outs = list(pool.map(lambda job: agent.run(agent.initial_messages(job[0], system_prompt),
                                                       None if seed is None else seed + job[1]), wave))
            scored = reward_fn([ex for ex, _ in wave], [o.transcript for o in outs])
            for (ex, _), o, s in zip(wave, outs, scored):
                rows.append(EvalRow(id=ex.id, source=ex.data_source, score=float(s.score), metrics=dict(s.metrics),
                                    tool_calls=o.tool_calls, stop_reason=o.stop_reason, response=o.transcript))
            if on_done is not None:
                on_done(len(rows), len(jobs), summarize(rows)["all"])
    return EvalResult(summary=summarize(rows), rows=rows)


def evaluate_endpoint_benchmarks(
    endpoint: str,
    benchmarks: Sequence[str],
    *,
    model: str | None = None,
    api_key: str | None = None,
    limit: int | None = None,
    tools: Sequence = ("python", "search"),
    reward: str = "default",
    protocol: str = "tags",
    system_prompt: str | None = None,
    max_response_tokens: int = 1024,
    max_tool_calls: int = 3,
    temperature: float = 0.0,
    n: int = 1,
    workers: int = 8,
    seed: int = 0,
    on_batch: Callable[[str, int, int, dict], None] | None = None,
) -> EvalResult:
    """The Python call behind ``appo eval --endpoint URL``: :func:`appo.eval.evaluate_benchmarks` with the
    model behind an OpenAI-compatible endpoint (``model``: its id; default the first one it lists)."""
    from appo.prompts import resolve_system_prompt

    check_benchmark_args(benchmarks, limit)
    client = openai_client(endpoint, api_key, max_retries=0)
    model = check_endpoint(client, endpoint, model)
    client = openai_client(endpoint, api_key)

    def run_one(examples, reward_fn, built, params, limits, cb):
        return evaluate_endpoint(client, model, examples, reward_fn=reward_fn, tools=built, protocol=protocol,
                                 params=params, limits=limits, n=n, workers=workers, seed=seed,
                                 system_prompt=resolve_system_prompt(system_prompt), on_done=cb)

    return run_benchmarks(benchmarks, run_one, limit=limit, tools=tools, reward=reward,
                          max_response_tokens=max_response_tokens, max_tool_calls=max_tool_calls,
                          temperature=temperature, seed=seed, on_batch=on_batch)
