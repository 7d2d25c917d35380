"""``python -m incidents [run]`` runs the incident service; ``python -m incidents feedback --incident ID`` marks
an incident benign; ``python -m incidents verdicts`` lists every verdict (who, when, why, in force or not);
``python -m incidents console`` serves the triage console (incident list, detail, "mark benign", verdicts).
Exit codes: 0 clean stop; 1 runtime failure (restart it: state is restored from Kafka);
2 invalid settings; 3 Kafka unreachable or credentials rejected."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from core import settings as cli
from core.kafka import KafkaConnectError
from core.kafka_io import FatalError
from core.lifecycle import run_service
from core.settings import SettingsError
from incidents.console.settings import ConsoleSettings
from incidents.feedback import FeedbackSettings, VerdictListSettings, send, table, verdicts
from incidents.settings import IncidentSettings

log = logging.getLogger("incidents")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m incidents", description=__doc__)
    sub = p.add_subparsers(dest="command")
    cli.add_arguments(sub.add_parser("run", help=IncidentSettings.__doc__), IncidentSettings)
    cli.add_arguments(sub.add_parser("feedback", help=FeedbackSettings.__doc__), FeedbackSettings)
    cli.add_arguments(sub.add_parser("verdicts", help=VerdictListSettings.__doc__), VerdictListSettings)
    cli.add_arguments(sub.add_parser("console", help=ConsoleSettings.__doc__), ConsoleSettings)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    command = args.command or "run"
    try:
        if command == "feedback":
            print(json.dumps(send(cli.from_namespace(FeedbackSettings, args))))
            return 0
        if command == "verdicts":
            listing = cli.from_namespace(VerdictListSettings, args)
            rows = verdicts(listing)
            print("\n".join(json.dumps(r) for r in rows) if listing.json_lines else table(rows))
            return 0
        if command == "console":
            from incidents.console.service import ConsoleService

            console = ConsoleService(cli.from_namespace(ConsoleSettings, args))
            return run_service(console, log, "serving the console", (RuntimeError,))
        from incidents.service import IncidentService

        service = IncidentService(cli.from_namespace(IncidentSettings, args))
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    except KafkaConnectError as exc:
        log.error("%s", exc)
        return 3
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1

    return run_service(service, log, "the current transaction", (FatalError,))


if __name__ == "__main__":
    sys.exit(main())
