"""The real embgen binary on 127.0.0.1 for the client tests: started with the given
settings on a free port, waited for until healthy, stopped cleanly afterwards."""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def serve(settings):
    """Yields the base URL of a server run with `settings` (environment variables)
    on top of loopback, the test model cache and offline mode."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HF_HOME": os.environ.get("EMBGEN_HF_HOME", str(ROOT / ".cache" / "hf")),
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "warn",
        **settings,
    }
    binary = os.environ.get("EMBGEN_BIN", str(ROOT / "target" / "release" / "embgen"))
    proc = subprocess.Popen([binary, "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None, "embgen exited"
        assert time.time() < deadline, "embgen never became healthy"
        time.sleep(0.1)
    yield base
    proc.terminate()
    assert proc.wait(timeout=10) == 0
