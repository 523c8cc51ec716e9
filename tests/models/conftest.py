"""Fixtures of the model-loading tests: one intra-op thread, and a tiny Llama written as a GGUF file.

One thread: the models are tiny, so on a busy 2-core machine OpenMP's spinning threads cost far more
(10-50x per step) than they save. The GGUF writer keeps only what transformers' GGUF loader reads:
llama hyper-parameters, the ``gpt2`` tokenizer metadata (tokens, token types, merges, special ids, chat
template) and the tensors under llama.cpp's names, with q/k rows reordered the way llama.cpp stores
rotary halves (the loader undoes it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread (the shared ``one_thread`` fixture)."""


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_tokenizer):
    """``(path to an F32 .gguf, the HF model it was written from, tokenizer)``."""
    pytest.importorskip("gguf")
    from appo.models.tiny import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, num_heads=4, seed=1)
    path = write_llama_gguf(model, tiny_tokenizer, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")
    return path, model.eval(), tiny_tokenizer


def _rotary_to_llamacpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """Per head, interleave the two rotary halves of the output rows (HF layout -> llama.cpp layout)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(model, tokenizer, path: str | Path) -> Path:
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    rope = getattr(c, "rope_parameters", None) or {}
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    n = len(tokenizer)
    special, added = set(tokenizer.all_special_ids), set(tokenizer.get_added_vocab().values())
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokenizer.convert_ids_to_tokens(list(range(n))))
    w.add_token_types([3 if i in special else 4 if i in added else 1 for i in range(n)])  # control / user / normal
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_eos_token_id(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        w.add_pad_token_id(tokenizer.pad_token_id)
    if tokenizer.chat_template:
        w.add_chat_template(tokenizer.chat_template)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        w.add_tensor(f"blk.{i}.attn_q.weight", _rotary_to_llamacpp(q, c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _rotary_to_llamacpp(k, c.num_key_value_heads))
        for ours, hf in names.items():
            w.add_tensor(f"blk.{i}.{ours}.weight", sd[p + hf + ".weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
