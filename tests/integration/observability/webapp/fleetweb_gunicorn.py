"""gunicorn config of the web-tier metrics tests: multiprocess mode as docs/operations.md says."""

import asyncio
import os
import threading

from channels_fleet.observability import web as web_metrics

web_metrics.setup_multiprocess(os.environ["FLEETWEB_PROM_DIR"])  # before prometheus_client

bind = f"127.0.0.1:{os.environ['FLEETWEB_PORT']}"
workers = int(os.environ.get("FLEETWEB_WORKERS", "2"))
child_exit = web_metrics.child_exit
accesslog = None


def when_ready(server):
    from channels_fleet.observability.probes import ProbeServer

    async def serve():
        probes = ProbeServer("127.0.0.1", int(os.environ["FLEETWEB_METRICS_PORT"]), component="web")
        await probes.start()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
