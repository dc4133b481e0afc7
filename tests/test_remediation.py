"""M2M remediation state machine, driven through time with explicit device views."""

from __future__ import annotations

from daemon.core.remediation import (
    DeviceView,
    Escalate,
    Fixed,
    NeedApproval,
    Policy,
    Remediation,
    RemState,
    SendCommand,
    advance,
    approve,
    on_reply,
    start,
)
from daemon.core.rulefmt import RemediationStep

S = 1000
ONLINE = DeviceView(online=True, firing=True, model="boiler-x200")
OFFLINE = DeviceView(online=False, firing=True, model="boiler-x200")
CLEARED = DeviceView(online=True, firing=False, model="boiler-x200")
POLICY = Policy(max_sends=2, command_ttl_ms=600 * S, retry_base_ms=10 * S, budget_per_hour=6)
REDUCE = RemediationStep(
    "reduce_power", {"percent": 30}, timeout_s=30, verify_s=120, max_attempts=2
)
REBOOT = RemediationStep("reboot", {}, timeout_s=30, verify_s=60, max_attempts=1)


def begin(*steps: RemediationStep) -> Remediation:
    return start("key", "b1", "Hot", 1000, steps or (REDUCE,), 0)


def sends(effects: list[object]) -> list[SendCommand]:
    return [e for e in effects if isinstance(e, SendCommand)]


def test_command_acknowledged_and_verified() -> None:
    """Test the happy path: send, ok reply, alert clears, fix reported."""
    rem, effects = advance(begin(), 0, ONLINE, POLICY)
    (sent,) = sends(effects)
    assert (sent.method, dict(sent.params), sent.command_id) == (
        "reduce_power",
        {"percent": 30},
        rem.command_id,
    )
    rem, effects = on_reply(rem, sent.command_id, "ok", "power reduced", 2 * S, POLICY)
    assert rem.state is RemState.VERIFYING
    rem, effects = advance(rem, 60 * S, CLEARED, POLICY)
    assert rem.state is RemState.CLEARED
    assert effects == [Fixed("key", "b1", "Hot", "reduce_power")]
    assert [e.event for e in rem.log] == ["started", "sent", "acknowledged", "cleared"]


def test_offline_device_gets_the_command_only_when_back() -> None:
    """Test that nothing is sent while offline, and the held command goes out on return."""
    rem, effects = advance(begin(), 0, OFFLINE, POLICY)
    assert effects == []
    assert rem.state is RemState.WAITING
    rem, effects = advance(rem, 10 * S, OFFLINE, POLICY)
    assert effects == []
    assert [e.event for e in rem.log].count("waiting for device") == 1
    rem, effects = advance(rem, 20 * S, ONLINE, POLICY)
    assert len(sends(effects)) == 1
    assert rem.state is RemState.SENT


def test_command_expires_while_device_stays_offline_then_escalates() -> None:
    """Test that a command held past its time to live is given up and the alert escalates."""
    rem = begin(REBOOT)
    rem, _ = advance(rem, 0, OFFLINE, POLICY)
    rem, effects = advance(rem, 600 * S, OFFLINE, POLICY)
    assert rem.state is RemState.FAILED
    assert effects == [
        Escalate(
            "key",
            "b1",
            "Hot",
            "remediation failed: reboot expired: the device stayed offline",
        )
    ]
    assert not any(e.event == "sent" for e in rem.log)


def test_no_reply_resends_the_same_id_then_moves_on() -> None:
    """Test that a missing reply is retried with the same command id, up to max_sends."""
    rem, effects = advance(begin(REBOOT), 0, ONLINE, POLICY)
    first = sends(effects)[0].command_id
    rem, effects = advance(rem, 30 * S, ONLINE, POLICY)
    assert [s.command_id for s in sends(effects)] == [first]
    rem, effects = advance(rem, 60 * S, ONLINE, POLICY)
    assert rem.state is RemState.FAILED
    assert isinstance(effects[0], Escalate)


