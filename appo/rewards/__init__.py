"""Rewards: math equivalence (math-verify), QA EM / F1, the reference format check and combined reward,
a registry of named batch reward functions, weighted sums, and user functions loaded from ``file.py:function``.

May import: :mod:`appo.plugins`, :mod:`appo.types` only.
"""

from appo.rewards.base import RewardFn, RewardOutput
from appo.rewards.builtin import answer_score, reference_score
from appo.rewards.custom import CustomReward, load_custom_reward
from appo.rewards.extract import answer_block, extract_answer, last_boxed, strip_tool_results
from appo.rewards.format import FormatCheck, check_format
from appo.rewards.math_equiv import math_equal
from appo.rewards.qa import answer_tokens, exact_match, f1_score, normalize_answer
from appo.rewards.registry import REWARDS, get_reward, register_reward

__all__ = [
    "REWARDS", "CustomReward", "FormatCheck", "RewardFn", "RewardOutput", "answer_block", "answer_score",
    "answer_tokens", "check_format", "exact_match", "extract_answer", "f1_score", "get_reward",
    "last_boxed", "load_custom_reward", "math_equal", "normalize_answer", "reference_score",
    "register_reward", "strip_tool_results",
]
