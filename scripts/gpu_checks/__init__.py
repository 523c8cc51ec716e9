"""The rows of ``scripts/gpu_check.py``, one module per job: ``report`` (the table and the JSON, row by row),
``common`` (problem sizes and helpers every row uses), ``engine_rows`` (HFEngine and VLLMEngine log-probs against
teacher forcing), ``train_rows`` (bf16 and mixed-precision training, checkpoint resume), ``fsdp2_row`` (FSDP2 in
one process against plain training), ``speed_rows`` (ceilings, rollouts vs ``model.generate``, the RL step vs
TRL). ``scripts/gpu_check.py`` parses the arguments and runs them in order."""