def test_failed_verification_retries_with_a_new_id_then_next_step() -> None:
    """Test verify timeout -> second attempt (new id, after backoff) -> next step -> escalate."""
    rem, effects = advance(begin(REDUCE, REBOOT), 0, ONLINE, POLICY)
    first = sends(effects)[0].command_id
    rem, _ = on_reply(rem, first, "ok", "", S, POLICY)
    rem, effects = advance(rem, 121 * S, ONLINE, POLICY)
    assert rem.state is RemState.WAITING
    assert rem.attempt == 2
    rem, effects = advance(rem, 125 * S, ONLINE, POLICY)
    assert effects == []  # backoff
    rem, effects = advance(rem, 131 * S, ONLINE, POLICY)
    second = sends(effects)[0].command_id
    assert second != first
    rem, _ = on_reply(rem, second, "ok", "", 132 * S, POLICY)
    rem, effects = advance(rem, 252 * S, ONLINE, POLICY)
    assert rem.current == REBOOT
    rem, effects = advance(rem, 253 * S, ONLINE, POLICY)
    assert sends(effects)[0].method == "reboot"


def test_rejection_skips_to_the_next_step() -> None:
    """Test that a rejected command is not retried; the next step runs."""
    rem, effects = advance(begin(REDUCE, REBOOT), 0, ONLINE, POLICY)
    rem, _ = on_reply(rem, sends(effects)[0].command_id, "rejected", "locked", S, POLICY)
    assert rem.current == REBOOT
    assert any(e.event == "device answered rejected" for e in rem.log)


def test_disallowed_method_is_skipped() -> None:
    """Test that a method outside the model's allowlist is never sent."""
    rem, effects = advance(begin(REDUCE, REBOOT), 0, ONLINE, POLICY, allowed=frozenset({"reboot"}))
    assert effects == []
    rem, effects = advance(rem, S, ONLINE, POLICY, allowed=frozenset({"reboot"}))
    assert [s.method for s in sends(effects)] == ["reboot"]


def test_approval_required_waits_for_an_agent() -> None:
    """Test that an approval-required method asks first and is sent once approved."""
    rem, effects = advance(begin(), 0, ONLINE, POLICY, approval=frozenset({"reduce_power"}))
    assert isinstance(effects[0], NeedApproval)
    rem, effects = advance(rem, 10 * S, ONLINE, POLICY, approval=frozenset({"reduce_power"}))
    assert effects == []
    rem = approve(rem, 20 * S, "alice")
    rem, effects = advance(rem, 21 * S, ONLINE, POLICY, approval=frozenset({"reduce_power"}))
    assert len(sends(effects)) == 1


def test_budget_exhausted_escalates_instead_of_sending() -> None:
    """Test that a device over its command budget gets no more commands."""
    busy = DeviceView(online=True, firing=True, commands_last_hour=6)
    rem, effects = advance(begin(), 0, busy, POLICY)
    assert rem.state is RemState.FAILED
    assert effects == [Escalate("key", "b1", "Hot", "command budget exhausted")]


def test_alert_clearing_before_any_command_needs_nothing() -> None:
    """Test that no command is sent for an alert that already cleared."""
    rem, effects = advance(begin(), 0, CLEARED, POLICY)
    assert rem.state is RemState.NOT_NEEDED
    assert effects == []


def test_late_reply_to_an_old_command_is_ignored() -> None:
    """Test that a reply to a superseded command id changes nothing."""
    rem, effects = advance(begin(), 0, ONLINE, POLICY)
    same, effects = on_reply(rem, "fl-other", "ok", "", S, POLICY)
    assert same == rem
    assert effects == []


def test_remediation_survives_json_round_trip() -> None:
    """Test that a persisted remediation (for restarts) loads back equal."""
    rem, _ = advance(begin(REDUCE, REBOOT), 0, ONLINE, POLICY)
    assert Remediation.from_json(rem.to_json()) == rem
