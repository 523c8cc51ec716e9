"""Data: verl parquet rows, bundled benchmarks by name, TRL / HF dataset rows, procedural tasks for CPU-scale
experiments (:mod:`appo.data.procedural`), and :mod:`appo.data.sources` (data specs -> Examples,
search corpora, the resumable prompt sampler). The :class:`Example` record itself lives in :mod:`appo.types`.

May import: :mod:`appo.paths`, :mod:`appo.plugins`, :mod:`appo.rewards`, :mod:`appo.types` (a procedural task scores
with the ``default`` reward). Not the models, engines, agent or trainer.
"""

from appo.data.benchmarks import BENCHMARKS, BenchmarkSpec, load_benchmark, register_benchmark
from appo.data.loading import load_dataset
from appo.data.rows import DataError, read_rows
from appo.data.verl import is_verl_row, load_verl_parquet, verl_row_to_example
from appo.paths import ENV_VAR, bundled_data_dir, data_roots, find_data_file
from appo.types import Example, Metric, TaskKind

__all__ = [
    "BENCHMARKS", "BenchmarkSpec", "DataError", "ENV_VAR", "Example", "Metric", "TaskKind", "bundled_data_dir",
    "data_roots", "find_data_file", "is_verl_row", "load_benchmark", "load_dataset", "load_verl_parquet",
    "read_rows", "register_benchmark", "verl_row_to_example",
]
