"""Drive the real ``storepulse run`` as a subprocess, as an operator would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures import stop_process
from tests.fixtures.prometheus import free_port

SAMPLE = re.compile(r"^(?P<name>[a-z_:]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


@dataclass
class EngineProcess:
    """One ``storepulse run`` process with its environment, logs and metrics endpoint."""

    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        env = {**os.environ, **self.env, "STOREPULSE_METRICS_PORT": str(self.port)}
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storepulse.cli", "-v", "run", *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_for(lambda: self.metrics_text() is not None, "the metrics endpoint to answer", 60)
        return self

    def metrics_text(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"engine exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for line in (self.metrics_text() or "").splitlines():
            m = SAMPLE.match(line)
            if not m or m["name"] != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m["value"])
        return total

    def wait_for(self, condition: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        while not condition():
            if time.monotonic() > deadline:
                metrics = "\n".join(
                    line for line in (self.metrics_text() or "").splitlines() if line.startswith("storepulse_input")
                )
                log = self.log()[-3000:]
                raise AssertionError(f"timed out after {deadline_s}s waiting for {what}:\n{metrics}\n{log}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush or snapshot."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        stop_process(self.process, grace_s=15, sig=signal.SIGINT)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
