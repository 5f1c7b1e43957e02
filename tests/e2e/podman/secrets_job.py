"""The chart's secrets Job where no Kubernetes exists: the Secrets it makes, for `PodRunner`.

In a cluster the Job runs `channels-fleet secrets ensure` against the API server. Here the same
command, with the Job's own arguments, runs against the test's Secrets API
(tests/support/kube_api.py) standing in for the API server, as the hosts file stands in for
cluster DNS; the Secrets it made join the rendered ones the pods read.
"""

from __future__ import annotations

import contextlib
import io

from support.kube_api import api_server

from channels_fleet.kube.command import main

from .chart_pods import NAMESPACE, PodRunner


def run_secrets_job(runner: PodRunner) -> str:
    """Run the rendered secrets Job's command (if the release has one); its output."""
    jobs = [w for w in runner.workloads.values() if w["kind"] == "Job"
            and w["metadata"]["labels"]["app.kubernetes.io/component"] == "secrets"]
    if not jobs:
        return ""
    (container,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    action, *args = container["args"][1:]  # "secrets", "ensure", flags and items
    out = io.StringIO()
    with api_server() as (url, state), contextlib.redirect_stdout(out):
        state.token = ""
        code = main([action, "--server", url, "--namespace", NAMESPACE, *args])
    assert code == 0, f"secrets ensure failed: {out.getvalue()}"
    for (_, name), secret in state.secrets.items():
        runner.secrets[name] = secret
    return out.getvalue()
