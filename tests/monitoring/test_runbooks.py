"""docs/runbooks.md against the alerts whose runbook_url annotations point into it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.tools import REPO

RUNBOOKS = REPO / "docs" / "runbooks.md"
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchor(heading: str) -> str:
    """The fragment GitHub and most Markdown renderers give a heading: lower case, punctuation
    dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    """Second-level heading -> the text under it, up to the next one."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_links_its_runbook_section() -> None:
    """Each runbook_url is docs/runbooks.md#<anchor>, and the anchor is the heading named after
    that alert."""
    anchors = {anchor(heading): heading for heading in sections()}
    for rule in alert_rules():
        path, _, fragment = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/runbooks.md", rule["alert"]
        assert anchors.get(fragment) == rule["alert"], rule["alert"]


def test_every_runbook_section_is_for_an_alert_that_exists() -> None:
    """No section is left behind for an alert that was renamed or removed."""
    assert set(sections()) == {rule["alert"] for rule in alert_rules()}


def test_every_runbook_says_what_it_means_how_to_confirm_and_what_to_do() -> None:
    """Each section explains the alert, gives commands to confirm it and steps to take."""
    for heading, text in sections().items():
        for part in ("**Means**", "**Confirm**", "**Do**"):
            assert part in text, (heading, part)
        assert "```" in text, heading
