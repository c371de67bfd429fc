"""The shipped Kubernetes manifests, as the tests read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DAEMONSET = Path(__file__).resolve().parent.parent / "examples" / "kubernetes" / "daemonset.yaml"


def daemonset_documents() -> list[dict[str, Any]]:
    """Every document of daemonset.yaml (its Namespace, then the DaemonSet)."""
    return [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]


def daemonset_manifest() -> dict[str, Any]:
    """The DaemonSet of daemonset.yaml."""
    return next(d for d in daemonset_documents() if d["kind"] == "DaemonSet")
