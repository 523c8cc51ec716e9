"""A TRL-signature reward that varies with the completion, so every training step has a gradient."""


def length_reward(prompts, completions, **columns):
    """(len(completion) mod 7) / 7: deterministic, varied, meaningless."""
    return [(len(c) % 7) / 7 for c in completions]
