"""VLLMEngine's own logic in the main venv, without vLLM: the import guard, request building, output parsing,
the top-k entropy, finish/stop mapping, the weight-push trigger and what it sends, LoRA merging, config
validation and the GPU check script's CPU behaviour.

The vLLM outputs below are hand-written fixtures in the shape of vLLM's ``RequestOutput``, and ``generate``
runs over a fake ``vllm`` namespace: unit tests of our bookkeeping only. The evidence that the engine works
with vLLM is ``tests/vllm_real/test_vllm_real.py``, which runs the same engine against vLLM 0.32's CPU build.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import appo.engine.vllm as V
from appo.config import ConfigError, load_config
from appo.core import token_entropy, topk_entropy
from appo.engine.base import Engine, GenerationRequest, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
LN2 = math.log(2.0)

VLLM_083_SAMPLING_FIELDS = {  # vllm.SamplingParams(...) keyword names in vLLM 0.8.3's documented signature
    "n", "best_of", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
    "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens", "logits_processors",
    "include_stop_str_in_output", "truncate_prompt_tokens", "output_kind", "guided_decoding", "logit_bias",
    "allowed_token_ids", "extra_args", "bad_words",
}


# ------------------------------------------------------------------------------------------- fixtures
@dataclass(frozen=True)
class Logprob:
    """Same attributes as ``vllm.sequence.Logprob`` (vLLM 0.8+)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def lp(p: float) -> float:
    return math.log(p)


# One request, K=3, EOS id 2 ending it. JSON-able: token ids as string keys, as a recorded dump would have them.
RECORDED_EOS = {
    "request_id": "0", "prompt_token_ids": [1, 40, 41], "finished": True,
    "outputs": [{
        "index": 0, "text": "7 ", "cumulative_logprob": lp(0.5) + lp(0.0625) + lp(0.9),
        "token_ids": [17, 30, 2],
        "logprobs": [
            # step 0: sampled 17 is the top token (K entries)
            {"17": [lp(0.5), 1, "7"], "18": [lp(0.25), 2, "8"], "19": [lp(0.125), 3, "9"]},
            # step 1: sampled 30 has rank 5, outside the top 3: vLLM adds it (K+1 entries)
            {"5": [lp(0.5), 1, "a"], "6": [lp(0.25), 2, "b"], "7": [lp(0.125), 3, "c"], "30": [lp(0.0625), 5, " "]},
            # step 2: EOS, near-certain
            {"2": [lp(0.9), 1, "</s>"], "5": [lp(0.05), 2, "a"], "6": [lp(0.03), 3, "b"]},
        ],
        "finish_reason": "stop", "stop_reason": None,
    }],
}

# K=2, the stop string "</python>" completed by token 55 (kept in token_ids; vLLM trims only the text).
RECORDED_STOP = {
    "request_id": "1", "prompt_token_ids": [1, 40], "finished": True,
    "outputs": [{
        "index": 0, "text": "print(1)", "cumulative_logprob": None,
        "token_ids": [50, 55],
        "logprobs": [
            {"50": [lp(0.6), 1, "print(1)"], "51": [lp(0.3), 2, "x"]},
            {"55": [lp(0.7), 1, "</python>"], "56": [lp(0.2), 2, "<"]},
        ],
        "finish_reason": "stop", "stop_reason": "</python>",
    }],
}

# K=2, the budget (3 tokens) reached.
RECORDED_LENGTH = {
    "request_id": "2", "prompt_token_ids": [1], "finished": True,
    "outputs": [{
        "index": 0, "text": "abc", "cumulative_logprob": None,
        "token_ids": [5, 6, 7],
        "logprobs": [{"5": [lp(0.4), 1, "a"], "6": [lp(0.4), 2, "b"]}, {"6": [lp(0.5), 1, "b"], "9": [lp(0.1), 2, "z"]},
                     {"7": [lp(0.3), 1, "c"], "5": [lp(0.3), 2, "a"]}],
        "finish_reason": "length", "stop_reason": None,
    }],
}


