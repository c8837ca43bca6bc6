"""Allow-lists by user, channel and workspace; admins; one denial notice per person."""

from __future__ import annotations

from relaybot.connectors.slack.access import AccessList, DeniedNotices


def test_empty_lists_allow_everyone() -> None:
    access = AccessList()
    assert access.open and access.allows(user="U1", channel="C1", team="T1")


def test_users_and_channels() -> None:
    access = AccessList(users=["u0alice "], channels=["C0TEAM"], admins=["U0ADMIN"])
    assert access.allows(user="U0ALICE", channel="C0ELSEWHERE", team="T1")  # listed user, anywhere
    assert access.allows(user="U0BOB", channel="C0TEAM", team="T1")  # anyone in a listed channel
    assert not access.allows(user="U0BOB", channel="C0ELSEWHERE", team="T1")
    assert access.allows(user="U0ADMIN", channel="C0ELSEWHERE", team="T1")
    assert access.is_admin("U0ADMIN") and not access.is_admin("U0ALICE")


def test_workspace_list_is_a_hard_boundary() -> None:
    access = AccessList(teams=["T0OURS"], admins=["U0ADMIN"])
    assert access.allows(user="U0ANYONE", channel="C1", team="T0OURS")
    assert not access.allows(user="U0ANYONE", channel="C1", team="T0OTHER")
    assert not access.allows(user="U0ADMIN", channel="C1", team="T0OTHER")


def test_a_denied_person_is_told_once_per_interval() -> None:
    now = [0.0]
    notices = DeniedNotices(interval=3600, clock=lambda: now[0], max_entries=2)
    assert notices.should_tell("T1", "U1")
    assert not notices.should_tell("T1", "U1")
    assert notices.should_tell("T1", "U2")  # someone else
    now[0] = 3600
    assert notices.should_tell("T1", "U1")
    notices.should_tell("T1", "U3")  # bounded: the oldest entry is forgotten
    assert notices.should_tell("T1", "U2")
