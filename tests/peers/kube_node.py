"""A one-node Kubernetes cluster started by scripts/kube-node, and kubectl/ctr against it.

``KubeNode`` runs ``scripts/kube-node up`` with a state directory of the test's own
and ``down`` at exit, which removes every process, cgroup, mount and file ``up``
made. Its ``env`` is what ``scripts/kube-node env`` prints: KUBECONFIG,
CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE and a PATH holding kubectl and ctr.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.peers import Managed

__all__ = ["NODE_NAME", "KubeNode"]

REPO = Path(__file__).resolve().parent.parent.parent
KUBE_NODE = REPO / "scripts" / "kube-node"
NODE_NAME = "otel-pagecache-node"  # scripts/kube-node's node_name


class KubeNode(Managed):
    def __init__(self, state: Path) -> None:
        self.state = state
        self.env: dict[str, str] = {}
        self.up_log = ""

    def start(self) -> KubeNode:
        base = {**os.environ, "KUBE_NODE_STATE": str(self.state)}
        up = subprocess.run(
            [str(KUBE_NODE), "up"], env=base, capture_output=True, text=True, timeout=1800
        )
        self.up_log = up.stderr
        if up.returncode != 0:
            self._down(base)
            raise RuntimeError(f"scripts/kube-node up failed:\n{up.stderr[-3000:]}")
        lines = subprocess.run(
            [str(KUBE_NODE), "env"], env=base, capture_output=True, text=True, check=True
        ).stdout
        env = dict(base)
        for line in lines.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
        self.env = env
        return self

    def stop(self) -> None:
        self._down({**os.environ, "KUBE_NODE_STATE": str(self.state)})

    def _down(self, env: dict[str, str]) -> None:
        down = subprocess.run(
            [str(KUBE_NODE), "down"], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    def log(self, component: str, lines: int = 30) -> str:
        path = self.state / "logs" / f"{component}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["kubectl", *args], env=self.env, input=stdin, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args))

    def ctr(self, *args: str) -> str:
        return subprocess.run(
            ["ctr", *args], env=self.env, capture_output=True, text=True, check=True, timeout=600
        ).stdout

    def pod_log(self, namespace: str, pod: str) -> str:
        """The pod's container logs from the kubelet's log directory (kubectl logs needs
        the node's address, and a loopback node address is refused by the kubelet)."""
        pods = self.state / "root" / "var" / "log" / "pods"
        text = []
        for f in sorted(pods.glob(f"{namespace}_{pod}_*/*/*.log")):
            text.append(f.read_text(errors="replace")[-4000:])
        return "\n".join(text)
