"""/metrics in the Prometheus text format, on a real cluster."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes


async def test_metrics_show_tasks_devices_and_stage_histograms(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster(heartbeat_interval_s=0.1)
    agent = await cluster.add_agent("a1", emulate="rk3588", time_scale=5.0)
    ids = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(4)]
    await cluster.wait(ids)
    await asyncio.sleep(0.25)
    response = await cluster.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "edgesched_tasks",
        "edgesched_queue_depth",
        "edgesched_retries",
        "edgesched_dead_tasks",
        "edgesched_device_cpu",
        "edgesched_device_memory",
        "edgesched_device_xpu",
        "edgesched_device_bandwidth_mbps",
        "edgesched_device_latency_ms",
        "edgesched_device_free_slots",
        "edgesched_device_heartbeat_age_seconds",
        "edgesched_stage_seconds",
        "edgesched_tasks_finished",
    ):
        assert name in families, name
    stages = {
        s.labels["stage"]
        for s in families["edgesched_stage_seconds"].samples
        if s.name.endswith("_count") and s.value > 0
    }
    assert {"queue_wait", "transfer", "inference", "result_return", "end_to_end"} <= stages
    finished = {
        s.labels["state"]: s.value
        for s in families["edgesched_tasks_finished"].samples
        if s.name.endswith("_total")
    }
    assert finished == {"done": 4.0}
    (slots,) = families["edgesched_device_free_slots"].samples
    assert slots.labels == {"device": agent.identity.agent_id, "type": "rk3588"}
    assert slots.value == 3


async def test_timing_records_export_as_csv(make_cluster) -> None:
    import csv
    import io

    cluster: InProcessCluster = await make_cluster()
    await cluster.add_agent("a1")
    ids = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(3)]
    await cluster.wait(ids)
    await cluster.master.journal.flush()
    response = await cluster.get("/api/v1/tasks/export.csv?state=done")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(float(r["end_to_end_ms"]) > 0 and r["state"] == "done" for r in rows)
    assert {"queue_wait_ms", "transfer_ms", "inference_ms", "result_return_ms"} <= set(rows[0])


async def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_escaped(make_cluster) -> None:
    import csv
    import io

    from edgesched.v1 import client_pb2

    cluster: InProcessCluster = await make_cluster()
    names = ["=1+1.png", "+cmd.png", "-2.png", "@SUM(A1).png", "\tx.png", "plain.png"]
    for i, name in enumerate(names):
        request = client_pb2.SubmitRequest(
            client_id="csv",
            idempotency_key=f"csv-{i}",
            task_type="layout",
            filename=name,
            payload=png_bytes(color=(i, 5, 5)),
        )
        await cluster.stub.Submit(request, timeout=10, metadata=cluster.auth)
    response = await cluster.get("/api/v1/tasks/export.csv")
    shown = {r["filename"] for r in csv.DictReader(io.StringIO(response.text))}
    # the tab is a control character: the shown name drops it, so "x.png" stays plain
    assert shown == {"'=1+1.png", "'+cmd.png", "'-2.png", "'@SUM(A1).png", "x.png", "plain.png"}
