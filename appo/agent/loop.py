"""The multi-turn token-in/token-out agent loop over a batch of rows.

Each round, every active row generates in one ``Engine.generate`` call (stop at a tool-call close, an
answer close, or end of turn); finished turns are parsed by the protocol, the tools run (grouped per
tool through ``Tool.call_batch``, the groups in parallel), and the result ids are appended with
``loss_mask`` 0. A row ends on an answer, EOS, the tool-call limit, or the response budget.

Token-in/token-out: the response holds exactly the ids the engine sampled (a prefix of them when the
loop cuts a turn at a stop string the engine ran past) and the tool ids tokenized on their own;
model text is never decoded and re-encoded. :func:`~appo.agent.alignment.verify_token_alignment` checks
this for every finished row (the response is the fork prefix, then the kept engine outputs and tool ids in order).

Choices where the papers are silent (docs/algorithm.md 11 lists the departures):

- ``max_response_tokens`` counts every response token, tool results included. A tool result that
  does not fit is cut to the remaining budget and the row stops with ``max_length``.
  ``SamplingParams.max_new_tokens`` only caps one engine call: a turn that hits it while budget
  remains is continued by the next round's call (the loop, not the engine, then finds stop strings
  that straddle the two calls).
- Tool-call limit (``LoopLimits.max_tool_calls``; a malformed call counts, it used a round): with
  ``on_tool_limit="stop"`` (default) a call past the limit ends the row with ``max_tool_calls``,
  the call text kept, no result and no span. With ``"message"`` the first call past the limit gets
  :meth:`ToolProtocol.limit_message` as its (``ok=False``) result and the row may answer; a second
  one stops it.
- Forks (:func:`~appo.agent.fork.fork_start`): a start may be a prefix of an existing row; calls in the prefix count
  toward the limit. When the prefix ends inside a call, the continuation completes it; when it ends
  on the token that closed a call (or an answer / EOS), that turn is processed without generating.
- Cache keys: one per row, ``f"{key_prefix}{group}/{uid}"``; the loop never releases them (the
  strategy does, once the forks that reuse them are done; :meth:`AgentLoop.release`).
- Seeds: the loop draws one seed from ``rng`` when it is built (or takes ``seed``). Each engine request
  carries its own seed, ``derive_seed(loop seed, group, uid, n)`` for the row's n-th engine call, and
  strategies draw their random choices from :meth:`AgentLoop.rng_for` keyed the same way. A prompt's
  rows are then a function of (loop seed, prompt, weights) alone, whatever other prompts run beside
  them: the property that lets rollouts be split over workers (:mod:`appo.distributed.ray_rollout`)
  and still equal the single-process run (up to float round-off between batch compositions).
"""

from __future__ import annotations

import hashlib
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Mapping, Sequence

from appo.agent.alignment import TokenAlignmentError, verify_token_alignment
from appo.agent.fork import LoopStart, fork_start
from appo.agent.protocols import ToolProtocol, TurnAction, end_of_turn_ids, get_protocol, tool_map
from appo.engine.base import Engine, Generation, GenerationRequest, SamplingParams
from appo.tools.base import Tool
from appo.types import Rollout, StopReason, ToolResult, ToolSpan

