"""The direct encoders against what the SDK-based agent exported for the same snapshot.

``tests/fixtures/collection_sdk_*`` were captured from the SDK path before it
was replaced (see ``tests/fixtures/capture_sdk_output.py``). Same names,
units, descriptions, kinds, temporality, attributes, values (ints stay ints),
start-time behaviour and per-container Resources; the only differences are
the label-hygiene fixes of issue 10, applied to the fixture here explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_pagecache.metric_export import own_reader
from otel_pagecache.metric_regrouping import ResourceSplitter
from otel_pagecache.metrics import REASON_AUTO_CORE, AgentMetrics
from otel_pagecache.otlp_bulk import CUMULATIVE, DELTA, BulkEncoder
from otel_pagecache.otlp_transport import OtlpSettings
from otel_pagecache.pipeline import MetricsPipeline
from tests.collection_snapshot import fixed_snapshot
from tests.fixtures.capture_sdk_output import BASE, normalize

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SENTENCE = "auto: BTF present and the object loads"


class _Source:
    def __init__(self):
        self.snapshot = fixed_snapshot(1)

    def current(self):
        return self.snapshot


def _fixture_otlp(temporality: str) -> list[dict]:
    records = json.loads((FIXTURES / "collection_sdk_otlp.json").read_text())[temporality]
    for record in records:
        reason = record["attributes"].get("pagecache.engine.reason")
        if reason == {"stringValue": SENTENCE}:  # issue 10 item 7: a code, not a sentence
            record["attributes"]["pagecache.engine.reason"] = {"stringValue": REASON_AUTO_CORE}
    return records


def _own_metrics(reader, source) -> MeterProvider:
    """The agent's own metrics on the SDK, as the fixture's agent had them."""
    provider = MeterProvider(
        metric_readers=[reader], resource=BASE, exemplar_filter=AlwaysOffExemplarFilter()
    )
    AgentMetrics(
        provider.get_meter("otel_pagecache", "0.test"),
        source,
        engine="core",
        engine_reason=REASON_AUTO_CORE,
        attribution="owner",
    )
    return provider


def _pipeline(temporality: str, source) -> tuple[MetricsPipeline, MeterProvider]:
    reader = own_reader(OtlpSettings(temporality=temporality))
    provider = _own_metrics(reader, source)
    encoder = BulkEncoder(
        BASE.attributes,
        "otel_pagecache",
        "0.test",
        temporality=DELTA if temporality == "delta" else CUMULATIVE,
    )
    pipeline = MetricsPipeline(
        reader,
        ResourceSplitter().split,
        encoder,
        source,
        sender=None,
        interval_s=60,
        export_timeout_s=10,
        destination="test",
    )
    return pipeline, provider


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_otlp_output_equals_the_sdk_output(temporality):
    source = _Source()
    pipeline, provider = _pipeline(temporality, source)
    requests = []
    for scale in (1, 2):
        source.snapshot = fixed_snapshot(scale)
        body = b"".join(pipeline.bodies())
        requests.append(MessageToDict(ExportMetricsServiceRequest.FromString(body)))
    provider.shutdown()
    got = normalize(requests)
    expected = sorted(_fixture_otlp(temporality), key=lambda r: json.dumps(r, sort_keys=True))
    assert len(got) == len(expected) == 164
    missing = [r for r in expected if r not in got]
    extra = [r for r in got if r not in expected]
    assert not missing and not extra, (missing[:3], extra[:3])
    assert got == expected


def _families(text: str) -> dict:
    """name -> (type, help, {(sorted non-empty labels): value})."""
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {
            tuple(sorted((k, v) for k, v in s.labels.items() if v != "")): s.value
            for s in family.samples
        }
        out[family.name] = (family.type, family.documentation, samples)
    return out


def test_prometheus_output_equals_the_sdk_output():
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    from otel_pagecache.prometheus_bulk import BulkCollector

    registry = CollectorRegistry()
    source = _Source()
    reader = PrometheusMetricReader(registry=registry)
    provider = _own_metrics(reader, source)
    registry.register(BulkCollector(source, "otel_pagecache", "0.test"))
    text = generate_latest(registry).decode()
    provider.shutdown()
    sdk = (FIXTURES / "collection_sdk_prometheus.txt").read_text()
    sdk = sdk.replace(
        f'pagecache_engine_reason="{SENTENCE}"', f'pagecache_engine_reason="{REASON_AUTO_CORE}"'
    )
    ours = _families(text)
    assert len(ours) == 34 and ours == _families(sdk)
    # Label hygiene (issue 10 item 7): no series of ours has an empty label.
    for line in text.splitlines():
        if line.startswith("pagecache_"):
            assert '=""' not in line.replace('otel_scope_schema_url=""', ""), line


def _empty(kv) -> bool:
    kind = kv.value.WhichOneof("value")
    return kind is None or (kind == "string_value" and kv.value.string_value == "")


def test_no_empty_valued_attribute_on_any_series():
    """Issue 10 item 7, over OTLP: points and Resources carry no "" values."""
    source = _Source()
    pipeline, provider = _pipeline("cumulative", source)
    request = ExportMetricsServiceRequest.FromString(b"".join(pipeline.bodies()))
    provider.shutdown()
    seen = 0
    for rm in request.resource_metrics:
        assert not [kv for kv in rm.resource.attributes if _empty(kv)]
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    seen += len(point.attributes)
                    assert not [kv for kv in point.attributes if _empty(kv)], metric.name
    assert seen > 0


def test_engine_reason_is_a_short_code():
    from otel_pagecache.agent import engine_reason_code
    from otel_pagecache.config import Settings
    from otel_pagecache.metrics import ENGINE_REASONS

    cases = {
        ("auto", True, "core"): "auto_core",
        ("auto", True, "bcc"): "auto_fallback",
        ("bcc", True, "bcc"): "requested",
        ("none", True, None): "disabled",
        ("auto", False, None): "disabled",
        ("auto", True, None): "unavailable",
    }
    for (engine, activity, running), code in cases.items():
        got = engine_reason_code(Settings(engine=engine, activity=activity), running)
        assert got == code and got in ENGINE_REASONS
