"""The collection's run_summary callback, enabled beside the usual output as the pipeline enables it: the recap per
host and the tasks that changed (or would, under --check), with the files their diffs name, loop items included."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: One file
      ansible.builtin.copy: {content: "x\\n", dest: "{{ out }}/one.txt", mode: "0644"}
    - name: A file per item
      ansible.builtin.copy: {content: "{{ item }}\\n", dest: "{{ out }}/{{ item }}.txt", mode: "0644"}
      loop: [a, b]
    - name: Nothing to change
      ansible.builtin.file: {path: "{{ out }}", state: directory}
    - name: Fails
      ansible.builtin.fail: {msg: "on purpose"}
      when: fail | default(false) | bool
"""


def run(tmp_path, *args):
    (tmp_path / "play.yml").write_text(PLAY)
    summary = tmp_path / "summary.json"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_CALLBACKS_ENABLED": "infra.obs.run_summary",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "INFRA_OBS_RUN_SUMMARY": str(summary),
    }
    command = [
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        str(tmp_path / "play.yml"),
        "-e",
        f"out={tmp_path}",
    ]
    result = subprocess.run([*command, *args], env=env, capture_output=True, text=True)
    return result.returncode, json.loads(summary.read_text())


def test_a_check_run_names_what_would_change_and_a_real_run_counts_it(tmp_path):
    rc, planned = run(tmp_path, "--check", "--diff")
    assert rc == 0
    assert planned["changes"]["localhost"] == [
        {"task": "One file", "files": [str(tmp_path / "one.txt")]},
        {"task": "A file per item", "files": [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]},
    ]
    assert not (tmp_path / "one.txt").exists()
    rc, done = run(tmp_path, "-e", "fail=true")
    assert rc == 2
    assert {k: done["hosts"]["localhost"][k] for k in ("changed", "failures", "unreachable")} == {
        "changed": 2,
        "failures": 1,
        "unreachable": 0,
    }
    rc, again = run(tmp_path)
    assert rc == 0 and again["hosts"]["localhost"]["changed"] == 0 and again["changes"] == {}
