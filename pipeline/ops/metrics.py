"""Prometheus metrics: the figures of ``letterpress status``, gathered at each scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pipeline.ops import status
from pipeline.sending.parts import SendingParts


class StatusCollector:
    def __init__(self, parts: SendingParts, workers: Callable[[], list[str] | None]) -> None:
        self.parts = parts
        self.workers = workers

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        rt = self.parts
        report = status.gather(rt.engine, rt.settings, rt.redis, self.workers())
        families: dict[str, Any] = {}
        for name, doc, labels, value in status.metrics(report):
            key = name + "|" + ",".join(sorted(labels))
            family = families.get(key)
            if family is None:
                family = GaugeMetricFamily(name, doc, labels=sorted(labels))
                families[key] = family
            family.add_metric([labels[k] for k in sorted(labels)], float(value))
        yield from families.values()

    def describe(self) -> list[Any]:
        return []  # gathered at scrape time: nothing to describe in advance


def registry(parts: SendingParts, workers: Callable[[], list[str] | None]) -> Any:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(parts, workers))
    return reg


def serve(
    parts: SendingParts, workers: Callable[[], list[str] | None], host: str, port: int
) -> None:
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app

    server = make_server(host, port, make_wsgi_app(registry(parts, workers)))
    server.serve_forever()
