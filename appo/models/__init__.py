"""Models: loading (HF folders, cached hub ids, GGUF, LoRA), frozen copies, tiny test models and the demo's
base model (its tokenizer trained on the procedural tasks' text).

May import: :mod:`appo.data` (the demo base's training text). Not the engines, agent, config or trainer.
"""
