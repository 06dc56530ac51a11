"""The ``passnat`` command: thin argparse front end; every subcommand lives in its own module."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _cmd_check(args: argparse.Namespace) -> int:
    from passnat.config.check import check_file

    return check_file(args.config, quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="passnat",
        description="passnat: a NAT/NAPT router for VPN passthrough (IPsec ESP, PPTP).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("check", help="check a configuration file (exit 1 on errors)")
    c.add_argument("--config", "-c", required=True, help="SEIL-style configuration file")
    c.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    c.set_defaults(func=_cmd_check)
    __import__("passnat.lab.cli").lab.cli.register(sub)  # passnat lab ... (docs/lab.md)

    from passnat.control.commands import add_parsers
    from passnat.service.unit import register as register_service

    add_parsers(sub)
    __import__("passnat.ha.cli").ha.cli.register(sub)  # passnat ha master|backup|status|check (docs/ha.md)
    register_service(sub)  # passnat service unit|install (docs/operations.md)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ModuleNotFoundError as e:  # a package passnat needs is missing: one line, no traceback
        from passnat.service.deps import missing_message

        line = missing_message(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
