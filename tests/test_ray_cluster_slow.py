"""A real two-node Ray cluster on this machine: the project ships to its workers, each node prepares its own
cache, a node killed mid-sweep costs only its cells (the sweep goes on; a rerun after a killed driver completes
it), and the results equal a local run's (half a minute; marked slow: it starts and stops Ray).

Both nodes are ``ray start`` processes here, with their own resources and their own ``NSR_CACHE``; the test
stops every Ray process on the machine when it ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import tables, write

from analysis.sweep import project_runtime_env, run_sweep

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the distributed extra is not installed")
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def bare_python(folder: Path) -> Path:
    """A virtual environment that sees this one's packages but not the project (its editable install is left
    out), so that a node started from it can only run the project as Ray ships it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python*/site-packages"))
    packages = next(path for path in map(Path, sys.path) if path.name == "site-packages" and path.is_dir())
    (site / "dependencies.pth").write_text(f"{packages}\n")  # a path line: its own .pth files are not run
    return folder / "bin" / "python"


@pytest.fixture
def cluster(tmp_path):
    """A head node and a second node (resource ``second_node``, its own cache, no project installed); yields
    (address, second's port, second's cache, the environment for Ray commands)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    second_python = bare_python(tmp_path / "second-node-env")
    port, second_port = free_port(), free_port()
    second_cache = tmp_path / "second-node-cache"
    common = ["--num-cpus=1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                   env=env, check=True, capture_output=True)  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run(
            [second_python, "-c", "from ray.scripts.scripts import main; main()", "start", f"--address={address}",
             f"--node-manager-port={second_port}",
             '--resources={"second_node": 1}', *common],
            env={**env, "NSR_CACHE": str(second_cache)}, check=True, capture_output=True,
        )  # fmt: skip
        yield address, second_port, second_cache, env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)


def finished(out: Path) -> int:
    return len(list((out / "cells").glob("*.json")))


def kill_node(node_manager_port: int) -> None:
    """SIGKILL the raylet of the node with this port (its workers die with it)."""
    found = subprocess.run(["pgrep", "-f", f"node_manager_port={node_manager_port}"], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    assert pids, f"no raylet with node_manager_port={node_manager_port}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_a_sweep_on_a_two_node_cluster_survives_a_killed_node_and_equals_the_local_run(
    tmp_path, tiny_sweep, cluster, monkeypatch
):
    address, second_port, second_cache, env = cluster
    config = write(tmp_path, tiny_sweep)
    run_sweep(config, tmp_path / "local", progress=False)

    monkeypatch.chdir(tmp_path)  # Ray puts the driver's working directory on its workers' path: not the checkout
    ray.init(address=address, runtime_env=project_runtime_env(), log_to_driver=False)
    try:

        @ray.remote(resources={"second_node": 1})
        def where() -> tuple[str, str]:
            import nsr_env

            return nsr_env.__file__, os.environ["NSR_CACHE"]

        shipped, cache = ray.get(where.remote())
    finally:
        ray.shutdown()
    assert not shipped.startswith(str(Path(__file__).parents[1]))  # the workers import the copy Ray shipped
    assert cache == str(second_cache)

    out = tmp_path / "cluster"
    command = [sys.executable, "-m", "analysis.cli", "sweep", str(config), "--out", str(out), "--backend", "ray",
               "--address", address]  # fmt: skip
    log = (tmp_path / "sweep.log").open("w")
    sweep = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not list(second_cache.glob("calibration/*.json")):  # the second node has prepared what its cells need
        assert sweep.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()
        time.sleep(0.2)
    kill_node(second_port)
    at_kill = finished(out)
    while sweep.poll() is None and finished(out) < at_kill + 2:  # the sweep goes on without the second node
        assert time.monotonic() < deadline, "the sweep stopped making progress after the second node was killed"
        time.sleep(0.05)
    sweep.kill()  # and now the driver too: a rerun must complete what is left
    sweep.wait()
    assert finished(out) >= min(at_kill + 2, 24)
    subprocess.run(command, env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    assert finished(out) == 24
    for a, b in zip(tables(tmp_path / "local"), tables(out), strict=True):
        pd.testing.assert_frame_equal(a, b)
