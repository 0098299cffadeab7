"""Host programs the tests compare against (qemu-system-arm, GNU cpio), installed through apt when missing.

A test never skips for a tool the project can install: as root, a missing tool is installed with the host's
own apt sources (``apt-get install``, after ``apt-get update`` if the first attempt fails), as CI runs.  The
test skips only when that is impossible (not root, or apt failed), and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def host_tool(command: str, package: str) -> str:
    """The path of ``command``, installing Debian ``package`` for it when it is missing (as root)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip(f"{command} is not installed and installing {package} with apt needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, check=False)
        result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    found = shutil.which(command)
    if found is None:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"{command} is missing and 'apt-get install {package}' failed: {last}")
    return found
