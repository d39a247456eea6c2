"""What changed between the playbook a run pinned and the file now (pure)."""

from __future__ import annotations

from orchestrator.db.identity import identity_changes
from orchestrator.playbook import playbook_changes, text_sha256

PINNED = """name: release
git: {repo: app, remote: origin, source: staging, target: main}
monitor:
  http: [{url: "http://x/health", expect_status: 200}]
"""


def test_each_changed_key_is_named_with_both_values() -> None:
    now = PINNED.replace("target: main", "target: prod").replace("200", "204")
    assert playbook_changes(PINNED, now) == [
        "git.target: 'main' -> 'prod'",
        "monitor.http[0].expect_status: 200 -> 204",
    ]


def test_added_and_removed_keys_and_lists_of_another_length() -> None:
    now = PINNED.replace("name: release\n", "") + "release: {url: http://x/version}\n"
    now = now.replace('[{url: "http://x/health", expect_status: 200}]', "[]")
    assert playbook_changes(PINNED, now) == [
        "name: 'release' -> (absent)",
        "monitor.http: [{'url': 'http://x/health', 'expect_status': 200}] -> []",
        "release: (absent) -> {'url': 'http://x/version'}",
    ]


def test_comments_and_layout_are_not_changes_but_a_broken_file_is() -> None:
    relaid = "# reviewed\n" + PINNED.replace("{repo: app,", "{ repo: app ,")
    assert text_sha256(relaid) != text_sha256(PINNED)
    assert playbook_changes(PINNED, relaid) == []
    assert playbook_changes(PINNED, "git: [unclosed") == [
        "the file is no longer a valid YAML mapping"
    ]


def test_a_database_is_the_same_only_when_every_pinned_part_is() -> None:
    pinned = {"system_identifier": "7", "database_oid": "16384", "database_name": "app"}
    assert identity_changes(pinned, dict(pinned)) == []
    assert identity_changes(pinned, {**pinned, "database_oid": "16999"}) == [
        "database_oid was 16384, is 16999"
    ]
    neon = {**pinned, "neon_branch": "br-main"}
    assert identity_changes(neon, pinned) == ["neon_branch was br-main, is None"]
    assert identity_changes(pinned, neon) == []  # a record from before Neon was read
