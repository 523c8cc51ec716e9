"""Tiny local models for tests and the CPU demo: a BPE tokenizer trained in seconds and a small Llama.

Nothing here touches a hub. The tokenizer is a ``PreTrainedTokenizerFast`` with a ChatML chat template
(Qwen-style, with Hermes ``<tools>`` / ``<tool_call>`` / ``<tool_response>`` support), and the model is
a randomly initialised ``LlamaForCausalLM``; both save and load through the normal Hugging Face calls.

Choices: digits are split one per token (as Llama's tokenizer does) so that copying numbers is easy for a
1M-parameter model; the protocol tags (``<python>``, ``</python>``, ``<result>`` ...) are single added
tokens (not special, so they survive decoding). Real models tokenize tags into several pieces; the
engine and the agent loop never rely on tags being single tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")
PROTOCOL_TOKENS = (
    "<think>", "</think>", "<python>", "</python>", "<search>", "</search>",
    "<result>", "</result>", "<answer>", "</answer>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>", "\\boxed{",
)

# ChatML with Hermes tool support, in the shape of Qwen2.5's template (simplified, written for appo).
CHAT_TEMPLATE = (
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}{{ '\\n' }}</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}"
    "<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user{% endif %}"
    "{{ '\\n' }}<tool_response>\n{{ message['content'] }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if message.get('tool_calls') %}"
    "{% for call in message['tool_calls'] %}"
    "{% set fn = call['function'] if call.get('function') else call %}"
    "{{ '\\n' }}<tool_call>\n{\"name\": \"{{ fn['name'] }}\", "
    "\"arguments\": {{ fn['arguments'] | tojson }}}\n</tool_call>"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, extra_tokens: Iterable[str] = ()):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    Digits are pre-split one per token. ``extra_tokens`` are added as whole tokens (not special).
    Returns a tokenizer with ``eos_token = <|im_end|>``, ``pad_token = <pad>`` and a chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    added = [t for t in dict.fromkeys((*PROTOCOL_TOKENS, *extra_tokens)) if t not in fast.get_vocab()]
    fast.add_tokens(added)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    seed: int = 0,
):
    """A randomly initialised ``LlamaForCausalLM`` sized to ``tokenizer`` (fp32, tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_pretrained(model, tokenizer, path: str | Path) -> Path:
    """Save model (safetensors) and tokenizer side by side in ``path``; returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
