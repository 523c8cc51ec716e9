"""The ``appo`` command line: a thin layer over documented Python calls.

=========  ======================================================
command    Python call
=========  ======================================================
train      :func:`appo.train.trainer.train`
sft        :func:`appo.train.sft_run.run_sft`
sft-train  :func:`appo.train.sft_run.sft_then_train`
eval       :func:`appo.eval.evaluate_benchmarks`
           (``--endpoint``: :func:`appo.serve.client.evaluate_endpoint_benchmarks`)
serve      :func:`appo.serve.server.serve`
report     :func:`appo.report.write_report`
demo       :func:`appo.demo.run_demo`
build-tiny :func:`appo.demo.build_tiny_base`
perf       :func:`appo.perf.run_bench` (alias: ``bench``, the old name)
list       :func:`appo.catalog.catalog`
analyze    :func:`appo.analysis.analyze`
study      :func:`appo.study.run_study`
=========  ======================================================

``train`` and ``sft`` take ``--config FILE`` (or the name of a config shipped in ``appo/presets/``) and dotted overrides
(``actor.optim.lr=1e-5``), exactly as :func:`appo.config.load_config`; ``--print-config`` prints the
resolved config and runs nothing. Errors are mapped to one line and an exit code in one place
(:mod:`appo.cli_errors`): 2 for usage and input errors, 130 for Ctrl-C. The argument tree is
:mod:`appo.cli.parser`, the handlers :mod:`appo.cli.commands`.

May import: :mod:`appo.analysis`, :mod:`appo.catalog`, :mod:`appo.cli_errors`, :mod:`appo.config`,
:mod:`appo.demo`, :mod:`appo.eval`, :mod:`appo.perf`, :mod:`appo.report`, :mod:`appo.serve`, :mod:`appo.study`,
:mod:`appo.train`, whose calls the commands are (the top layer; nothing imports it but ``appo.__main__``).
"""

from __future__ import annotations

import sys

from appo.cli.parser import build_parser, positive_int, spec_list
from appo.cli_errors import describe_error, full_traceback_wanted, one_line

__all__ = ["build_parser", "main", "positive_int", "spec_list"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``appo`` script. A usage or input error prints ``appo <command>: error: <one
    line>`` and returns 2; Ctrl-C returns 130 (:mod:`appo.cli_errors`; ``APPO_TRACEBACK=1`` re-raises)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except BaseException as exc:  # mapped below; anything unmapped is re-raised
        if isinstance(exc, SystemExit) or full_traceback_wanted():
            raise
        err = describe_error(exc)
        if err is None:
            raise
        print(f"appo {args.command}: error: {one_line(err.message)}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
