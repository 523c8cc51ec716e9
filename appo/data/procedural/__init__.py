"""Procedural tasks for CPU-scale experiments: seeded unbounded generators with difficulty knobs,
demonstrations for SFT in the tag protocol, and verification with the ``default`` reward.

``TASKS``: ``arith`` (Python), ``chain`` (a value carried through 3-4 Python calls), ``depth``
(L calls, one decisive step at a chosen depth), ``multihop`` (search
over a generated KB), ``combo`` (search then Python), ``mix`` (arith, multihop and combo). Usage::

    task = get_task("multihop", hops=(2,), kb_size=100)
    train = task.generate(1000, seed=0)               # split="train"
    held_out = task.generate(100, seed=0, split="test")  # never overlaps train
    task.write_corpus("runs/kb.jsonl")                # for the BM25 search backend
    turns = task.demonstration(train[0])              # list[str], results left to the agent loop
"""

from appo.data.procedural.arith import ArithTask
from appo.data.procedural.base import SPLITS, TASKS, Split, Task, get_task, register_task, split_of, write_jsonl
from appo.data.procedural.chain import ChainTask
from appo.data.procedural.depth import DepthTask
from appo.data.procedural.mix import ComboTask, MixTask
from appo.data.procedural.multihop import KnowledgeBase, MultihopTask, build_kb

__all__ = [
    "SPLITS", "TASKS", "ArithTask", "ChainTask", "ComboTask", "DepthTask", "KnowledgeBase", "MixTask", "MultihopTask",
    "Split",
    "Task", "build_kb", "get_task", "register_task", "split_of", "write_jsonl",
]
