"""Print the README's ACL table: every grant each service needs, from the services' own declarations.

``python -m scripts.acl_table`` (no arguments; the default topic and group names). The table is generated,
never hand-written: ``tests/unit/test_deploy_files.py`` fails when the README's copy differs from this output,
and ``tests/kafka/test_least_privilege.py`` runs each service with exactly these grants.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.acl import Grant, markdown_rows
from detector.settings import DetectorSettings
from incidents.console.settings import ConsoleSettings
from incidents.feedback import FeedbackSettings, VerdictListSettings
from incidents.settings import IncidentSettings
from producer.settings import ProducerSettings
from training.settings import TrainSettings

HEADER = ["| Service | Resource | Name | Operation | Why |", "|---|---|---|---|---|"]


def services() -> list[tuple[str, list[Grant]]]:
    """Each service with its default settings (no model or data file is needed to list what it does)."""
    alo = DetectorSettings.model_construct().acls()
    eos = [g for g in DetectorSettings.model_construct(exactly_once=True).acls() if g not in alo]
    zeek = [g for g in DetectorSettings.model_construct().acls(conn_state=True) if g not in alo]
    return [
        ("producer", ProducerSettings.model_construct(data=Path("-")).acls()),
        ("detector", alo),
        ("detector `--exactly-once` (also)", eos),
        ("detector, Zeek input (also)", zeek),
        ("incident service", IncidentSettings.model_construct().acls()),
        ("`incidents feedback`", FeedbackSettings.model_construct(incident="-").acls()),
        ("`incidents verdicts`", VerdictListSettings.model_construct().acls()),
        ("`incidents console`", ConsoleSettings.model_construct().acls()),
        ("`training train --from-topic kdd-connections`",
         TrainSettings.model_construct(from_topic="kdd-connections").acls()),
    ]


def table() -> str:
    rows = list(HEADER)
    for name, grants in services():
        rows += markdown_rows(name, grants)
    return "\n".join(rows)


def main() -> None:
    argparse.ArgumentParser(prog="python -m scripts.acl_table", description=__doc__.splitlines()[0]).parse_args()
    print(table())


if __name__ == "__main__":
    main()
