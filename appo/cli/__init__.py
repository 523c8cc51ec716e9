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

import os
import sys

from appo.cli.parser import build_parser, positive_int, spec_list
from appo.cli_errors import describe_error, full_traceback_wanted, one_line

__all__ = ["build_parser", "main", "positive_int", "spec_list"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``appo`` script. A usage or input error prints ``appo <command>: error: <one
    line>`` and returns 2; Ctrl-C returns 130 (:mod:`appo.cli_errors`; ``APPO_TRACEBACK=1`` re-raises). A reader
    that closes stdout early (``appo list configs | head -1``) ends the command quietly with 141 (128 + SIGPIPE,
    what a shell reports for a command stopped by a closed pipe) instead of a traceback; a broken pipe anywhere
    else (a socket) is an error as before."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except BaseException as exc:  # mapped below; anything unmapped is re-raised
        if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
            quiet_closed_stdout()
            return 141
        if isinstance(exc, SystemExit) or full_traceback_wanted():
            raise
        err = describe_error(exc)
        if err is None:
            raise
        print(f"appo {args.command}: error: {one_line(err.message)}", file=sys.stderr)
        return err.code


def stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose read end is closed: ``poll`` reports ``POLLERR`` on such a write end
    (Linux and macOS). False for a terminal, a file, or a pipe still being read, so a BrokenPipeError from a
    socket is not mistaken for the reader of stdout going away."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout not a real file
        return False


def quiet_closed_stdout() -> None:
    """Point stdout at /dev/null after its reader went away, so the interpreter's final flush at exit does
    not raise a second BrokenPipeError (the recipe in Python's ``signal`` documentation, "Note on
    SIGPIPE"). Leaves stderr alone: errors still reach the terminal."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout already closed or not a real file (pytest capture)
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
