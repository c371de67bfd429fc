"""The plugin after a plain install: the README's plugin section, run exactly as written.

A fresh venv from Debian's /usr/bin/python3, ``pip install`` of a copy of this
checkout, then the example app under ``opentelemetry-instrument``. pip's own
cache (``~/.cache/pip``, or ``PIP_CACHE_DIR``) makes a second run quick; the
first downloads the OpenTelemetry packages from PyPI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otel_pagecache.instrumentor import NO_OP_PROVIDER_WARNING

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- tested exactly as written by tests/test_plugin_install.py -->"


def readme_plugin_commands() -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```sh\n(.*?)```", after, re.S)
    assert match, "the README's plugin section lost its code block"
    return match.group(1)


def _copy_checkout(target: Path) -> None:
    """The files git knows of (tracked and new), as a fresh clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_readme_plugin_section_works_in_a_fresh_venv(tmp_path):
    checkout = tmp_path / "otel-pagecache"
    _copy_checkout(checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_plugin_commands()],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Console-exported spans: the cold request paid ~32 MiB of misses, the warm one none.
    spans = re.findall(r'"pagecache\.thread\.read_bytes": (\d+)', result.stdout)
    assert len(spans) == 2, result.stdout[-3000:]
    cold, warm = map(int, spans)
    assert cold >= 16 << 20 and warm < 1 << 20, spans
    assert NO_OP_PROVIDER_WARNING not in result.stderr


def _instrumented(app: Path, **env: str) -> subprocess.CompletedProcess:
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [str(instrument), sys.executable, str(app)],
        env={
            **clean,
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_op_tracer_provider_is_named_once_with_the_fix(tmp_path):
    """No configurator (as without opentelemetry-distro): one line on stderr, app unharmed."""
    app = tmp_path / "app.py"
    app.write_text(
        "from opentelemetry import trace\n"
        "with trace.get_tracer('t').start_as_current_span('work'):\n"
        "    print('app done')\n"
    )
    result = _instrumented(app, OTEL_PYTHON_CONFIGURATOR="none-installed")
    assert result.returncode == 0 and "app done" in result.stdout, result.stderr
    assert result.stderr.count(NO_OP_PROVIDER_WARNING) == 1, result.stderr
    assert "pip install opentelemetry-distro" in NO_OP_PROVIDER_WARNING
    # With the distro's configurator: the SDK is set up, no warning, figures on the span.
    result = _instrumented(app)
    assert result.returncode == 0, result.stderr
    assert NO_OP_PROVIDER_WARNING not in result.stderr
    assert '"pagecache.thread.read_bytes"' in result.stdout
    # The SDK turned off on purpose: no spans, and nothing to warn about.
    result = _instrumented(app, OTEL_SDK_DISABLED="true")
    assert result.returncode == 0 and "app done" in result.stdout, result.stderr
    assert NO_OP_PROVIDER_WARNING not in result.stderr


def test_plugin_settings_never_stop_the_application(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("print('app done')\n")
    result = _instrumented(
        app, OTEL_PAGECACHE_SPAN_FIGURES="perhaps", OTEL_PAGECACHE_PROCESS_RESIDENCY="2"
    )
    assert result.returncode == 0 and "app done" in result.stdout, result.stderr
    assert "OTEL_PAGECACHE_SPAN_FIGURES='perhaps' is invalid" in result.stderr
