"""The `zingest` command: one entry point, one subcommand per role or tool.

Each subcommand lives in its own module with ``main(argv) -> int``; this file
only picks the module, so importing it starts nothing.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "up": ("zingest.supervisor", "run PostgreSQL (embedded unless database.dsn is set), a gateway and N sinks"),
    "gateway": ("gateway.main", "run one gateway: HTTP in, ZeroMQ PUSH out, status SUB in"),
    "sink": ("sink.main", "run one sink: ZeroMQ PULL in, COPY into PostgreSQL, status PUB out"),
    "gen": ("zingest.gen", "write generated rows as NDJSON (gen rides --rows N)"),
    "send": ("zingest.send", "post a NDJSON or JSON file through a gateway and wait for every job"),
    "replay": ("zingest.replay", "send a table's dead letters back through the gateway once their cause is fixed"),
}


def usage() -> str:
    lines = ["usage: zingest COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "zingest COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zingest: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
