"""Settings: defaults < edgesched.toml < environment < flags, strict keys, coercion, validation."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesched.config import (
    BUNDLED_LAYOUT,
    CONFIG_FILE,
    Settings,
    TaskTypeSettings,
    load_settings,
    render_toml,
    validate,
)
from edgesched.errors import ConfigError


def write_config(directory: Path, text: str) -> Path:
    (directory / CONFIG_FILE).write_text(text, encoding="utf-8")
    return directory


# ---- defaults and precedence ----------------------------------------------------------------


def test_without_any_source_the_settings_are_the_defaults():
    loaded = load_settings(env={})
    assert loaded == Settings()
    assert loaded.master.port == 9999
    assert loaded.master.http_port == 6666
    assert loaded.scheduling.strategy == "load"
    assert loaded.scheduling.heartbeat_interval_s == 2.0
    assert loaded.scheduling.suspect_after_beats == 3
    assert loaded.scheduling.dead_grace_s == 30.0
    assert loaded.agent.master_port == 6666
    assert set(loaded.tasktypes) == {"layout", "echo"}
    assert loaded.tasktypes["echo"].raw and not loaded.tasktypes["layout"].raw
    assert loaded.tasktypes["layout"].model == BUNDLED_LAYOUT


def test_the_default_load_weights_are_the_seeds():
    s = Settings().scheduling
    assert (s.weight_cpu, s.weight_memory, s.weight_xpu) == (0.3, 0.1, 0.4)


def test_a_config_directory_without_a_file_gives_the_defaults(tmp_path):
    assert load_settings(tmp_path, env={}) == Settings()


def test_a_config_directory_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing", env={})


def test_the_file_overrides_the_defaults(tmp_path):
    write_config(tmp_path, '[master]\nport = 7000\nbind = "127.0.0.1"\n')
    loaded = load_settings(tmp_path, env={})
    assert loaded.master.port == 7000
    assert loaded.master.bind == "127.0.0.1"
    assert loaded.master.http_port == 6666


def test_the_environment_overrides_the_file(tmp_path):
    write_config(tmp_path, "[master]\nport = 7000\nhttp_port = 7001\n")
    loaded = load_settings(tmp_path, env={"EDGESCHED_MASTER_PORT": "8000"})
    assert loaded.master.port == 8000
    assert loaded.master.http_port == 7001


def test_flags_override_the_environment_and_the_file(tmp_path):
    write_config(tmp_path, "[master]\nport = 7000\n")
    loaded = load_settings(
        tmp_path,
        env={"EDGESCHED_MASTER_PORT": "8000"},
        overrides={"master": {"port": 0}},
    )
    assert loaded.master.port == 0


def test_a_flag_left_as_none_does_not_override(tmp_path):
    write_config(tmp_path, "[master]\nport = 7000\n")
    loaded = load_settings(tmp_path, env={}, overrides={"master": {"port": None}})
    assert loaded.master.port == 7000


def test_flag_keys_may_be_spelled_with_dashes():
    loaded = load_settings(env={}, overrides={"master": {"http-port": 0}})
    assert loaded.master.http_port == 0


def test_environment_keys_name_the_section_and_the_key():
    loaded = load_settings(
        env={
            "EDGESCHED_MASTER_HTTP_PORT": "7777",
            "EDGESCHED_SCHEDULING_WEIGHT_CPU": "0.25",
            "EDGESCHED_SCHEDULING_STRATEGY": "roundrobin",
            "EDGESCHED_AGENT_MASTER_IP": "10.0.0.1",
            "EDGESCHED_CLIENT_WORKERS": "3",
        }
    )
    assert loaded.master.http_port == 7777
    assert loaded.scheduling.weight_cpu == 0.25
    assert loaded.scheduling.strategy == "roundrobin"
    assert loaded.agent.master_ip == "10.0.0.1"
    assert loaded.client.workers == 3


def test_edgesched_token_sets_the_agents_join_token():
    assert load_settings(env={"EDGESCHED_TOKEN": "s3cret"}).agent.token == "s3cret"


def test_the_token_can_also_be_set_as_an_agent_key(tmp_path):
    write_config(tmp_path, '[agent]\ntoken = "from-file"\n')
    assert load_settings(tmp_path, env={}).agent.token == "from-file"
    loaded = load_settings(tmp_path, env={"EDGESCHED_TOKEN": "from-env"})
    assert loaded.agent.token == "from-env"


def test_variables_without_the_prefix_are_ignored():
    assert load_settings(env={"MASTER_PORT": "1", "PATH": "/bin"}) == Settings()


def test_an_explicit_empty_environment_does_not_read_the_process_environment(monkeypatch):
    monkeypatch.setenv("EDGESCHED_MASTER_PORT", "1234")
    assert load_settings(env={}).master.port == 9999
    assert load_settings().master.port == 1234


# ---- unknown keys and sections --------------------------------------------------------------


def test_an_unknown_key_in_the_file_is_an_error_naming_it(tmp_path):
    write_config(tmp_path, "[master]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key master\.prot") as info:
        load_settings(tmp_path, env={})
    assert "port" in str(info.value)  # the known keys are listed


def test_an_unknown_section_in_the_file_is_an_error_naming_it(tmp_path):
    write_config(tmp_path, "[masters]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[masters\]"):
        load_settings(tmp_path, env={})


def test_a_section_that_is_not_a_table_is_an_error(tmp_path):
    write_config(tmp_path, "master = 3\n")
    with pytest.raises(ConfigError, match=r"\[master\] must be a table"):
        load_settings(tmp_path, env={})


def test_an_unknown_flag_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"unknown key agent\.colour"):
        load_settings(env={}, overrides={"agent": {"colour": "red"}})


def test_an_unknown_flag_section_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="gateway"):
        load_settings(env={}, overrides={"gateway": {"port": 1}})


def test_an_unknown_key_in_the_environment_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="EDGESCHED_MASTER_PROT"):
        load_settings(env={"EDGESCHED_MASTER_PROT": "1"})


def test_a_file_that_is_not_toml_is_an_error_naming_the_file(tmp_path):
    write_config(tmp_path, "[master\nport = = 1\n")
    with pytest.raises(ConfigError, match=CONFIG_FILE):
        load_settings(tmp_path, env={})


# ---- coercion -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "true", "True", "yes", "on", " ON "])
def test_true_spellings_in_the_environment(text):
    assert load_settings(env={"EDGESCHED_MASTER_KEEP_UPLOAD": text}).master.keep_upload is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", ""])
def test_false_spellings_in_the_environment(text):
    loaded = load_settings(env={"EDGESCHED_MASTER_KEEP_UPLOAD": text})
    assert loaded.master.keep_upload is False


def test_a_bool_that_is_not_a_bool_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"master\.keep_upload"):
        load_settings(env={"EDGESCHED_MASTER_KEEP_UPLOAD": "maybe"})


def test_a_toml_bool_stays_a_bool(tmp_path):
    write_config(tmp_path, "[master]\nkeep_upload = true\n")
    assert load_settings(tmp_path, env={}).master.keep_upload is True


def test_integers_and_floats_are_coerced_to_the_fields_type(tmp_path):
    write_config(tmp_path, "[scheduling]\nheartbeat_interval_s = 1\nmax_attempts = 5\n")
    loaded = load_settings(tmp_path, env={"EDGESCHED_SCHEDULING_DEAD_GRACE_S": "12.5"}).scheduling
    assert loaded.heartbeat_interval_s == 1.0
    assert isinstance(loaded.heartbeat_interval_s, float)
    assert loaded.max_attempts == 5
    assert loaded.dead_grace_s == 12.5


def test_a_number_that_is_not_a_number_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"master\.port"):
        load_settings(env={"EDGESCHED_MASTER_PORT": "ninety"})
    with pytest.raises(ConfigError, match=r"scheduling\.weight_cpu"):
        load_settings(env={"EDGESCHED_SCHEDULING_WEIGHT_CPU": "heavy"})


def test_a_bool_is_not_accepted_as_an_integer(tmp_path):
    write_config(tmp_path, "[master]\nport = true\n")
    with pytest.raises(ConfigError, match=r"master\.port"):
        load_settings(tmp_path, env={})


def test_a_fractional_number_for_an_integer_key_is_refused(tmp_path):
    write_config(tmp_path, "[scheduling]\nmax_attempts = 2.5\n")
    with pytest.raises(ConfigError, match=r"scheduling\.max_attempts"):
        load_settings(tmp_path, env={})


def test_a_whole_float_for_an_integer_key_is_accepted(tmp_path):
    write_config(tmp_path, "[master]\nport = 7000.0\n")
    assert load_settings(tmp_path, env={}).master.port == 7000


def test_a_fractional_number_for_an_integer_key_in_the_environment_is_refused():
    with pytest.raises(ConfigError, match=r"scheduling\.max_attempts"):
        load_settings(env={"EDGESCHED_SCHEDULING_MAX_ATTEMPTS": "2.5"})


def test_a_number_for_a_text_key_becomes_text(tmp_path):
    write_config(tmp_path, "[agent]\ntoken = 1234\n")
    assert load_settings(tmp_path, env={}).agent.token == "1234"


# ---- task types -----------------------------------------------------------------------------


def test_task_types_are_tables_under_tasktypes(tmp_path):
    write_config(
        tmp_path,
        """