__all__ = [  # the fork record and the alignment check live beside the loop; importable from here as before
    "AgentLoop", "LoopLimits", "LoopStart", "TokenAlignmentError", "TurnEvent", "derive_seed", "fork_start",
    "verify_token_alignment",
]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a stable function of ``parts`` (blake2b of their repr; the same across
    processes and Python versions, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass(frozen=True)
class LoopLimits:
    """Per-row limits of the agent loop."""

    max_tool_calls: int = 3
    """Tool calls allowed per row (forks count the calls in their prefix). The paper: 3 for reasoning, 6 for
    deep search."""
    max_response_tokens: int = 1024
    """Response budget in tokens, model and tool tokens together; a row that reaches it stops (max_length)."""
    on_tool_limit: Literal["stop", "message"] = "stop"
    """A call past the limit: ``stop`` the row, or show a ``message`` once and let the model answer."""
    tool_workers: int = 8
    """How many tools run their batches at once (each tool bounds its own calls by ``Tool.max_workers``)."""

    def __post_init__(self) -> None:
        if self.max_tool_calls < 0 or self.max_response_tokens < 1:
            raise ValueError(f"LoopLimits: max_tool_calls={self.max_tool_calls} must be >= 0 and "
                             f"max_response_tokens={self.max_response_tokens} >= 1")
        if self.on_tool_limit not in ("stop", "message"):
            raise ValueError(f"LoopLimits.on_tool_limit={self.on_tool_limit!r} must be 'stop' or 'message'")


@dataclass
class _Row:
    start: LoopStart
    key: str
    ids: list[int]
    logp: list[float]
    ent: list[float]
    mask: list[int]
    spans: list[ToolSpan]
    turn_start: int
    pending: bool
    stop: StopReason | None = None
    gens: list[Generation] = field(default_factory=list)
    calls: int = 0


@dataclass(frozen=True)
class TurnEvent:
    """A row that received sampled tokens in a round (for strategies that act between rounds)."""

    index: int
    """Row index in the loop (order of :meth:`AgentLoop.add`)."""
    turn_start: int
    """Response position where the current turn began."""
    new_from: int
    """First response position sampled in this round (``== turn_start`` for a turn's first call)."""
    new_to: int
    """One past the last sampled position kept in this round."""


class AgentLoop:
    """Runs rows (fresh or forked) to completion, one engine call per round. See the module docstring."""

    def __init__(
        self,
        engine: Engine,
        tokenizer,
        protocol: str | ToolProtocol,
        tools: Sequence[Tool] | Mapping[str, Tool],
        params: SamplingParams,
        limits: LoopLimits,
        rng: random.Random,
        key_prefix: str = "",
        seed: int | None = None,
    ) -> None:
        self.engine, self.tokenizer, self.params, self.limits, self.rng = engine, tokenizer, params, limits, rng
        self.seed = seed if seed is not None else rng.getrandbits(63)
        """Root of every seed this loop hands out (requests, :meth:`rng_for`)."""
        self._round = 0
        self.protocol = get_protocol(protocol)
        self.protocol.bind(tokenizer)
        self.tools = tool_map(tools)
        self.protocol_stops = self.protocol.stop_strings(self.tools)
        self.stops = tuple(dict.fromkeys((*self.protocol_stops, *params.stop)))
        self.eos_ids = end_of_turn_ids(tokenizer) | frozenset(getattr(engine, "eos_token_ids", None) or ())
        self.key_prefix = key_prefix
        self.rows: list[_Row] = []
        self.keys: list[str] = []

    # -- rows ---------------------------------------------------------------------------------
    def add(self, start: LoopStart) -> int:
        """Queue a row; returns its index. A fork prefix ending mid-turn is checked before generating."""
        key = f"{self.key_prefix}{start.group}/{start.uid}"
        turn_start = max((s.result_end for s in start.tool_spans), default=0)
        self.rows.append(_Row(start, key, list(start.response_ids), list(start.logprobs), list(start.entropies),
                              list(start.loss_mask), list(start.tool_spans), turn_start,
                              pending=len(start.response_ids) > turn_start))
        self.keys.append(key)
        return len(self.rows) - 1

    def active(self) -> list[int]:
        """Indices of rows still running."""
        return [i for i, r in enumerate(self.rows) if r.stop is None]

    def snapshot(self, index: int) -> Rollout:
        """The row as a Rollout now (``stop_reason`` is ``no_action`` while it still runs)."""
        r = self.rows[index]
        s = r.start
        return Rollout(
            group=s.group, uid=s.uid, prompt_ids=tuple(s.prompt_ids), response_ids=tuple(r.ids),
            logprobs=tuple(r.logp), entropies=tuple(r.ent), loss_mask=tuple(r.mask),
            stop_reason=r.stop or "no_action",
            response_text=self._decode(r.ids),
            tool_spans=tuple(r.spans), origin=s.origin, parent=s.parent, split=s.split, root=s.root,
            branch_score=s.branch_score, data_index=s.data_index,
        )

    def state(self, index: int) -> LoopStart:
        """The row's current state as a :class:`LoopStart` (cheap; for :func:`fork_start` mid-run)."""
        r = self.rows[index]
        return replace(r.start, response_ids=tuple(r.ids), logprobs=tuple(r.logp), entropies=tuple(r.ent),
                       loss_mask=tuple(r.mask), tool_spans=tuple(r.spans))

    def generations(self, index: int) -> list[Generation]:
        """The kept engine outputs of a row, in order (for :func:`verify_token_alignment`)."""
        return list(self.rows[index].gens)

    def rollouts(self) -> list[Rollout]:
        """All rows as Rollouts, alignment-checked; every row must have finished."""
        out = []
        for i, r in enumerate(self.rows):
            if r.stop is None:
                raise RuntimeError(f"row {i} is still running; call run() first")
            ro = self.snapshot(i)
            verify_token_alignment(ro, r.gens, start=len(r.start.response_ids))
            out.append(ro)
        return out

    def run(self, on_round: Callable[[AgentLoop, list[TurnEvent]], None] | None = None) -> list[Rollout]:
        """Step until every row has finished; ``on_round`` may :meth:`add` rows between rounds."""
        while self.active():
            events = self.step()
            if on_round is not None:
                on_round(self, events)
        return self.rollouts()

    def rng_for(self, *keys: int | str) -> random.Random:
        """A generator seeded by ``derive_seed(self.seed, *keys)``: strategies key their random choices by
        what they are about (e.g. ``("arpo", group, uid, position)``), never by a shared stream."""
        return random.Random(derive_seed(self.seed, *keys))

    def release(self) -> None:
        """Release every cache key this loop used."""
        if self.keys:
            self.engine.release(list(dict.fromkeys(self.keys)))

    # -- one round ------------------------------------------------------------------------------
    def step(self) -> list[TurnEvent]:
        """One round: process pending fork turns, generate for the rest, parse, run tools, append."""
        finished: list[tuple[int, str, str | None]] = []  # (row, finish, stop string) with a full turn
        to_generate: list[int] = []
        for i in self.active():
            r = self.rows[i]
            if r.pending:
                r.pending = False
                ev = self._first_event(r, r.turn_start)
                if ev is not None and ev[0] == len(r.ids):
                    finished.append((i, ev[1], ev[2]))
                    continue
            if self._remaining(r) <= 0:
                r.stop = "max_length"
                continue
            to_generate.append(i)
        events: list[TurnEvent] = []
        if to_generate:
            params = replace(self.params, stop=self.stops, seed=derive_seed(self.seed, "round", self._round) % 2**31)
            self._round += 1
            reqs = []
            for i in to_generate:
                r = self.rows[i]
                reqs.append(GenerationRequest(prefix_ids=tuple(r.start.prompt_ids) + tuple(r.ids),
                                              max_new_tokens=min(self.params.max_new_tokens, self._remaining(r)),
                                              cache_key=r.key, seed=derive_seed(self.seed, r.start.group,
                                                                                r.start.uid, r.calls)))
                r.calls += 1
            gens = self.engine.generate(reqs, params)
            if len(gens) != len(reqs):
                raise RuntimeError(f"engine returned {len(gens)} generations for {len(reqs)} requests")
            for i, gen in zip(to_generate, gens):
                done = self._absorb(i, gen)
                r = self.rows[i]
                events.append(TurnEvent(i, r.turn_start, len(r.ids) - len(r.gens[-1].token_ids), len(r.ids)))
                if done is not None:
                    finished.append((i, *done))
        calls: list[tuple[int, TurnAction, str]] = []
        for i, finish, stop_string in finished:
            act = self._action(i, finish, stop_string)
            if act is not None:
                calls.append((i, act, finish))
        self._run_calls(calls)
        return events

    def _remaining(self, r: _Row) -> int:
        return self.limits.max_response_tokens - len(r.ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _token_at_char(self, r: _Row, lo: int, char_end: int) -> int:
        """Smallest response index k >= lo with len(decode(turn[: k + 1])) >= char_end."""
        hi = len(r.ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self._decode(r.ids[r.turn_start: mid + 1])) >= char_end:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _first_event(self, r: _Row, new_from: int) -> tuple[int, str, str | None] | None:
        """Earliest turn end completed at a token >= ``new_from``: (cut index, ``stop``|``eos``, stop string).

        Stop strings are searched in the decoded text of the whole current turn, so a string that
        straddles two engine calls (or a fork prefix and its continuation) is found too.
        """
        best: tuple[int, str, str | None] | None = None
        for k in range(new_from, len(r.ids)):
            if r.ids[k] in self.eos_ids:
                best = (k + 1, "eos", None)
                break
        text = self._decode(r.ids[r.turn_start:])
        hits = sorted((m.end(), m.group(0)) for s in self.stops for m in re.finditer(re.escape(s), text))
        for char_end, s in hits:
            k = self._token_at_char(r, r.turn_start, char_end)
            if k < new_from:
                continue
            if best is None or k + 1 <= best[0]:
                best = (k + 1, "stop", s)
            break
        return best

    def _absorb(self, i: int, gen: Generation) -> tuple[str, str | None] | None:
        """Append a generation; returns (finish, stop string) when the turn ended, None to continue."""
        r = self.rows[i]
        if not (len(gen.token_ids) == len(gen.logprobs) == len(gen.entropies)):
            raise RuntimeError("engine returned a Generation whose token_ids/logprobs/entropies differ in length")
        new_from = len(r.ids)
        r.ids += gen.token_ids
        r.logp += gen.logprobs
        r.ent += gen.entropies
        r.mask += [1] * len(gen.token_ids)
        ev = self._first_event(r, new_from)
        if ev is not None and ev[0] < len(r.ids):  # the engine ran past a turn end: keep the sampled prefix
            cut = ev[0]
            del r.ids[cut:], r.logp[cut:], r.ent[cut:], r.mask[cut:]
            n = cut - new_from
            gen = replace(gen, token_ids=gen.token_ids[:n], logprobs=gen.logprobs[:n],
                          entropies=gen.entropies[:n], finish_reason=ev[1], stop_string=ev[2])
        r.gens.append(gen)
        if ev is not None:
            return ev[1], ev[2]
        if gen.finish_reason == "eos":
            return "eos", None
        if gen.finish_reason == "stop":
            return "stop", gen.stop_string
        if self._remaining(r) <= 0 or not gen.token_ids:
            r.stop = "max_length"
        return None

    def _action(self, i: int, finish: str, stop_string: str | None) -> TurnAction | None:
        """Parse the finished turn; set the stop reason, or return a call action to execute."""
        r = self.rows[i]
        if finish == "stop" and stop_string not in self.protocol_stops:
            r.stop = "no_action"
            return None
        act = self.protocol.parse_turn(self._decode(r.ids[r.turn_start:]), finish, self.tools)
        if act.kind != "call":
            r.stop = {"answer": "answer", "end": "eos", "none": "no_action"}[act.kind]
            return None
        n_calls, limit = len(r.spans), self.limits.max_tool_calls
        if n_calls >= limit:
            if self.limits.on_tool_limit == "message" and n_calls == limit:
                return replace(act, error=self.protocol.limit_message(limit), more=())
            r.stop = "max_tool_calls"
            return None
        if act.more and n_calls + 1 + len(act.more) > limit:  # parallel calls past the limit are not run
            return replace(act, more=act.more[: limit - n_calls - 1])
        return act

    def _run_calls(self, turns: list[tuple[int, TurnAction, str]]) -> None:
        """Run the valid calls grouped per tool (groups in parallel), then append every result; a turn's
        parallel calls (``TurnAction.more``) run with the others and are answered in order."""
        calls = [(i, a, finish) for i, act, finish in turns for a in (act, *act.more)]
        results: dict[int, ToolResult] = {}
        groups: dict[str, list[int]] = {}
        for n, (_, act, _) in enumerate(calls):
            if act.error is not None:
                results[n] = act.error
            else:
                groups.setdefault(act.call.name, []).append(n)

        def run_group(name: str) -> list[ToolResult]:
            return self.tools[name].call_batch([calls[n][1].call.arguments for n in groups[name]])

        if len(groups) == 1:
            outs = {name: run_group(name) for name in groups}
        elif groups:
            with ThreadPoolExecutor(max_workers=max(1, min(self.limits.tool_workers, len(groups)))) as pool:
                outs = dict(zip(groups, pool.map(run_group, list(groups))))
        else:
            outs = {}
        for name, idx in groups.items():
            if len(outs[name]) != len(idx):
                raise RuntimeError(f"tool {name!r} returned {len(outs[name])} results for {len(idx)} calls")
            results.update(zip(idx, outs[name]))
        n = 0
        for i, act, finish in turns:
            acts = (act, *act.more)
            ids = self.protocol.results_ids(self.tokenizer, [results[n + k] for k in range(len(acts))],
                                            after_eos=finish == "eos")
            r = self.rows[i]
            starts = [self._token_at_char(r, r.turn_start, a.call_start + 1) if len(r.ids) > r.turn_start
                      else r.turn_start for a in acts]  # before any result moves turn_start
            for k, a in enumerate(acts):
                if r.stop is None:
                    self._append_result(i, a, results[n + k], ids[k], starts[k])
            n += len(acts)

    def _append_result(self, i: int, act: TurnAction, result: ToolResult, ids: list[int], call_start: int) -> None:
        r = self.rows[i]
        call_end = len(r.ids)
        room = self._remaining(r)
        cut = len(ids) > room
        ids = ids[:room]
        r.ids += ids
        r.logp += [0.0] * len(ids)
        r.ent += [0.0] * len(ids)
        r.mask += [0] * len(ids)
        name = act.name or (act.call.name if act.call is not None else "")
        r.spans.append(ToolSpan(call_start=call_start, call_end=call_end, result_end=len(r.ids), name=name,
                                ok=result.ok))
        r.turn_start = len(r.ids)
        if cut or self._remaining(r) <= 0:
            r.stop = "max_length"
