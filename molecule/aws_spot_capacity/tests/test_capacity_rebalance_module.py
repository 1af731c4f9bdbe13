"""The repo module aws_asg_capacity_rebalance: idempotent, check mode, diff, endpoint_url, region."""

import pytest
from conftest import NAME, run_module


@pytest.fixture
def rebalance_off(autoscaling):
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=NAME, CapacityRebalance=False)
    yield
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=NAME, CapacityRebalance=True)


def _rebalance(autoscaling):
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[NAME])["AutoScalingGroups"][0][
        "CapacityRebalance"
    ]


def test_converged_group_needs_no_change():
    result = run_module(("capacity_rebalance", True), diff=True)
    assert result["changed"] is False, result
    assert result["capacity_rebalance"] is True
    assert result["diff"] == {"before": {"capacity_rebalance": True}, "after": {"capacity_rebalance": True}}


@pytest.mark.usefixtures("rebalance_off")
def test_check_mode_reports_the_change_without_making_it(autoscaling):
    result = run_module(("capacity_rebalance", True), check=True, diff=True)
    assert result["changed"] is True, result
    assert result["diff"] == {"before": {"capacity_rebalance": False}, "after": {"capacity_rebalance": True}}
    assert _rebalance(autoscaling) is False


@pytest.mark.usefixtures("rebalance_off")
def test_turns_it_on_once(autoscaling):
    first = run_module(("capacity_rebalance", True))
    assert first["changed"] is True, first
    assert _rebalance(autoscaling) is True
    second = run_module(("capacity_rebalance", True))
    assert second["changed"] is False, second


def test_missing_group_fails_with_a_clear_message():
    result = run_module(("name", "no-such-group"))
    assert result.get("failed") is True
    assert "Auto Scaling group no-such-group not found" in result["msg"]


def test_missing_group_in_check_mode_is_a_pending_change():
    result = run_module(("name", "no-such-group"), check=True)
    assert result["changed"] is True, result
    assert "does not exist yet" in result["msg"]
