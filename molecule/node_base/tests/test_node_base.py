"""The node image boots systemd as PID 1 and the base role leaves a node that says what it is."""

import json


def test_systemd_is_pid_1_and_the_system_is_running(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running --wait")
    assert state.stdout.strip() == "running", host.run("systemctl --failed --no-pager").stdout


def test_node_identity_is_published_as_a_local_fact(host):
    facts = json.loads(host.file("/etc/ansible/facts.d/agency_os.fact").content_string)
    assert facts["node_name"] == "molecule-node-1"
    assert facts["tags"] == {"tier": "bulk", "project": "agency-os", "environment": "molecule"}


def test_journald_keeps_node_logs_bounded(host):
    out = host.run("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=200M" in out.stdout
    # journald restarted by the handler still answers
    assert host.run("journalctl -n 1 --no-pager").rc == 0
