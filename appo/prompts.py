"""Named system prompts for the tag protocol.

- ``reference``: the system prompt of the reference work's training data (``data/train/*.parquet``),
  with its ``\\boxed`` typo (a lost backslash) repaired.
- ``fewshot``: a short description plus one worked example of each tool, which small instruct models
  (SmolLM2-135M) need before they write a well-formed call.
- ``short``: one line, for the tiny demo models whose context is small.
"""

from __future__ import annotations

import warnings

REFERENCE = (
    "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia "
    "search tool and python interpreter tool. Given a question, you need to first think about the reasoning process "
    "in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search and "
    "python interpreter tool to calculate the math problem for fact information about specific topics if needed. The "
    "reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags respectively, and "
    "the search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For "
    "example, <think> This is the reasoning process. </think> <search> search query here </search> <result> search "
    "result here </result> <think> This is the reasoning process. </think> <python> python code here </python> "
    "<result> python interpreter result here </result> <think> This is the reasoning process. </think> <answer> The "
    "final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact answer "
    "is enclosed within \\boxed{} with latex format."
)

FEWSHOT = (
    "You solve questions step by step. Think inside <think> </think>. To run Python, write <python>code</python>; "
    "to search the web, write <search>query</search>. The result comes back inside <result> </result>. "
    "Finish with <answer>\\boxed{final answer}</answer>.\n\n"
    "Example 1. Question: What is 123 * 45?\n"
    "<think>I will compute it with Python.</think>\n<python>print(123 * 45)</python>\n<result>\n5535\n</result>\n"
    "<think>The result is 5535.</think>\n<answer>\\boxed{5535}</answer>\n\n"
    "Example 2. Question: Who wrote Hamlet?\n"
    "<think>I will search for it.</think>\n<search>author of Hamlet</search>\n<result>\nHamlet is a tragedy written "
    "by William Shakespeare.\n</result>\n<think>It was William Shakespeare.</think>\n"
    "<answer>\\boxed{William Shakespeare}</answer>"
)

SHORT = "Use <python>code</python> or <search>query</search>; answer as <answer>\\boxed{answer}</answer>."

SYSTEM_PROMPTS = {"reference": REFERENCE, "fewshot": FEWSHOT, "short": SHORT}
"""Named system prompts (``rollout.system_prompt`` and ``appo eval --system-prompt`` accept the names)."""


def resolve_system_prompt(value: str | None, tools=None, protocol: str = "tags") -> str | None:
    """A name in :data:`SYSTEM_PROMPTS` -> its text; None or any other text is returned unchanged.

    With ``tools`` (a list or name -> Tool mapping) and the ``tags`` protocol, a named prompt gets one
    line per tool it does not mention (``<name>`` absent from its text), saying how to call it and what it
    does, so a user's function tool is described to the model (the named prompts only know ``python`` and
    ``search``). Literal text is never changed: it is the user's own. The ``hermes`` protocol lists every
    tool through the chat template, so nothing is added there."""
    if value is None or value not in SYSTEM_PROMPTS:
        return value
    text = SYSTEM_PROMPTS[value]
    if tools is None or protocol != "tags":
        return text
    from appo.agent.protocols import tag_tool_line, tool_map

    tools = tool_map(tools)
    extra = [tag_tool_line(name, tool) for name, tool in tools.items() if f"<{name}>" not in text]
    for name in ("python", "search"):
        if f"<{name}>" in text and name not in tools and (value, name) not in _WARNED:
            _WARNED.add((value, name))
            warnings.warn(f"system prompt {value!r} tells the model about <{name}>, but no {name} tool is configured "
                          f"(a call gets an error result); add the tool, or give your own prompt text instead of "
                          f"the name", stacklevel=2)
    return "\n".join([text, *extra])


_WARNED: set[tuple[str, str]] = set()
"""(prompt name, tool) pairs already warned about in this process."""
