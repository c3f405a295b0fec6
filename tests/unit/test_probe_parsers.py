"""The device-output parsers against the devices.md samples (byte for byte) and broken variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesched.agent.probes.base import Sample, fraction, merge_samples
from edgesched.agent.probes.jetson import ina3221_total_w, jetson_soc, parse_gpu_load
from edgesched.agent.probes.npu_smi import (
    parse_npu_smi_common,
    parse_npu_smi_info,
    parse_npu_smi_kv,
    parse_npu_smi_usages,
    parse_npu_smi_watch,
    soc_version,
)
from edgesched.agent.probes.nvidia import parse_nvidia_smi_csv
from edgesched.agent.probes.rknpu import parse_devfreq_load, parse_driver_version, parse_rknpu_load
from edgesched.agent.probes.sysfs import parse_meminfo, parse_millidegrees
from edgesched.agent.probes.tegrastats import parse_tegrastats

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "devices"
REPO = Path(__file__).resolve().parents[2]


def fixture(rel: str) -> str:
    return (FIXTURES / rel).read_text(encoding="utf-8")


def _devices_md() -> Path | None:
    for candidate in (
        REPO / "shared" / "reference" / "devices.md",
        REPO.parent / "shared" / "reference" / "devices.md",
    ):
        if candidate.is_file():
            return candidate
    return None


# --- the fixtures are the reference's samples, byte for byte ---------------------------------


def test_fixtures_are_verbatim_copies_of_devices_md() -> None:
    reference = _devices_md()
    if reference is None:
        pytest.skip("shared/reference/devices.md is not beside this checkout")
    text = reference.read_bytes()
    copies = [p for p in FIXTURES.rglob("*.txt") if not p.name.startswith("broken_")]
    assert len(copies) >= 30
    for path in copies:
        # one-line samples are inline in the prose: the file adds the final newline
        sample = path.read_bytes().removesuffix(b"\n")
        assert sample in text, f"{path.name} is not a verbatim sample of devices.md"


# --- Ascend: npu-smi info table (fixtures A, B, C) -------------------------------------------


def test_npu_smi_info_old_driver_310() -> None:
    info = parse_npu_smi_info(fixture("ascend/npu_smi_info_310_old.txt"))
    assert info.version == "21.0.3.1"
    (chip,) = info.chips
    assert (chip.npu_id, chip.chip_id, chip.device_id) == (0, 0, 0)
    assert (chip.name, chip.health, chip.bus_id) == ("310", "OK", None)  # Bus-Id "NA"
    assert (chip.power_w, chip.temp_c, chip.aicore_pct) == (12.8, 58.0, 0.0)
    assert (chip.mem_used_mb, chip.mem_total_mb) == (5324.0, 8192.0)
    assert chip.hugepages_total is None
    assert soc_version(chip.name) == "Ascend310"


def test_npu_smi_info_new_driver_stops_at_process_section() -> None:
    info = parse_npu_smi_info(fixture("ascend/npu_smi_info_310_new.txt"))
    assert info.version == "23.0.0"
    (chip,) = info.chips
    assert chip.bus_id == "0000:01:00.0"
    assert (chip.power_w, chip.temp_c) == (12.8, 61.0)
    assert (chip.hugepages_used, chip.hugepages_total) == (0.0, 969.0)
    assert (chip.mem_used_mb, chip.mem_total_mb) == (577.0, 7759.0)


def test_npu_smi_info_300i_duo_two_chips_power_na() -> None:
    info = parse_npu_smi_info(fixture("ascend/npu_smi_info_310p3_duo.txt"))
    assert info.version == "25.2.0"
    assert [(c.npu_id, c.chip_id) for c in info.chips] == [(2, 0), (2, 1)]
    assert [c.power_w for c in info.chips] == [None, None]
    assert [c.temp_c for c in info.chips] == [45.0, 43.0]
    assert [(c.mem_used_mb, c.mem_total_mb) for c in info.chips] == [
        (1529.0, 44280.0),
        (1412.0, 43693.0),
    ]
    assert soc_version(info.chips[0].name) == "Ascend310P3"


def test_npu_smi_info_910_takes_the_last_memory_pair() -> None:
    (chip,) = parse_npu_smi_info(fixture("ascend/broken_npu_smi_info_910_hbm.txt")).chips
    assert (chip.mem_used_mb, chip.mem_total_mb) == (3416.0, 65536.0)
    assert chip.aicore_pct == 7.0


def test_npu_smi_info_truncated_keeps_whole_pairs_only() -> None:
    info = parse_npu_smi_info(fixture("ascend/broken_npu_smi_info_truncated.txt"))
    assert [c.chip_id for c in info.chips] == [0]


def test_npu_smi_info_error_text_and_na_values() -> None:
    assert parse_npu_smi_info(fixture("ascend/broken_npu_smi_info_error.txt")).chips == ()
    assert parse_npu_smi_info("").chips == ()
    (chip,) = parse_npu_smi_info(fixture("ascend/broken_npu_smi_info_na_values.txt")).chips
    assert chip.health == "Warning"
    assert (chip.power_w, chip.temp_c, chip.aicore_pct) == (None, None, None)
    assert (chip.mem_used_mb, chip.mem_total_mb) == (None, None)


# --- Ascend: -t usages / -t common / watch (fixtures D, E, F, G) ----------------------------


def test_npu_smi_usages_310b_ddr() -> None:
    (rec,) = parse_npu_smi_usages(fixture("ascend/npu_smi_usages_310b.txt"))
    assert (rec.npu_id, rec.chip_id) == (0, 0)
    assert (rec.memory_capacity_mb, rec.memory_usage_pct) == (10810.0, 35.0)
    assert rec.memory_used_mb == 3783.0  # 10810 × 35 / 100, integer MB
    assert (rec.aicore_pct, rec.aicpu_pct, rec.ctrlcpu_pct) == (0.0, 0.0, 1.0)


def test_npu_smi_usages_chip_id_after_values_and_hbm() -> None:
    (rec,) = parse_npu_smi_usages(fixture("ascend/npu_smi_usages_newer.txt"))
    assert (rec.npu_id, rec.chip_id) == (0, 0)
    # DDR reads 0 MB on an HBM part: the HBM figures are the device memory
    assert (rec.memory_capacity_mb, rec.memory_usage_pct) == (65536.0, 3.0)
    assert rec.memory_used_mb == 1966.0
    assert (rec.aicore_pct, rec.aivector_pct, rec.ctrlcpu_pct) == (0.0, 0.0, 2.0)


def test_npu_smi_common_keeps_mcu_and_rated_power_apart() -> None:
    chip, mcu = parse_npu_smi_common(fixture("ascend/npu_smi_common_310b.txt"))
    assert (chip.chip_id, chip.memory_usage_pct, chip.temperature_c) == (0, 44.0, 38.0)
    assert chip.power_w is None and chip.rated_power_w == 4.0
    assert mcu.is_mcu and not chip.is_mcu
    assert (mcu.temperature_c, mcu.power_w) == (36.0, 13.3)


def test_npu_smi_usages_na_values_and_noise() -> None:
    (rec,) = parse_npu_smi_usages(fixture("ascend/broken_npu_smi_usages_na.txt"))
    assert rec.chip_id == 0
    assert (rec.memory_capacity_mb, rec.memory_usage_pct, rec.memory_used_mb) == (None,) * 3
    assert (rec.aicore_pct, rec.ctrlcpu_pct) == (None, None)
    assert parse_npu_smi_usages("") == []


def test_npu_smi_kv_aliases() -> None:
    text = (
        "NPU ID : 1\n\nChip ID : 0\nAI Core Usage Rate(%) : 17\nNPU Utilization(%) : 20\n"
        "DDR Capacity(MB) : 1000\nDDR Usage Rate(%) : 50\nNPU Temperature(C) : 51\n"
        "NPU Real-time Power(W) : 8.5\n\nChip ID : 1\nAICore Usage Rate(%) : 3\n"
    )
    first, second = parse_npu_smi_kv(text)
    assert (first.npu_id, first.aicore_pct, first.npu_util_pct) == (1, 17.0, 20.0)
    assert (first.memory_used_mb, first.temperature_c, first.power_w) == (500.0, 51.0, 8.5)
    assert (second.npu_id, second.chip_id, second.aicore_pct) == (1, 1, 3.0)


def test_npu_smi_watch_rows() -> None:
    (row,) = parse_npu_smi_watch(fixture("ascend/npu_smi_watch.txt"))
    assert (row.npu_id, row.chip_id, row.power_w, row.temp_c) == (0, 0, 13.4, 45.0)
    assert (row.aicore_pct, row.memory_pct, row.memory_bw_pct) == (0.0, 3.0, 0.0)


def test_npu_smi_watch_repeated_header_and_short_row() -> None:
    rows = parse_npu_smi_watch(fixture("ascend/broken_npu_smi_watch_refresh.txt"))
    assert [(r.power_w, r.aicore_pct) for r in rows] == [(13.4, 0.0), (13.9, 12.0)]


def test_soc_version() -> None:
    assert soc_version("310B4") == "Ascend310B4"
    assert soc_version("Ascend310B1") == "Ascend310B1"
    assert soc_version("NA") is None


# --- RK3588 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cores", "util"),
    [
        ("load_idle", (0.0, 0.0, 0.0), 0.0),
        ("load_busy", (63.0, 65.0, 64.0), 64.0),
        ("load_partial", (21.0, 11.0, 0.0), 32.0 / 3),
        ("load_blank", (0.0, 25.0, 0.0), 25.0 / 3),  # "%2.d" prints nothing for a zero
        ("load_garbage", (99.0, 99.0, None), None),  # 429496%: rejected, not clamped
        ("load_single_core", (0.0,), 0.0),
        ("broken_load_20000", (None, 0.0, 0.0), None),
        ("broken_load_old_format", (100.0, 98.0, 100.0), pytest.approx(99.333, abs=1e-3)),
        ("broken_load_empty", (), None),
        ("broken_load_truncated", (), None),
    ],
)
def test_rknpu_load(name: str, cores: tuple[float | None, ...], util: float | None) -> None:
    load = parse_rknpu_load(fixture(f"rknpu/{name}.txt"))
    assert load.cores == cores
    assert load.util_pct == (pytest.approx(util) if isinstance(util, float) else util)
    assert load.valid == (util is not None)


def test_rknpu_load_all_lines_one_by_one() -> None:
    lines = fixture("rknpu/load_all.txt").splitlines()
    assert [parse_rknpu_load(line).valid for line in lines] == [True] * 4 + [False, True]


def test_rknpu_devfreq_and_version() -> None:
    assert parse_devfreq_load(fixture("rknpu/devfreq_load.txt")) == (37.0, 1_000_000_000)
    assert parse_devfreq_load(fixture("rknpu/broken_devfreq_load.txt")) == (None, 1_000_000_000)
    assert parse_devfreq_load("nonsense") == (None, None)
    assert parse_driver_version("RKNPU driver: v0.9.8\n") == "0.9.8"
    assert parse_driver_version("") is None


# --- Jetson: tegrastats ------------------------------------------------------------------------

TEGRASTATS = {
    # name: (timestamp?, ram used/total, gr3d %, GPCs MHz, gpu temp, tj temp, power W, cores)
    "orin_nano_jp6": (True, (2272, 7620), 0.0, (), 55.468, 56.656, 4.673, 6),
    "orin_nano_jp6_sudo": (True, (1343, 7620), 0.0, (305,), 49.625, 49.312, 5.251, 6),
    "orin_nx_jp62": (False, (1224, 15368), 0.0, (305,), 42.5, 43.5, 4.319, 8),
    "agx_orin_jp6": (True, (18207, 62841), 0.0, (0, 0), None, 52.562, 8.726, 12),
    "agx_orin_jp5": (True, (4321, 62801), 0.0, (0, 0), None, 44.343, 7.056, 12),
    "orin_jp51_no_mw": (False, (3347, 7467), 61.0, (), 49.2, None, 5.336, 6),
    "xavier_nx_jp512": (True, (3168, 6851), 0.0, (114,), 45.5, None, 2.763, 6),
    "tx2_jp4": (False, (1685, 7854), 36.0, (140,), 39.0, None, 1.776, 6),
}


@pytest.mark.parametrize("name", sorted(TEGRASTATS))
def test_tegrastats_lines(name: str) -> None:
    has_ts, ram, gr3d, freqs, gpu, tj, power, cores = TEGRASTATS[name]
    (line,) = fixture(f"jetson/tegrastats_{name}.txt").splitlines()
    stats = parse_tegrastats(line)
    assert stats.is_sample
    assert (stats.timestamp is not None) == has_ts
    assert (stats.ram_used_mb, stats.ram_total_mb) == ram
    assert stats.gr3d_pct == gr3d
    assert stats.gr3d_freqs_mhz == freqs
    assert stats.temp("gpu") == gpu
    assert stats.temp("tj") == tj
    assert stats.power_w == pytest.approx(power)
    assert len(stats.cpu_pcts) == cores


def test_tegrastats_quirks() -> None:
    nx = parse_tegrastats(fixture("jetson/tegrastats_orin_nx_jp62.txt"))
    assert nx.cpu_pcts[4:] == (None,) * 4  # offline cores
    assert nx.cpu_util == pytest.approx(0.0025)
    assert nx.absent_sensors == ("CV0",) and "CV0" not in nx.temps_c  # -256C dropped
    agx5 = parse_tegrastats(fixture("jetson/tegrastats_agx_orin_jp5.txt"))
    assert set(agx5.absent_sensors) == {"CV0", "CV1", "CV2", "GPU"}
    assert "NC" in agx5.rails  # the placeholder is parsed, and left out of the total
    no_mw = parse_tegrastats(fixture("jetson/tegrastats_orin_jp51_no_mw.txt"))
    assert no_mw.rails["VDD_IN"].current_mw == 5336.0
    assert no_mw.rails["VDD_IN"].average_mw == 4970.0
    assert "RAM" not in no_mw.rails and "SWAP" not in no_mw.rails
    sudo = parse_tegrastats(fixture("jetson/tegrastats_orin_nano_jp6_sudo.txt"))
    assert sudo.emc_pct == 15.0
    assert sudo.swap_used_mb == 165 and sudo.swap_total_mb == 3810


def test_tegrastats_whole_block_and_broken_lines() -> None:
    lines = fixture("jetson/tegrastats_all.txt").splitlines()
    samples = [parse_tegrastats(line) for line in lines]
    assert sum(s.is_sample for s in samples) == 8  # the "# ..." lines are not samples
    cut = parse_tegrastats(fixture("jetson/broken_tegrastats_truncated.txt"))
    assert cut.is_sample and list(cut.rails) == ["VDD_IN"]
    for line in fixture("jetson/broken_tegrastats_noise.txt").splitlines():
        noise = parse_tegrastats(line)
        assert not noise.is_sample
        assert noise.gr3d_pct is None and noise.temps_c == {} and noise.power_w is None


def test_jetson_sysfs_values() -> None:
    assert parse_gpu_load("613\n") == pytest.approx(0.613)  # per-mille
    assert parse_gpu_load("1000") == 1.0
    assert parse_gpu_load("1001") is None
    assert parse_gpu_load("") is None
    assert ina3221_total_w([("VDD_CPU_GPU_CV", 500.0), ("VDD_IN", 4670.0)]) == 4.67
    assert ina3221_total_w([("VDD_GPU_SOC", 2000.0), ("NC", 0.0), ("VDD_CPU_CV", 500.0)]) == 2.5
    assert ina3221_total_w([]) is None
    assert jetson_soc("NVIDIA Jetson Orin Nano Developer Kit") == "orin-nano"
    assert jetson_soc("NVIDIA Jetson AGX Orin Developer Kit") == "agx-orin"


# --- NVIDIA: nvidia-smi CSV ----------------------------------------------------------------------


def test_nvidia_csv_header_with_units() -> None:
    rows = parse_nvidia_smi_csv(fixture("nvidia/csv_header_units.txt"))
    assert [r.index for r in rows] == [0, 1]
    assert rows[0].name == "NVIDIA GeForce RTX 3090"
    assert [r.util_gpu_pct for r in rows] == [98.0, 45.0]
    assert [(r.mem_used_mb, r.mem_total_mb) for r in rows] == [(22000, 24576), (8000, 24576)]
    assert [r.temp_c for r in rows] == [65.0, 52.0]
    assert rows[0].power_w is None  # not queried


def test_nvidia_csv_header_with_power() -> None:
    (row,) = parse_nvidia_smi_csv(fixture("nvidia/csv_header_power.txt"))
    assert (row.util_gpu_pct, row.mem_used_mb, row.mem_total_mb) == (95.0, 7650.0, 8188.0)
    assert (row.temp_c, row.power_w) == (73.0, 81.25)
    assert row.raw["timestamp"] == "2026/08/17 10:00:00.000"


def test_nvidia_csv_noheader_nounits() -> None:
    (row,) = parse_nvidia_smi_csv(fixture("nvidia/csv_noheader_t4.txt"))
    assert (row.index, row.name, row.uuid) == (
        0,
        "Tesla T4",
        "GPU-e18afb8d-1627-f8ff-2ba3-c05c5a8e9e67",
    )
    assert (row.util_gpu_pct, row.mem_used_mb, row.mem_total_mb) == (0.0, 0.0, 15360.0)
    assert (row.temp_c, row.power_w) == (34.0, 27.64)


def test_nvidia_csv_na_and_not_supported() -> None:
    fields = (
        "index",
        "name",
        "utilization.gpu",
        "utilization.memory",
        "memory.used",
        "memory.total",
        "temperature.gpu",
        "power.draw",
    )
    (row,) = parse_nvidia_smi_csv(fixture("nvidia/csv_noheader_quadro_na.txt"), fields)
    assert (row.name, row.util_gpu_pct, row.util_mem_pct) == ("Quadro P2000", 10.0, None)
    assert (row.mem_used_mb, row.mem_total_mb, row.temp_c) == (3191.0, 5120.0, 45.0)
    assert row.power_w is None  # [Not Supported]
    (orin,) = parse_nvidia_smi_csv(fixture("nvidia/csv_noheader_jetson_orin.txt"), fields[:7])
    assert orin.is_tegra and not row.is_tegra
    assert (orin.util_gpu_pct, orin.mem_used_mb, orin.temp_c) == (None, None, None)


def test_nvidia_csv_broken() -> None:
    (lost,) = parse_nvidia_smi_csv(fixture("nvidia/broken_csv_gpu_lost.txt"))
    assert lost.name == "Tesla T4"
    assert (lost.util_gpu_pct, lost.mem_used_mb, lost.power_w) == (None, None, None)
    (short,) = parse_nvidia_smi_csv(fixture("nvidia/broken_csv_short_row.txt"))
    assert (short.util_gpu_pct, short.mem_total_mb) == (12.0, None)
    assert parse_nvidia_smi_csv(fixture("nvidia/broken_csv_driver_error.txt")) == []
    good, bad = parse_nvidia_smi_csv(fixture("nvidia/broken_csv_unknown_units.txt"))
    assert (good.util_gpu_pct, good.mem_used_mb, good.power_w) == (7.0, 1024.0, 30.1)
    assert (bad.util_gpu_pct, bad.util_mem_pct, bad.mem_used_mb) == (None, None, None)
    assert (bad.mem_total_mb, bad.temp_c, bad.power_w) == (15360.0, None, None)


# --- shared helpers ---------------------------------------------------------------------------


def test_sysfs_helpers() -> None:
    assert parse_millidegrees("45230\n") == 45.23
    assert parse_millidegrees("-256000") is None
    assert parse_millidegrees("junk") is None
    info = parse_meminfo("MemTotal:       16123456 kB\nMemAvailable:    8000000 kB\n")
    assert info == {"MemTotal": 16123456, "MemAvailable": 8000000}


def test_fraction_rejects_garbage() -> None:
    assert fraction(50.0) == 0.5
    assert fraction(429496.0) is None
    assert fraction(-1.0) is None
    assert fraction(613.0, scale=1000.0) == 0.613
    assert fraction(None) is None


def test_merge_first_non_none_wins() -> None:
    npu = Sample(xpu_util=0.5, temperature_c=None, source="ascend")
    host = Sample(cpu=0.25, memory=0.5, temperature_c=40.0, source="generic")
    merged, origins = merge_samples([npu, host])
    assert (merged.xpu_util, merged.cpu, merged.temperature_c) == (0.5, 0.25, 40.0)
    assert origins == {
        "xpu_util": "ascend",
        "cpu": "generic",
        "memory": "generic",
        "temperature_c": "generic",
    }
    assert merged.source == "ascend+generic"
    assert merge_samples([])[0].is_empty()
