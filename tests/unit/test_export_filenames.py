"""File names from chain metadata are hostile: the sanitiser must keep every result inside its folder."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from iq_etl.export.file_target import MAX_NAME_BYTES, extension_for, resolve_file_url, safe_filename, session_dirname

WINDOWS_FORBIDDEN = set('<>:"/\\|?*')


def _assert_harmless(name: str) -> None:
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert ".." not in name
    assert not (set(name) & WINDOWS_FORBIDDEN)
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name)
    assert not name.startswith((".", "-", " ")) and not name.endswith((".", " "))
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


@pytest.mark.parametrize("raw, expected", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "_._etc_passwd"),
    ("..\\..\\windows\\system32", "_._windows_system32"),
    ("/abs/path.txt", "_abs_path.txt"),
    ("..", "upload.bin"),
    ("...", "upload.bin"),
    ("", "upload.bin"),
    ("   ", "upload.bin"),
    (".bashrc", "bashrc"),
    ("-rf", "rf"),
    ("--help.txt", "help.txt"),
    ("name.", "name"),
    ("a\x00b\nc\td.txt", "abcd.txt"),
    ("evil\u202etxt.exe", "eviltxt.exe"),       # bidi override dropped
    ("zero\u200bwidth.png", "zerowidth.png"),
    ("CON", "_CON"),
    ("con.txt", "_con.txt"),
    ("LPT1.tar.gz", "_LPT1.tar.gz"),
    ("COM9", "_COM9"),
    ("CONSOLE.txt", "CONSOLE.txt"),
    ("a:b*c?.txt", "a_b_c_.txt"),
    ("photo..jpg", "photo.jpg"),
    ("\ud800lone.txt", "lone.txt"),           # lone surrogate cannot be written to a filesystem
    ("naïve café.txt", "naïve café.txt"),
])
def test_known_hostile_names(raw, expected):
    assert safe_filename(raw) == expected
    _assert_harmless(safe_filename(raw))


def test_empty_name_takes_extension_from_filetype():
    assert safe_filename("", "png") == "upload.png"
    assert safe_filename("", "image/png") == "upload.png"
    assert safe_filename("", ".JPG") == "upload.jpg"
    assert safe_filename("", "../../x") == "upload.bin"
    assert safe_filename(None, "text/plain") in ("upload.txt",)  # mimetypes' first choice


def test_extension_for_rejects_unsafe_filetypes():
    assert extension_for("pdf") == ".pdf"
    assert extension_for("a/b/c") == ""
    assert extension_for("ex e") == ""
    assert extension_for("x" * 40) == ""


def test_long_names_are_cut_to_the_byte_limit_keeping_the_extension():
    name = safe_filename("é" * 300 + ".jpeg")
    assert name.endswith(".jpeg")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    name.encode("utf-8").decode("utf-8")  # not cut inside a character
    long_ext = safe_filename("a" * 200 + "." + "b" * 50)
    assert len(long_ext.encode("utf-8")) <= MAX_NAME_BYTES


def test_session_dirname_keeps_real_keys_readable_and_distinct():
    g2 = "7Jh5q3i7m1gYvZ4bNfW2X9yT8kLpR6sD3aQ1cE5uVxBn:00112233445566778899aabbccddeeff"
    assert session_dirname(g2) == g2.replace(":", "_")
    assert session_dirname("5" * 88) == "5" * 88
    hostile = ["../x", "..%2fx", "x/..", "a_b", "a:b_"]
    names = {session_dirname(k) for k in hostile}
    assert len(names) == len(hostile)
    for name in names:
        _assert_harmless(name)


def test_resolve_file_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_file_url(f"file://{tmp_path}/out") == tmp_path / "out"
    assert resolve_file_url("file://./exports") == tmp_path / "exports"
    assert resolve_file_url("file://exports/sub") == tmp_path / "exports" / "sub"
    assert resolve_file_url("file://localhost" + str(tmp_path)) == tmp_path


@hsettings(max_examples=500, deadline=None)
@given(st.text(min_size=0, max_size=400), st.text(max_size=20))
def test_any_name_is_harmless(raw, filetype):
    _assert_harmless(safe_filename(raw, filetype))
    _assert_harmless(session_dirname(raw))


@hsettings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("./\\-: \x00\n\u202e.aé")), max_size=60))
def test_names_built_from_path_syntax_never_escape_the_folder(raw):
    root = Path("/export-root")
    for name in (safe_filename(raw), session_dirname(raw)):
        _assert_harmless(name)
        joined = (root / name).resolve()
        assert joined.parent == root