[tasktypes.ocr]
kind = "yolov8"
model = "/models/ocr.onnx"
score_threshold = 0.25
class_names = ["text", "title"]

[tasktypes.layout]
iou_threshold = 0.7
""",
    )
    tasktypes = load_settings(tmp_path, env={}).tasktypes
    assert set(tasktypes) == {"layout", "echo", "ocr"}
    assert tasktypes["ocr"] == TaskTypeSettings(
        kind="yolov8",
        model="/models/ocr.onnx",
        score_threshold=0.25,
        class_names=["text", "title"],
    )
    # a table for the default type changes only what it names
    assert tasktypes["layout"].iou_threshold == 0.7
    assert tasktypes["layout"].model == BUNDLED_LAYOUT


def test_class_names_may_be_one_comma_separated_string(tmp_path):
    write_config(tmp_path, '[tasktypes.ocr]\nkind = "yolov5"\nclass_names = "a, b,,c "\n')
    assert load_settings(tmp_path, env={}).tasktypes["ocr"].class_names == ["a", "b", "c"]


def test_an_unknown_task_type_key_is_an_error_naming_it(tmp_path):
    write_config(tmp_path, "[tasktypes.ocr]\nthreshold = 0.1\n")
    with pytest.raises(ConfigError, match=r"tasktypes\.ocr\.threshold"):
        load_settings(tmp_path, env={})


def test_tasktypes_must_be_a_table_of_tables(tmp_path):
    write_config(tmp_path, "tasktypes = 1\n")
    with pytest.raises(ConfigError, match="table of tables"):
        load_settings(tmp_path, env={})
    write_config(tmp_path, "[tasktypes]\nocr = 1\n")
    with pytest.raises(ConfigError, match=r"tasktypes\.ocr must be a table"):
        load_settings(tmp_path, env={})


def test_the_default_task_types_are_not_shared_between_settings():
    a, b = Settings(), Settings()
    a.tasktypes["ocr"] = TaskTypeSettings()
    a.tasktypes["layout"].class_names.append("x")
    assert set(b.tasktypes) == {"layout", "echo"}
    assert b.tasktypes["layout"].class_names == []


# ---- validation -----------------------------------------------------------------------------


def broken(**changes: object) -> Settings:
    s = Settings()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(s, section), key, value)
    return s


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"master__durability": "fsync"}, "durability"),
        ({"master__port": 65536}, r"master\.port"),
        ({"master__port": -1}, r"master\.port"),
        ({"master__http_port": 70000}, r"master\.http_port"),
        ({"scheduling__heartbeat_interval_s": 0.0}, "heartbeat_interval_s"),
        ({"scheduling__dead_grace_s": -1.0}, "dead_grace_s"),
        ({"scheduling__max_attempts": 0}, "max_attempts"),
        ({"master__max_upload_bytes": 0}, "max_upload_bytes"),
        ({"scheduling__network_reference_ms": 0.0}, "network_reference_ms"),
        ({"scheduling__assumed_bandwidth_mbps": 0.0}, "assumed_bandwidth_mbps"),
        ({"scheduling__heartbeat_interval_s": math.inf}, "heartbeat_interval_s"),
        ({"scheduling__weight_cpu": -0.1}, "weight_cpu"),
        ({"scheduling__weight_slots": math.nan}, "weight_slots"),
        ({"scheduling__retry_backoff_s": -1.0}, "retry_backoff_s"),
        ({"scheduling__retry_backoff_cap_s": -1.0}, "retry_backoff_cap_s"),
    ],
)
def test_validate_refuses_impossible_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(broken(**changes))


def test_validate_accepts_the_edge_values():
    validate(broken(master__port=0, master__http_port=65535, scheduling__max_attempts=1))
    validate(broken(master__durability="full"))
    validate(broken(scheduling__weight_network=0.0, scheduling__retry_backoff_s=0.0))


def test_validate_refuses_an_unknown_task_type_kind():
    s = Settings()
    s.tasktypes["x"] = TaskTypeSettings(kind="resnet")
    with pytest.raises(ConfigError, match=r"tasktypes\.x\.kind"):
        validate(s)


def test_load_settings_validates_what_it_loaded():
    with pytest.raises(ConfigError, match="durability"):
        load_settings(env={"EDGESCHED_MASTER_DURABILITY": "maybe"})


def test_validate_refuses_a_grace_that_is_not_a_number():
    with pytest.raises(ConfigError, match="dead_grace_s"):
        load_settings(env={"EDGESCHED_SCHEDULING_DEAD_GRACE_S": "nan"})


def test_validate_refuses_a_zero_network_reference_time():
    with pytest.raises(ConfigError, match="network_reference_ms"):
        load_settings(env={"EDGESCHED_SCHEDULING_NETWORK_REFERENCE_MS": "0"})


# ---- rendering ------------------------------------------------------------------------------


def customised() -> Settings:
    s = Settings()
    s.master.port = 0
    s.master.keep_upload = True
    s.master.data_dir = 'C:\\edge "data"'
    s.scheduling.strategy = "roundrobin"
    s.scheduling.weight_network = 0.125
    s.scheduling.dead_grace_s = 1e-3
    s.agent.token = "tök€n"
    s.tasktypes["ocr"] = TaskTypeSettings(
        kind="yolov8", model="/m/ocr.onnx", sha256="ab" * 32, class_names=["a", 'b"c']
    )
    return s


def test_rendered_settings_parse_back_to_the_same_values():
    s = customised()
    assert tomllib.loads(render_toml(s)) == s.as_dict()


def test_rendered_settings_load_back_to_equal_settings(tmp_path):
    s = customised()
    write_config(tmp_path, render_toml(s))
    assert load_settings(tmp_path, env={}) == s


def test_rendered_settings_name_every_section_and_task_type():
    text = render_toml(customised())
    for header in ("[master]", "[scheduling]", "[agent]", "[client]"):
        assert header in text
    assert "[tasktypes.layout]" in text
    assert "[tasktypes.ocr]" in text


#: any text a file could hold (lone surrogates cannot be written to a UTF-8 file); DEL has its
#: own test below
printable = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x7f"), max_size=30
)


@settings(max_examples=100, deadline=None)
@given(
    token=printable,
    bind=printable,
    port=st.integers(0, 65535),
    weight=st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
    keep=st.booleans(),
    names=st.lists(printable, max_size=4),
    tasktype=printable,
)
def test_any_settings_render_and_parse_back(token, bind, port, weight, keep, names, tasktype):
    s = Settings()
    s.tasktypes[tasktype] = TaskTypeSettings(model=token)
    s.agent.token = token
    s.master.bind = bind
    s.master.port = port
    s.scheduling.weight_xpu = weight
    s.master.keep_upload = keep
    s.tasktypes["layout"].class_names = names
    assert tomllib.loads(render_toml(s)) == s.as_dict()


def test_a_value_or_task_type_with_a_delete_character_renders_as_valid_toml():
    s = Settings()
    s.agent.token = "a\x7fb"
    s.tasktypes["x\x7f"] = TaskTypeSettings()
    parsed = tomllib.loads(render_toml(s))
    assert parsed["agent"]["token"] == "a\x7fb"
    assert "x\x7f" in parsed["tasktypes"]


def test_non_finite_floats_render_as_toml_inf():
    s = Settings()
    s.scheduling.dead_grace_s = math.inf
    assert tomllib.loads(render_toml(s))["scheduling"]["dead_grace_s"] == math.inf


def test_a_value_with_a_newline_renders_as_valid_toml():
    s = Settings()
    s.agent.token = "line1\nline2"
    assert tomllib.loads(render_toml(s))["agent"]["token"] == "line1\nline2"


def test_a_task_type_name_that_needs_quoting_renders_back_to_itself():
    s = Settings()
    s.tasktypes["scanned page"] = TaskTypeSettings()
    assert set(tomllib.loads(render_toml(s))["tasktypes"]) == {"layout", "echo", "scanned page"}


@pytest.mark.parametrize(
    ("bind", "auth_read", "auth", "needed"),
    [
        ("127.0.0.1", "auto", "api", False),
        ("::1", "auto", "api", False),
        ("localhost", "auto", "api", False),
        ("0.0.0.0", "auto", "api", True),
        ("::", "auto", "api", True),
        ("192.168.1.10", "auto", "api", True),
        ("0.0.0.0", "off", "api", False),
        ("127.0.0.1", "on", "api", True),
        ("127.0.0.1", "True", "api", True),  # what the --auth-read flag gives
        ("0.0.0.0", "auto", "off", False),  # auth off: no token anywhere
    ],
)
def test_reads_need_the_token_beyond_loopback_unless_configured(bind, auth_read, auth, needed):
    from edgesched.config import reads_need_token

    s = Settings()
    s.master.bind, s.master.auth_read, s.master.auth = bind, auth_read, auth
    assert reads_need_token(s.master) is needed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("EDGESCHED_MASTER_AUTH_READ", "sometimes", "auth_read must be auto, on or off"),
        ("EDGESCHED_MASTER_RESULT_PUSH_PER_DESTINATION", "0", "result_push_per_destination"),
        ("EDGESCHED_MASTER_RESULT_PUSH_TIMEOUT_S", "nan", "result_push_timeout_s"),
        ("EDGESCHED_MASTER_RESULT_PUSH_CONNECT_TIMEOUT_S", "0", "result_push_connect_timeout_s"),
        ("EDGESCHED_MASTER_MAX_REQUEST_BYTES", "10", "max_request_bytes"),
        ("EDGESCHED_CLIENT_PORT", "65599", "client.port must be in 1..65535"),
        ("EDGESCHED_AGENT_MASTER_PORT", "0", "agent.master_port must be in 1..65535"),
        ("EDGESCHED_AGENT_LINK_PORT", "70000", "agent.link_port must be in 0..65535"),
    ],
)
def test_push_body_and_port_settings_are_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env={key: value})
