"""Detection and parsing end to end, per board family, on fake roots built in tmp_path.

Each fake root has sys/, proc/, etc/ files with fixture contents and tiny ``#!/bin/sh``
executables on bin/ that ``cat`` a fixture, so the probes run exactly as on a board: file reads,
child processes, timeouts, the collector and the ``edgesched probe`` command.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from edgesched.agent.probes import (
    PROBES,
    AscendProbe,
    GenericProbe,
    NvidiaProbe,
    ProbeCollector,
    ProbeEnv,
    ProbeError,
    RknpuProbe,
    build_chain,
    detect,
)
from edgesched.agent.probes import nvidia as nvidia_module
from edgesched.agent.probes.env import ProbeTimeout
from edgesched.cli.probe import probe_command

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "devices"
MEMINFO = "MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n"


def put(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def script(root: Path, name: str, body: str) -> Path:
    path = put(root, f"bin/{name}", "#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def cat(rel: str) -> str:
    return f"cat '{FIXTURES / rel}'"


def base_root(root: Path) -> Path:
    put(root, "proc/meminfo", MEMINFO)
    (root / "sys").mkdir(parents=True, exist_ok=True)
    return root


def ascend_root(root: Path, table: str = "ascend/npu_smi_info_310p3_duo.txt") -> Path:
    base_root(root)
    put(root, "dev/davinci0", "")
    script(
        root,
        "npu-smi",
        f'case "$*" in\n  "info") {cat(table)} ;;\n'
        f'  "info -t usages -i 0") {cat("ascend/npu_smi_usages_310b.txt")} ;;\n'
        f'  "info -t common -i 0") {cat("ascend/npu_smi_common_310b.txt")} ;;\n'
        '  *) echo "unsupported: $*" >&2; exit 2 ;;\nesac\n',
    )
    return root


def rk3588_root(root: Path, load: str = "rknpu/load_busy.txt") -> Path:
    base_root(root)
    put(root, "proc/device-tree/compatible", b"radxa,rock-5b\0rockchip,rk3588\0")
    if load:
        put(root, "sys/kernel/debug/rknpu/load", (FIXTURES / load).read_text())
    put(root, "sys/kernel/debug/rknpu/version", "RKNPU driver: v0.9.8\n")
    for index, (zone, milli) in enumerate([("soc-thermal", "41000"), ("npu-thermal", "45230")]):
        put(root, f"sys/class/thermal/thermal_zone{index * 6}/type", zone + "\n")
        put(root, f"sys/class/thermal/thermal_zone{index * 6}/temp", milli + "\n")
    devfreq = "sys/class/devfreq/fdab0000.npu"
    put(root, f"{devfreq}/load", (FIXTURES / "rknpu/devfreq_load.txt").read_text())
    put(root, f"{devfreq}/cur_freq", "1000000000\n")
    put(root, f"{devfreq}/governor", "rknpu_ondemand\n")
    return root


def jetson_root(
    root: Path, line: str = "jetson/tegrastats_orin_nano_jp6.txt", sysfs: bool = True
) -> Path:
    base_root(root)
    put(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.4, BOARD: generic\n")
    put(root, "proc/device-tree/model", b"NVIDIA Jetson Orin Nano Developer Kit\0")
    put(root, "proc/device-tree/compatible", b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0")
    if sysfs:
        put(root, "sys/devices/platform/bus@0/17000000.gpu/load", "613\n")
        put(root, "sys/class/thermal/thermal_zone1/type", "gpu-thermal\n")
        put(root, "sys/class/thermal/thermal_zone1/temp", "55468\n")
        hwmon = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
        for k, (label, mv, ma) in enumerate(
            [("VDD_IN", 5000, 934), ("VDD_CPU_GPU_CV", 5000, 105), ("sum of shunt", 1, 1)], 1
        ):
            put(root, f"{hwmon}/in{k}_label", label + "\n")
            put(root, f"{hwmon}/in{k}_input", f"{mv}\n")
            put(root, f"{hwmon}/curr{k}_input", f"{ma}\n")
    script(root, "tegrastats", f"while :; do {cat(line)}; sleep 1; done\n")
    # JetPack 6 ships an nvidia-smi that knows nothing: it must never be picked
    script(root, "nvidia-smi", cat("nvidia/csv_noheader_jetson_orin.txt") + "\n")
    return root


def nvidia_root(root: Path) -> Path:
    base_root(root)
    put(root, "proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module\n")
    script(
        root,
        "nvidia-smi",
        'case "$*" in\n'
        f"  *--format=csv,noheader,nounits*) {cat('nvidia/csv_noheader_t4.txt')} ;;\n"
        '  *) echo "unexpected: $*" >&2; exit 2 ;;\nesac\n',
    )
    return root


@pytest.fixture
def collect() -> Iterator[Any]:
    """Runs a chain through a collector until every probe answered once; closes everything."""
    opened: list[tuple[ProbeCollector, ProbeEnv]] = []

    def run(env: ProbeEnv, **kwargs: Any) -> tuple[Any, dict[str, str], ProbeCollector]:
        collector = ProbeCollector(build_chain(env), **kwargs)
        opened.append((collector, env))
        collector.start()
        assert collector.wait_ready(20.0)
        sample, sources = collector.latest()
        return sample, sources, collector

    yield run
    for collector, env in opened:
        collector.close()
        env.close()


def chain_names(root: Path) -> list[str]:
    return [p.name for p in detect(root)]


def run_cli(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(probe_command, ["--json", "--wait", "20", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# --- detection ---------------------------------------------------------------------------------


def test_registry_order_generic_last() -> None:
    assert list(PROBES) == ["nvidia", "jetson", "ascend", "rknpu", "generic"]


def test_detection_per_family(tmp_path: Path) -> None:
    assert chain_names(ascend_root(tmp_path / "a")) == ["ascend", "generic"]
    assert chain_names(rk3588_root(tmp_path / "r")) == ["rknpu", "generic"]
    assert chain_names(jetson_root(tmp_path / "j")) == ["jetson", "generic"]  # never nvidia
    assert chain_names(nvidia_root(tmp_path / "n")) == ["nvidia", "generic"]
    assert chain_names(base_root(tmp_path / "empty")) == ["generic"]


def test_rk3588_detected_by_device_tree_alone(tmp_path: Path) -> None:
    # as non-root, debugfs is invisible: the compatible string still names the board
    assert chain_names(rk3588_root(tmp_path, load="")) == ["rknpu", "generic"]


def test_a_sysroot_is_hermetic(tmp_path: Path) -> None:
    env = ProbeEnv(base_root(tmp_path))
    assert env.which("sh") is None  # the host's /bin is not searched under a fake root
    assert ProbeEnv().which("sh") is not None


# --- end to end through the collector ------------------------------------------------------


def test_ascend_table(tmp_path: Path, collect: Any) -> None:
    env = ProbeEnv(ascend_root(tmp_path))
    sample, sources, collector = collect(env)
    assert sample.xpu_util == 0.0 and sample.per_unit == (0.0, 0.0)
    assert (sample.xpu_mem_used_mb, sample.xpu_mem_total_mb) == (2941.0, 87973.0)
    assert sample.temperature_c == 45.0
    assert sample.power_w is None  # NA on both chips, and the generic probe has none either
    assert sources["xpu_util"] == "ascend" and sources["cpu"] == "generic"
    info = collector.probes[0].static_info()
    assert (info["soc"], info["npu_smi_version"], info["chips"]) == ("Ascend310P3", "25.2.0", 2)


def test_ascend_310b_falls_back_to_usages_and_common(tmp_path: Path, collect: Any) -> None:
    env = ProbeEnv(ascend_root(tmp_path, table="ascend/broken_npu_smi_info_error.txt"))
    sample, sources, _ = collect(env)
    assert sample.xpu_util == 0.0
    assert (sample.xpu_mem_used_mb, sample.xpu_mem_total_mb) == (3783.0, 10810.0)
    assert sample.temperature_c == 38.0
    assert sample.power_w == 13.3  # the MCU's board figure; the rated 4.0 W is not a reading
    assert sources["power_w"] == "ascend"


def test_rk3588(tmp_path: Path, collect: Any) -> None:
    sample, sources, collector = collect(ProbeEnv(rk3588_root(tmp_path)))
    assert sample.per_unit == (0.63, 0.65, 0.64)
    assert sample.xpu_util == pytest.approx(0.64)
    assert sample.temperature_c == 45.23  # the npu-thermal zone, found by type
    assert (sample.xpu_mem_used_mb, sample.xpu_mem_total_mb) == (1953.1, 7812.5)
    assert sample.power_w is None
    assert sources["xpu_util"] == "rknpu"
    info = collector.probes[0].static_info()
    assert (info["soc"], info["driver"], info["cores"]) == ("rk3588", "0.9.8", 3)
    assert info["npu_governor"] == "rknpu_ondemand"
    assert not collector.states()["rknpu"].degraded


def test_rk3588_garbage_load_is_rejected(tmp_path: Path, collect: Any) -> None:
    env = ProbeEnv(rk3588_root(tmp_path, load="rknpu/load_garbage.txt"))
    sample, sources, collector = collect(env)
    assert sample.xpu_util is None and "xpu_util" not in sources
    assert sample.per_unit == (0.99, 0.99, None)
    state = collector.states()["rknpu"]
    assert state.degraded and "impossible" in (state.reason or "")


def test_rk3588_without_debugfs_uses_devfreq(tmp_path: Path, collect: Any) -> None:
    sample, _, collector = collect(ProbeEnv(rk3588_root(tmp_path, load="")))
    assert sample.xpu_util == pytest.approx(0.37) and sample.per_unit is None
    assert "rknpu load" in (collector.states()["rknpu"].reason or "")


def test_rk3588_permission_denied_is_reported(tmp_path: Path) -> None:
    class NoRootEnv(ProbeEnv):
        def read_text(self, path: str) -> str:
            if "/kernel/debug/" in path:
                raise PermissionError(13, "Permission denied", path)
            return super().read_text(path)

    probe = RknpuProbe(NoRootEnv(rk3588_root(tmp_path)))
    sample = probe.sample()
    assert sample.xpu_util == pytest.approx(0.37)  # devfreq, world-readable
    assert "permission denied" in (probe.degraded_reason or "")


def test_jetson_sysfs_and_tegrastats(tmp_path: Path, collect: Any) -> None:
    sample, sources, collector = collect(ProbeEnv(jetson_root(tmp_path)))
    assert sample.xpu_util == pytest.approx(0.613)  # per-mille sysfs load
    assert sample.temperature_c == 55.468
    assert sample.power_w == pytest.approx(4.67)  # INA3221 VDD_IN: 5000 mV × 934 mA
    assert (sample.xpu_mem_used_mb, sample.xpu_mem_total_mb) == (2272.0, 7620.0)
    assert sample.cpu == 0.0 and sample.memory == pytest.approx(2272 / 7620)
    assert {sources[f] for f in ("xpu_util", "cpu", "memory", "power_w")} == {"jetson"}
    info = collector.probes[0].static_info()
    assert info["soc"] == "orin-nano" and info["l4t"].startswith("R36")


def test_jetson_tegrastats_only_agx_jp5(tmp_path: Path, collect: Any) -> None:
    root = jetson_root(tmp_path, line="jetson/tegrastats_agx_orin_jp5.txt", sysfs=False)
    sample, _, _ = collect(ProbeEnv(root))
    assert sample.xpu_util == 0.0  # GR3D_FREQ 0%
    assert sample.temperature_c == 44.343  # GPU@-256C dropped: tj is the next best
    assert sample.power_w == pytest.approx(7.056)  # no VDD_IN on AGX: sum of rails, NC skipped
    assert sample.xpu_mem_total_mb == 62801.0


def test_nvidia_smi_fallback(tmp_path: Path, collect: Any) -> None:
    sample, sources, collector = collect(ProbeEnv(nvidia_root(tmp_path)))
    probe = collector.probes[0]
    assert isinstance(probe, NvidiaProbe) and probe.backend == "nvidia-smi"
    assert sample.xpu_util == 0.0 and sample.per_unit == (0.0,)
    assert (sample.xpu_mem_used_mb, sample.xpu_mem_total_mb) == (0.0, 15360.0)
    assert (sample.temperature_c, sample.power_w) == (34.0, 27.64)
    assert sources["power_w"] == "nvidia"
    assert probe.static_info()["gpus"] == ["Tesla T4"]


# --- NVML, with a fake module (nvidia-ml-py is optional and not installed here) -------------


class FakeNvmlError(Exception):
    pass


def fake_nvml(fail_init: bool = False) -> SimpleNamespace:
    def not_supported(handle: int) -> Any:
        raise FakeNvmlError("Not Supported")

    def init() -> None:
        if fail_init:
            raise FakeNvmlError("Driver Not Loaded")

    return SimpleNamespace(
        NVMLError=FakeNvmlError,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"Tesla T4" if h == 0 else "NVIDIA A100",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=50 + 40 * h, memory=10),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=2**30, total=16 * 2**30),
        nvmlDeviceGetTemperature=lambda h, kind: 60 + h,
        nvmlDeviceGetPowerUsage=lambda h: 70000 if h == 0 else not_supported(h),
    )


def test_nvml_backend_with_fake_module(tmp_path: Path) -> None:
    probe = NvidiaProbe(ProbeEnv(base_root(tmp_path)), nvml_module=fake_nvml())
    assert probe.backend == "nvml" and probe.min_interval_s == 0.5
    sample = probe.sample()
    assert sample.per_unit == (0.5, 0.9) and sample.xpu_util == pytest.approx(0.7)
    assert (sample.xpu_mem_used_mb, sample.xpu_mem_total_mb) == (2048.0, 32768.0)
    assert (sample.temperature_c, sample.power_w) == (61.0, 70.0)  # mW → W; unsupported → None
    assert probe.static_info()["gpus"] == ["Tesla T4", "NVIDIA A100"]
    probe.close()


def test_nvml_failure_falls_back_to_nvidia_smi(tmp_path: Path) -> None:
    env = ProbeEnv(nvidia_root(tmp_path))
    probe = NvidiaProbe(env, nvml_module=fake_nvml(fail_init=True))
    sample = probe.sample()
    assert probe.backend == "nvidia-smi" and probe.min_interval_s == 2.0
    assert sample.power_w == 27.64 and "NVML unusable" in (probe.degraded_reason or "")


def test_nvml_is_never_chosen_on_tegra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvidia_module, "nvml_available", lambda: True)
    env = ProbeEnv(jetson_root(tmp_path))
    assert not NvidiaProbe.detect(env)
    assert NvidiaProbe(env).backend == "nvidia-smi"


# --- slow and hanging npu-smi -----------------------------------------------------------------


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_hanging_npu_smi_does_not_stall_latest(tmp_path: Path) -> None:
    root = base_root(tmp_path)
    script(root, "npu-smi", "sleep 30\n")
    env = ProbeEnv(root)
    ascend = AscendProbe(env, timeout_s=5.0)
    collector = ProbeCollector([ascend, GenericProbe(env)], timeout_s=0.2)
    try:
        collector.start()
        wait_for(lambda: collector.states()["ascend"].degraded)
        sample, sources = collector.latest()
        state = collector.states()["ascend"]
        # latest() answered while npu-smi was still running, with what it had
        assert state.in_flight_s is not None and state.in_flight_s > 0.2
        assert "running for more than" in (state.reason or "")
        assert sample.xpu_util is None and "xpu_util" not in sources
        wait_for(lambda: collector.states()["generic"].ok > 0)
        assert collector.latest()[1]["cpu"] == "generic"
    finally:
        collector.close(wait_s=0.1)
        env.close()  # kills the sleeping npu-smi: its worker thread ends
    wait_for(lambda: collector.states()["ascend"].in_flight_s is None)
    assert collector.states()["ascend"].failures == 1


def test_hang_after_a_good_call_keeps_the_cached_sample(tmp_path: Path) -> None:
    root = base_root(tmp_path)
    marker = tmp_path / "called-once"
    script(
        root,
        "npu-smi",
        f"if [ -e '{marker}' ]; then sleep 30; fi\n: > '{marker}'\n"
        + cat("ascend/npu_smi_info_310p3_duo.txt")
        + "\n",
    )
    env = ProbeEnv(root)
    ascend = AscendProbe(env, timeout_s=5.0)
    ascend.min_interval_s = 0.05
    collector = ProbeCollector([ascend], timeout_s=0.2, tick_s=0.02)
    try:
        collector.start()
        wait_for(lambda: collector.states()["ascend"].ok == 1)
        wait_for(lambda: collector.states()["ascend"].degraded)
        sample, sources = collector.latest()
        state = collector.states()["ascend"]
        assert state.in_flight_s is not None and state.age_s is not None
        assert sample.xpu_mem_total_mb == 87973.0 and sources["xpu_mem_total_mb"] == "ascend"
    finally:
        collector.close(wait_s=0.1)
        env.close()


def test_npu_smi_calls_never_overlap(tmp_path: Path) -> None:
    root = base_root(tmp_path)
    busy, log = tmp_path / "busy", tmp_path / "overlaps"
    script(
        root,
        "npu-smi",
        f"if [ -e '{busy}' ]; then echo overlap >> '{log}'; fi\n: > '{busy}'\nsleep 0.1\n"
        f"rm -f '{busy}'\n" + cat("ascend/npu_smi_info_310_old.txt") + "\n",
    )
    env = ProbeEnv(root)
    probes = [AscendProbe(env), AscendProbe(env)]  # e.g. two collectors in one agent
    errors: list[BaseException] = []

    def hammer(probe: AscendProbe) -> None:
        try:
            for _ in range(3):
                assert probe.sample().xpu_mem_total_mb == 8192.0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(p,)) for p in probes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert not log.exists()


def test_a_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    root = base_root(tmp_path)
    script(root, "slow", "sleep 30\necho never\n")
    env = ProbeEnv(root)
    started = time.monotonic()
    with pytest.raises(ProbeTimeout, match="no answer within"):
        env.run(["slow"], timeout=0.3)
    # the grandchild 'sleep' was killed too: otherwise the pipe stays open for 30 s
    assert time.monotonic() - started < 25


# --- the command --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "builder", "field", "value"),
    [
        ("ascend", ascend_root, "xpu_mem_total_mb", 87973.0),
        ("rknpu", rk3588_root, "xpu_util", 0.64),
        ("jetson", jetson_root, "xpu_util", 0.613),
        ("nvidia", nvidia_root, "power_w", 27.64),
    ],
)
def test_probe_command_with_sysroot(
    tmp_path: Path, family: str, builder: Any, field: str, value: float
) -> None:
    report = run_cli("--sysroot", str(builder(tmp_path)))
    assert report["chain"] == [family, "generic"]
    assert report["metrics"][field] == pytest.approx(value)
    assert report["sources"][field] == family
    assert report["sources"]["cpu"] in (family, "generic")
    assert report["probes"][family]["state"]["ok"] >= 1


def test_probe_command_on_this_machine_names_the_generic_probe() -> None:
    report = run_cli()
    assert report["chain"][-1] == "generic"
    assert report["sources"]["memory"] in report["chain"]
    if report["chain"] != ["generic"]:
        pytest.skip(f"an accelerator was detected here: {report['chain']}")
    assert report["sysroot"] is None
    assert set(report["sources"]) == {"cpu", "memory"}
    assert set(report["sources"].values()) == {"generic"}
    assert 0.0 <= report["metrics"]["memory"] <= 1.0
    assert report["metrics"]["xpu_util"] is None


def test_probe_command_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(probe_command, ["--sysroot", str(rk3588_root(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "probe chain: rknpu, generic" in result.stdout
    assert "xpu_util" in result.stdout and "rknpu: ok (soc rk3588)" in result.stdout


def test_a_closed_env_starts_no_child(tmp_path: Path) -> None:
    root = base_root(tmp_path)
    script(root, "npu-smi", cat("ascend/npu_smi_info_310_old.txt") + "\n")
    env = ProbeEnv(root)
    assert "310" in env.run(["npu-smi", "info"], timeout=5.0)
    env.close()  # shutdown racing with a poll must not leave an orphan behind
    with pytest.raises(ProbeError, match="environment closed"):
        env.run(["npu-smi", "info"], timeout=5.0)


def test_rk3588_unparsable_load_falls_back_to_devfreq(tmp_path: Path, collect: Any) -> None:
    env = ProbeEnv(rk3588_root(tmp_path, load="rknpu/broken_load_truncated.txt"))
    sample, _, collector = collect(env)
    assert sample.xpu_util == pytest.approx(0.37) and sample.per_unit is None
    assert "unrecognised" in (collector.states()["rknpu"].reason or "")
