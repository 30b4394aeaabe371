"""Starts the real medgemma-server binary on the tiny checkpoint for the client tests."""
import json
import os
import pathlib
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def binary():
    """MEDGEMMA_BIN, else the binary `cargo test` builds."""
    path = os.environ.get("MEDGEMMA_BIN") or str(ROOT / "target" / "debug" / "medgemma-server")
    if not os.path.exists(path):
        raise RuntimeError(f"no medgemma-server binary at {path}: run cargo test (or cargo build) first")
    return path


@pytest.fixture(scope="session")
def goldens():
    return json.loads((FIXTURES / "tiny-gemma3" / "goldens.json").read_text())


@pytest.fixture(scope="session")
def server():
    proc, base = start_server(["--api-key", "test-key"])
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def start_server(extra):
    """Starts the binary on the tiny checkpoint with `extra` flags; (process, base URL)
    once it is ready."""
    proc = subprocess.Popen(
        [binary(), "serve", "--model", str(FIXTURES / "tiny-gemma3"), "--port", "0",
         "--served-model-name", "medgemma-tiny", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    base = line.removeprefix("listening on ")
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/ready") as r:
                if r.status == 200:
                    break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    return proc, base


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="test-key", max_retries=0)
