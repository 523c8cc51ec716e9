"""The training loop (:mod:`~appo.train.trainer`, read top to bottom) and what only the loop uses: building the
run's parts (:mod:`~appo.train.components`), collating rows (:mod:`~appo.train.batching`), the log-prob
layouts chosen once per step (:mod:`~appo.train.layout`: padded, packed, shared-prefix tries), the PPO update,
checkpoints, metrics and the progress display, and SFT. The config, the algorithms, data sampling and the
rollout dump records live outside (:mod:`appo.config`, :mod:`appo.algorithms`, :mod:`appo.data.sources`,
:mod:`appo.dump`).

May import: everything below it (:mod:`appo.algorithms`, :mod:`appo.config`, :mod:`appo.agent`, :mod:`appo.engine`,
:mod:`appo.tools`, :mod:`appo.rewards`, :mod:`appo.data`, :mod:`appo.models`, :mod:`appo.core`, :mod:`appo.types`,
:mod:`appo.dump`), :mod:`appo.distributed`, :mod:`appo.eval`, :mod:`appo.prompts`. Not the report, analysis, study,
demo or CLI.
"""