def request_output(record: dict):
    """A RequestOutput-shaped object from a JSON-able record."""
    outs = []
    for o in record["outputs"]:
        steps = [{int(t): Logprob(*v) for t, v in step.items()} for step in o["logprobs"]]
        outs.append(types.SimpleNamespace(index=o["index"], text=o["text"], token_ids=list(o["token_ids"]),
                                          cumulative_logprob=o["cumulative_logprob"], logprobs=steps,
                                          finish_reason=o["finish_reason"], stop_reason=o["stop_reason"]))
    return types.SimpleNamespace(request_id=record["request_id"], prompt_token_ids=record["prompt_token_ids"],
                                 outputs=outs, finished=record["finished"])


class FakeSamplingParams:
    """Keeps its kwargs; refuses names vLLM 0.8.3's SamplingParams does not have."""

    def __init__(self, **kwargs):
        unknown = set(kwargs) - VLLM_083_SAMPLING_FIELDS
        assert not unknown, f"not vLLM SamplingParams fields: {unknown}"
        self.kwargs = kwargs


class FakeLLM:
    """Stands in for vllm.LLM: records what it was given, answers with queued RequestOutputs."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[tuple[list, list]] = []
        self.queue: list = []
        self.rpcs: list = []
        self.resets = 0

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append((list(prompts), list(sampling_params)))
        out, self.queue = self.queue[: len(prompts)], self.queue[len(prompts):]
        return out

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.rpcs.append((method, args))
        return [None]

    def reset_prefix_cache(self):
        self.resets += 1
        return True

    def get_tokenizer(self):
        return types.SimpleNamespace(eos_token_id=2)


@pytest.fixture()
def fake_vllm(monkeypatch):
    """Makes ``load_vllm`` return stand-ins (TokensPrompt is a TypedDict in vLLM: a dict)."""
    ns = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams, TokensPrompt=dict)
    monkeypatch.setattr(V, "load_vllm", lambda: ns)
    return ns


# ------------------------------------------------------------------------------------------- import guard
def test_module_imports_without_vllm_and_the_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, installed or not
    monkeypatch.setitem(sys.modules, "vllm.inputs", None)
    monkeypatch.delitem(sys.modules, "appo.engine.vllm")
    # the re-import also rebinds the package attribute `appo.engine.vllm`; restore it with sys.modules, or later
    # tests' `import appo.engine.vllm as V` would patch another module object than the one the code imports
    monkeypatch.setattr(sys.modules["appo.engine"], "vllm", V)
    import appo.engine.vllm as fresh  # importing the module needs no vLLM

    assert "pip install 'appo[vllm]'" in fresh.INSTALL_HINT and "make vllm-env" in fresh.INSTALL_HINT
    with pytest.raises(ImportError, match=re.escape("pip install 'appo[vllm]'")):
        fresh.VLLMEngine("some-org/some-model")
    with pytest.raises(ImportError, match="rollout.name=hf"):
        fresh.load_vllm()


# ------------------------------------------------------------------------------------------- requests
def test_build_request_carries_ids_budget_seed_stops_and_k():
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=0, max_new_tokens=64, stop=("</python>", ""), seed=5)
    req = GenerationRequest(prefix_ids=(1, 40, 41), max_new_tokens=12, seed=123)
    prompt, kw = V.build_request(req, params, index=3, logprobs_k=7)
    assert prompt == {"prompt_token_ids": [1, 40, 41]}
    assert kw["n"] == 1 and kw["max_tokens"] == 12 and kw["logprobs"] == 7 and kw["seed"] == 123
    assert kw["temperature"] == 1.0 and kw["top_p"] == 0.9 and kw["top_k"] == -1  # 0 (off) -> vLLM's -1
    assert kw["stop"] == ["</python>"] and kw["detokenize"] is True and kw["skip_special_tokens"] is False
    assert "stop_token_ids" not in kw and "ignore_eos" not in kw  # vLLM's own EOS
    assert set(kw) <= VLLM_083_SAMPLING_FIELDS
    FakeSamplingParams(**kw)

    # no own cap/seed: the call's budget and a seed derived from (params.seed, row); no stops: no detokenizing
    _, kw = V.build_request(GenerationRequest(prefix_ids=(1,)), SamplingParams(max_new_tokens=9, top_k=4, seed=5),
                            index=3, logprobs_k=2)
    assert kw["max_tokens"] == 9 and kw["top_k"] == 4 and kw["stop"] is None and kw["detokenize"] is False
    assert kw["seed"] == (5 * 1_000_003 + 3) % 2**63
    _, kw1 = V.build_request(GenerationRequest(prefix_ids=(1,)), SamplingParams(seed=5), index=4)
    assert kw1["seed"] != kw["seed"]
    _, kw = V.build_request(GenerationRequest(prefix_ids=(1,)), SamplingParams(), index=0)
    assert kw["seed"] is None and kw["logprobs"] == V.DEFAULT_LOGPROBS_K

    # an EOS override, as HFEngine's eos_token_ids: stop on exactly these ids, or never (())
    _, kw = V.build_request(GenerationRequest(prefix_ids=(1,)), SamplingParams(), eos_token_ids=[9, 2])
    assert kw["ignore_eos"] is True and kw["stop_token_ids"] == [2, 9]
    _, kw = V.build_request(GenerationRequest(prefix_ids=(1,)), SamplingParams(), eos_token_ids=())
    assert kw["ignore_eos"] is True and kw["stop_token_ids"] == []


@pytest.mark.parametrize("req, k, message", [
    (GenerationRequest(prefix_ids=()), 5, "prefix_ids is empty"),
    (GenerationRequest(prefix_ids=(1,), max_new_tokens=0), 5, "max_tokens >= 1"),
    (GenerationRequest(prefix_ids=(1,)), 0, "logprobs_k must be >= 1"),
])
def test_build_request_refuses_what_vllm_cannot_run(req, k, message):
    with pytest.raises(ValueError, match=message):
        V.build_request(req, SamplingParams(), logprobs_k=k)


# ------------------------------------------------------------------------------------------- parsing
def test_parse_eos_output_ids_logprobs_and_topk_entropy():
    gen = V.parse_request_output(request_output(RECORDED_EOS), logprobs_k=3)
    assert gen.token_ids == (17, 30, 2)
    assert gen.logprobs == pytest.approx((lp(0.5), lp(0.0625), lp(0.9)))  # the sampled tokens', rank 5 included
    assert (gen.finish_reason, gen.stop_string) == ("eos", None)
    # Step 1 by hand: top-3 p = 1/2, 1/4, 1/8, tail r = 1 - 7/8 = 1/8 (the sampled rank-5 token, p = 1/16, is part
    # of the tail, not a 4th entry). H = -(1/2 ln 1/2 + 1/4 ln 1/4 + 1/8 ln 1/8 + 1/8 ln 1/8)
    #   = (1/2 + 2/4 + 3/8 + 3/8) ln 2 = 1.75 ln 2 = 1.2130. With the rank-5 entry counted it would be 1.875 ln 2.
    assert gen.entropies[1] == pytest.approx(1.75 * LN2, abs=1e-6)
    assert gen.entropies[0] == pytest.approx(1.75 * LN2, abs=1e-6)  # same top-3 distribution at step 0
    expected2 = float(topk_entropy(torch.tensor([lp(0.9), lp(0.05), lp(0.03)])))
    assert gen.entropies[2] == pytest.approx(expected2, abs=1e-6)
    assert len(gen.token_ids) == len(gen.logprobs) == len(gen.entropies)


def test_parse_stop_string_output_mirrors_hf_engine():
    gen = V.parse_request_output(request_output(RECORDED_STOP), logprobs_k=2)
    assert gen.token_ids == (50, 55)  # the completing token is kept, as HFEngine keeps it
    assert (gen.finish_reason, gen.stop_string) == ("stop", "</python>")
    assert gen.logprobs == pytest.approx((lp(0.6), lp(0.7)))


def test_parse_length_output_and_eos_at_the_budget():
    gen = V.parse_request_output(request_output(RECORDED_LENGTH), logprobs_k=2)
    assert (gen.finish_reason, gen.stop_string) == ("length", None)
    # vLLM V1 checks the budget before EOS; HFEngine says eos when the last token is an EOS id
    gen = V.parse_request_output(request_output(RECORDED_LENGTH), logprobs_k=2, eos_token_ids={7})
    assert gen.finish_reason == "eos"


def test_sampled_token_listed_twice_is_counted_once():
    pairs = [(7, Logprob(lp(0.5), 1)), (3, Logprob(lp(0.25), 2)), (9, Logprob(lp(0.125), 3)), (7, Logprob(lp(0.5), 1))]
    logp, ent = V.step_logprob_entropy(pairs, 7, k=3)
    assert logp == pytest.approx(lp(0.5))
    assert ent == pytest.approx(1.75 * LN2, abs=1e-6)  # p = 1/2, 1/4, 1/8 and tail 1/8; twice 1/2 would exceed 1


def test_topk_entropy_matches_core_and_is_exact_when_k_covers_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 12, generator=g) * 2
    logp = torch.log_softmax(logits, -1)
    steps = [{v: Logprob(float(logp[t, v]), None) for v in range(12)} for t in range(4)]  # ranks unknown
    ids = [int(logp[t].argsort()[t]) for t in range(4)]
    for k in (3, 12):
        comp = types.SimpleNamespace(token_ids=ids, logprobs=steps, finish_reason="length", stop_reason=None)
        gen = V.parse_completion(comp, logprobs_k=k)
        expected = topk_entropy(logp.topk(k, -1).values)
        assert torch.allclose(torch.tensor(gen.entropies, dtype=torch.float64), expected.double(), atol=1e-5)
        assert all(e <= x + 1e-5 for e, x in zip(gen.entropies, token_entropy(logits).tolist()))
    assert torch.allclose(torch.tensor(gen.entropies, dtype=torch.float64), token_entropy(logits).double(), atol=1e-5)


@pytest.mark.parametrize("finish, stop, last, eos, expected", [
    ("stop", None, 2, (), ("eos", None)),              # the model's EOS
    ("stop", 9, 9, (9,), ("eos", None)),               # one of our stop_token_ids (an EOS override)
    ("stop", "\n\n", 4, (), ("stop", "\n\n")),         # a stop string
    ("length", None, 4, (2,), ("length", None)),
    ("length", None, 2, (2,), ("eos", None)),          # EOS exactly at the budget
])
def test_finish_mapping(finish, stop, last, eos, expected):
    assert V.map_finish(finish, stop, last, eos) == expected


@pytest.mark.parametrize("finish", ["abort", None])
def test_unfinished_or_aborted_requests_raise(finish):
    with pytest.raises(RuntimeError, match="finish_reason"):
        V.map_finish(finish, None, 1)


def test_parse_refuses_missing_logprobs():
    comp = types.SimpleNamespace(token_ids=[5], logprobs=None, finish_reason="length", stop_reason=None)
    with pytest.raises(ValueError, match="logprobs=K"):
        V.parse_completion(comp)
    comp = types.SimpleNamespace(token_ids=[5], logprobs=[{6: Logprob(-0.1, 1)}], finish_reason="length",
                                 stop_reason=None)
    with pytest.raises(ValueError, match="lack the sampled token 5"):
        V.parse_completion(comp)
    comp = types.SimpleNamespace(token_ids=[5, 6], logprobs=[{5: Logprob(-0.1, 1)}], finish_reason="length",
                                 stop_reason=None)
    with pytest.raises(ValueError, match="1 log-prob entries for 2 tokens"):
        V.parse_completion(comp)


def test_logprob_semantics():
    assert V.logprob_semantics_issue(SamplingParams(temperature=1.0, top_p=0.9, top_k=5)) is None
    assert V.logprob_semantics_issue(SamplingParams(temperature=0.0)) is None
    assert "temperature=0.7" in V.logprob_semantics_issue(SamplingParams(temperature=0.7))
    assert V.logprob_semantics_issue(SamplingParams(temperature=0.7), "processed_logprobs") is None
    assert V.logprob_semantics_issue(SamplingParams(temperature=0.7, top_p=0.9), "processed_logprobs") is not None


# ------------------------------------------------------------------------------------------- the engine
def test_generate_over_a_fake_llm(fake_vllm):
    engine = V.VLLMEngine("some-org/model", logprobs_k=3, gpu_memory_utilization=0.3)
    assert isinstance(engine, Engine)
    llm = engine.llm
    assert llm.kwargs["enable_prefix_caching"] is True and llm.kwargs["max_logprobs"] == 20
    assert llm.kwargs["gpu_memory_utilization"] == 0.3 and "logprobs_mode" not in llm.kwargs
    llm.queue = [request_output(RECORDED_EOS), request_output(RECORDED_STOP)]
    reqs = [GenerationRequest((1, 40, 41), seed=1), GenerationRequest((1, 2), max_new_tokens=0),
            GenerationRequest((1, 40), cache_key="r1")]
    gens = engine.generate(reqs, SamplingParams(max_new_tokens=8, stop=("</python>",)))
    prompts, sampling = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 40, 41]}, {"prompt_token_ids": [1, 40]}]  # the 0-budget row not sent
    assert [s.kwargs["max_tokens"] for s in sampling] == [8, 8] and sampling[0].kwargs["seed"] == 1
    assert [g.finish_reason for g in gens] == ["eos", "length", "stop"]
    assert gens[0].token_ids == (17, 30, 2) and gens[1].token_ids == () and gens[2].stop_string == "</python>"
    engine.release(["r1"])
    assert llm.resets == 0
    engine.release()
    assert llm.resets == 1
    with pytest.warns(UserWarning, match="temperature=0.5"):
        llm.queue = [request_output(RECORDED_EOS)]
        engine.generate([GenerationRequest((1, 40, 41))], SamplingParams(temperature=0.5))


def test_policy_weights_are_pushed_when_they_change(fake_vllm, monkeypatch):
    from safetensors.torch import load_file

    policy = torch.nn.Linear(3, 2)
    engine = V.VLLMEngine("some-org/model", policy=policy)
    llm = engine.llm
    assert llm.kwargs["worker_extension_cls"] == "appo.engine.vllm_worker.WeightSyncExtension"
    llm.queue = [request_output(RECORDED_LENGTH)]
    engine.generate([GenerationRequest((1,))], SamplingParams(max_new_tokens=3))
    assert llm.rpcs == [] and engine.weight_pushes == 0  # vLLM loaded the same checkpoint
    with torch.no_grad():
        policy.weight.add_(1.0)  # an optimizer step: in place
    seen = {}

    def rpc(method, timeout=None, args=(), kwargs=None):  # what a worker would read from the file
        seen.update(load_file(args[0]))
        llm.rpcs.append((method, args))
        return [len(seen)]

    monkeypatch.setattr(llm, "collective_rpc", rpc)
    llm.queue = [request_output(RECORDED_LENGTH)]
    engine.generate([GenerationRequest((1,))], SamplingParams(max_new_tokens=3))
    assert engine.weight_pushes == 1 and llm.resets == 1  # pushed, and the stale prefix cache dropped
    (method, (path,)), = llm.rpcs
    assert method == "appo_load_weights_file" and isinstance(path, str)  # a method name and a path: no pickle
    assert not os.path.exists(path)  # the file is removed after the workers loaded it
    assert set(seen) == {"weight", "bias"} and torch.equal(seen["weight"], policy.weight.detach())
    llm.queue = [request_output(RECORDED_LENGTH)]
    engine.generate([GenerationRequest((1,))], SamplingParams(max_new_tokens=3))
    assert engine.weight_pushes == 1  # unchanged since: no push


def test_worker_extension_loads_the_file_into_the_model(tmp_path):
    from safetensors.torch import save_file

    from appo.engine.vllm_worker import WeightSyncExtension

    loaded = {}
    worker = WeightSyncExtension()
    worker.model_runner = types.SimpleNamespace(model=types.SimpleNamespace(
        load_weights=lambda weights: loaded.update(weights), w=torch.ones(2)))
    save_file({"a": torch.zeros(2), "b": torch.ones(3)}, tmp_path / "w.safetensors")
    assert worker.appo_load_weights_file(str(tmp_path / "w.safetensors")) == 2
    assert set(loaded) == {"a", "b"} and torch.equal(loaded["b"], torch.ones(3))
    assert worker.appo_weights_digest(["w"]) == [2.0]


def test_lora_policy_weights_are_merged_under_checkpoint_names(tiny_model):
    import copy

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_()
    merged = dict(V.policy_weights(lora))
    assert set(merged) == {n for n, _ in tiny_model.named_parameters()}  # checkpoint names, adapters folded in
    reference = copy.deepcopy(lora).merge_and_unload()  # peft's own merge
    for n, p in reference.named_parameters():
        torch.testing.assert_close(merged[n], p.detach(), atol=1e-6, rtol=0)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           dict(tiny_model.named_parameters())["model.layers.0.self_attn.q_proj.weight"])
    assert dict(V.policy_weights(tiny_model)).keys() == merged.keys()


def test_engine_refuses_bad_k_and_names_load_errors(fake_vllm, monkeypatch):
    with pytest.raises(ValueError, match="logprobs_k"):
        V.VLLMEngine("m", logprobs_k=0)

    def boom(**kwargs):
        raise RuntimeError("Model architectures ['Foo'] are not supported for now")

    monkeypatch.setattr(fake_vllm, "LLM", boom)
    with pytest.raises(ValueError, match=r"vLLM could not load model 'm'.*fix: a Hugging Face model folder"):
        V.VLLMEngine("m")

    def oom(**kwargs):
        raise ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`")

    monkeypatch.setattr(fake_vllm, "LLM", oom)
    with pytest.raises(ValueError, match=r"gpu_memory_utilization=0.4.*fix: rollout.gpu_memory_utilization"):
        V.VLLMEngine("m")


# ------------------------------------------------------------------------------------------- config
def test_config_refuses_vllm_when_it_cannot_be_imported(monkeypatch):
    import appo.engine.registry as R

    monkeypatch.setattr(R, "vllm_importable", lambda: False)
    with pytest.raises(ConfigError, match=r"rollout.name=vllm needs vLLM.*fix: make vllm-env.*rollout.name=hf"):
        load_config(None, ["rollout.name=vllm"])
    with pytest.raises(ConfigError, match="not one of hf, vllm"):
        load_config(None, ["rollout.name=sglang"])


@pytest.mark.parametrize("overrides, message", [
    (["rollout.temperature=0.7"], "rollout.temperature=1.0"),
    (["rollout.workers=2"], "rollout.workers=0"),
    (["rollout.logprobs_k=0"], "logprobs_k=0 must be >= 1"),
    (["rollout.gpu_memory_utilization=1.5"], r"must be in \(0, 1\]"),
])
def test_config_rules_of_vllm(monkeypatch, overrides, message):
    import appo.engine.registry as R

    monkeypatch.setattr(R, "vllm_importable", lambda: True)
    cfg = load_config(None, ["rollout.name=vllm", "rollout.logprobs_k=5", "rollout.gpu_memory_utilization=0.05",
                             "model.lora_rank=8"])  # LoRA is pushed merged
    assert cfg.rollout.logprobs_k == 5 and cfg.rollout.gpu_memory_utilization == 0.05
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["rollout.name=vllm", *overrides])


def test_config_refuses_a_memory_fraction_that_does_not_fit(monkeypatch):
    import appo.engine.registry as R

    monkeypatch.setattr(R, "vllm_importable", lambda: True)
    monkeypatch.setattr(R, "host_memory_fraction_free", lambda: 0.3)
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization=0.4.*only 0.30 of it is free.*fix: "
                                          r"rollout.gpu_memory_utilization=0.05"):
        load_config(None, ["rollout.name=vllm"])


def test_build_engine_vllm_without_vllm_names_the_fix(monkeypatch):
    import appo.engine.registry as R
    from appo.train.components import build_engine

    monkeypatch.setattr(R, "vllm_importable", lambda: True)
    cfg = load_config(None, ["rollout.name=vllm", "model.path=some-org/some-model",
                             "rollout.gpu_memory_utilization=0.05"])
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=re.escape("make vllm-env")):
        build_engine(torch.nn.Linear(2, 2), None, cfg)


# ------------------------------------------------------------------------------------------- GPU check script
def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_gpu_check_help_runs_on_cpu():
    res = run_script("--help")
    assert res.returncode == 0, res.stderr
    assert "--out" in res.stdout and "CUDA" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run its checks")
def test_gpu_check_refuses_without_cuda(tmp_path):
    res = run_script("--out", str(tmp_path / "check.json"))
    assert res.returncode != 0
    assert "CUDA is not available" in res.stderr
    assert not (tmp_path / "check.json").exists()


def test_vllm_context_is_the_runs_longest_sequence_capped_at_the_models():
    """`build_vllm` gives vLLM `max_model_len` = prompt + response budget, so its KV cache need not hold the
    model's whole context (the real-vLLM train test reads vLLM's own `max_seq_len` line)."""
    from appo.engine.registry import max_sequence_length

    cfg = load_config("demo", ["data.max_prompt_length=128", "data.max_response_length=96"])
    model = types.SimpleNamespace(config=types.SimpleNamespace(max_position_embeddings=8192))
    assert max_sequence_length(cfg, model) == 224
    model.config.max_position_embeddings = 200
    assert max_sequence_length(cfg, model) == 200  # vLLM refuses a max_model_len beyond the model's
    assert max_sequence_length(cfg, None) == 224
    assert max_sequence_length(cfg, types.SimpleNamespace(config=types.SimpleNamespace())) == 224
