"""Safe file names for whatever a client calls its picture."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesched.filenames import MAX_NAME, display_name, safe_component, safe_extension, stem

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")

#: names a hostile or careless client might send
NASTY = [
    "",
    ".",
    "..",
    "...",
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "/abs/path.jpg",
    "a/../b",
    "nul\x00byte.jpg",
    "tab\tand\nnewline\r.jpg",
    "\x1b[31mred\x1b[0m.png",
    "ｆｕｌｌ／ｗｉｄｔｈ．ｊｐｇ",
    "图片 (1).jpeg",
    "café.png",
    "\u202eevil\u202dgpj.exe",
    " spaced out ",
    "-rf",
    "_" * 300,
    "x" * 1000 + ".jpg",
]


# ---- safe_component -------------------------------------------------------------------------


@pytest.mark.parametrize("text", NASTY)
def test_safe_component_is_one_plain_non_empty_component(text):
    name = safe_component(text)
    assert name
    assert SAFE.match(name), name
    assert ".." not in name
    assert not name.startswith(".")
    assert len(name) <= MAX_NAME


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_safe_component_never_has_separators_nul_or_controls(text):
    name = safe_component(text)
    assert name
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert ".." not in name
    assert not any(unicodedata.category(ch).startswith("C") for ch in name)
    assert SAFE.match(name)
    assert name not in (".", "..")
    assert len(name) <= MAX_NAME


def test_safe_component_never_contains_a_double_dot():
    assert safe_component("a..b") == "a.b"
    assert safe_component("x/../../y") == "x_._._y"
    assert ".." not in safe_component("...a....b...")


def test_safe_component_keeps_plain_names_as_they_are():
    assert safe_component("192.168.1.7_42.jpg") == "192.168.1.7_42.jpg"
    assert safe_component("client-A") == "client-A"


def test_safe_component_replaces_runs_of_unsafe_characters_with_one_underscore():
    assert safe_component("my photo (1).jpg") == "my_photo_1_.jpg"
    assert safe_component("../../etc/passwd") == "etc_passwd"


def test_safe_component_folds_compatibility_characters_before_cleaning():
    # a full-width solidus is a slash once normalised, and is replaced like one
    assert safe_component("ａ／ｂ") == "a_b"
    assert safe_component("café") == "cafe"


def test_safe_component_falls_back_when_nothing_is_left():
    assert safe_component("") == "unknown"
    assert safe_component("../..") == "unknown"
    assert safe_component("图片", fallback="picture") == "picture"


def test_safe_component_cuts_long_names():
    assert safe_component("x" * 1000) == "x" * MAX_NAME


# ---- display_name ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("/home/me/photo.jpg", "photo.jpg"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("a/b\\c/d.png", "d.png"),
        ("图片 (1).jpeg", "图片 (1).jpeg"),
        ("nul\x00byte\n.jpg", "nulbyte.jpg"),
        ("dir/", "unnamed"),
        ("", "unnamed"),
        ("\x00\x01", "unnamed"),
    ],
)
def test_display_name_keeps_the_base_name_without_directories_or_controls(filename, expected):
    assert display_name(filename) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_display_name_never_has_separators_or_controls(filename):
    name = display_name(filename)
    assert name
    assert "/" not in name
    assert "\\" not in name
    assert not any(unicodedata.category(ch).startswith("C") for ch in name)
    assert len(name) <= 255


# ---- safe_extension and stem ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("photo.jpg", ".jpg"),
        ("PHOTO.JPG", ".jpg"),
        ("archive.tar.gz", ".gz"),
        ("dir.d/photo.png", ".png"),
        ("dir.d/photo", ""),
        ("C:\\pics\\scan.TIFF", ".tiff"),
        (".bashrc", ""),
        ("noext", ""),
        ("trailing.", ""),
        ("x.j pg", ""),
        ("x.jpé", ""),
        ("x.abcdefghij", ".abcdefghij"),
        ("x.abcdefghijk", ""),
        ("x.png\n", ".png"),
        ("x.png/../../y", ""),
    ],
)
def test_safe_extension_is_a_short_plain_lowercase_extension_or_nothing(filename, expected):
    assert safe_extension(filename) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100))
def test_safe_extension_is_always_empty_or_dot_and_ten_plain_characters(filename):
    ext = safe_extension(filename)
    assert ext == "" or re.fullmatch(r"\.[a-z0-9]{1,10}", ext)


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("a/b/photo.final.jpg", "photo.final"),
        ("photo", "photo"),
        (".bashrc", ".bashrc"),
        ("", "unnamed"),
    ],
)
def test_stem_is_the_base_name_without_its_extension(filename, expected):
    assert stem(filename) == expected
