"""The `file://` target: each complete upload becomes `<dir>/<session>/<file name>` plus
`<dir>/<session>/upload.json` (the reader backend's body without the payload).

File names come from chain metadata, i.e. from anyone who paid for a transaction: `safe_filename`
turns any string into one harmless path component. Files are written atomically (a temporary file
in the same folder, fsync, rename), the data file before `upload.json`, and the delivery is
recorded only after both, so an interrupted export never leaves a half file that looks delivered.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from iq_etl.errors import SettingsError
from iq_etl.export.body import ReadyUpload, build_body
from iq_etl.export.ledger import DELIVERED, FAILED, REFUSED, AttemptOutcome

MAX_NAME_BYTES = 120
DEFAULT_STEM = "upload"
DEFAULT_EXTENSION = ".bin"
METADATA_NAME = "upload.json"

# Characters that separate paths or are forbidden in Windows names; replaced by '_'.
_FORBIDDEN = set('/\\<>:"|?*')
# Windows device names (with or without an extension) that cannot be regular files there.
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
             *(f"COM{i}" for i in "123456789¹²³"), *(f"LPT{i}" for i in "123456789¹²³")}
_EXTENSION = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9_+-]{0,15}$")


def _drop_invisible(text: str) -> str:
    # Control (Cc), format (Cf: bidi overrides, zero-width), surrogates (Cs: not encodable),
    # line/paragraph separators (Zl, Zp). Any other whitespace becomes a plain space.
    out = []
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            continue
        out.append(" " if cat == "Zs" else ch)
    return "".join(out)


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def extension_for(filetype: str) -> str:
    """An extension for a metadata `filetype` ('png', '.png', 'image/png'); '' if none is safe."""
    filetype = _drop_invisible(filetype or "").strip().lower()
    if not filetype:
        return ""
    if "/" in filetype:
        guessed = mimetypes.guess_extension(filetype.split(";", 1)[0].strip(), strict=False) or ""
        return guessed if _EXTENSION.match(guessed) else ""
    candidate = filetype if filetype.startswith(".") else "." + filetype
    return candidate if _EXTENSION.match(candidate) else ""


def safe_filename(raw: str | None, filetype: str = "", *, default_stem: str = DEFAULT_STEM,
                  max_bytes: int = MAX_NAME_BYTES) -> str:
    """One harmless path component for `raw`: no separators, no control or invisible characters,
    no '..', no leading dot, dash or space, no trailing dot or space, not a Windows device name,
    at most `max_bytes` UTF-8 bytes (the extension is kept when it fits). An empty result becomes
    `default_stem` plus an extension from `filetype` (or `.bin`)."""
    text = _drop_invisible(raw or "")
    text = "".join("_" if ch in _FORBIDDEN else ch for ch in text)
    text = re.sub(r"\.{2,}", ".", text)           # no '..' anywhere
    text = re.sub(r" {2,}", " ", text)
    text = text.lstrip(" .-").rstrip(" .")
    if not text:
        text = default_stem + (extension_for(filetype) or DEFAULT_EXTENSION)
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.split(".")[0].upper().rstrip(" ") in _RESERVED:
        text = "_" + text
        stem = "_" + stem
    if len(text.encode("utf-8")) > max_bytes:
        suffix = "." + ext if dot and _EXTENSION.match("." + ext) else ""
        stem_part = stem if suffix else text
        text = _truncate_utf8(stem_part, max_bytes - len(suffix.encode("utf-8"))).rstrip(" .") + suffix
        text = text.lstrip(" .-") or (default_stem + DEFAULT_EXTENSION)
    return text


def session_dirname(upload_key: str) -> str:
    """The folder of one upload: its key made safe. Real keys are base58 or hex plus the ':' of G2
    keys, which becomes '_' (not in either alphabet, so distinct keys stay distinct). A key that
    needed any other change gets a short hash of itself appended, so two keys never share a folder."""
    safe = safe_filename(upload_key, default_stem="upload", max_bytes=MAX_NAME_BYTES - 17)
    if safe != upload_key.replace(":", "_"):
        safe = f"{safe}-{hashlib.sha256(upload_key.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    return safe


def resolve_file_url(url: str) -> Path:
    """`file:///abs/dir`, `file://./rel`, `file://rel` or `file://~/dir` → an absolute folder path."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise SettingsError(f"export target {url!r} is not a file:// URL")
    raw = unquote(parts.netloc + parts.path)
    if not raw:
        raise SettingsError(f"export target {url!r} names no folder")
    if parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        raw = unquote(parts.path)
    return Path(raw).expanduser().resolve()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either its old content or all of `data`."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class FileTarget:
    """Writes uploads into a folder. Thread-safe: uploads have distinct folders."""

    def __init__(self, url: str):
        self.root = resolve_file_url(url)
        self.target_id = self.root.as_uri()  # canonical, so './exports' from any cwd records the same target

    def paths_for(self, upload: ReadyUpload) -> tuple[Path, Path]:
        folder = self.root / session_dirname(upload.upload_key)
        name = safe_filename(upload.filename, upload.filetype)
        if name.lower() == METADATA_NAME:
            name = "file-" + name
        return folder / name, folder / METADATA_NAME

    def deliver(self, upload: ReadyUpload, report: Callable[[int, AttemptOutcome], None]) -> AttemptOutcome:
        outcome = self._write(upload)
        report(1, outcome)
        return outcome

    def _write(self, upload: ReadyUpload) -> AttemptOutcome:
        try:
            data = base64.b64decode(upload.file_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            return AttemptOutcome(REFUSED, error=f"file_base64 of {upload.upload_key} is not base64: {exc}")
        if upload.file_sha256 and hashlib.sha256(data).hexdigest() != upload.file_sha256:
            return AttemptOutcome(REFUSED, error=f"file bytes of {upload.upload_key} do not match file_sha256")
        data_path, meta_path = self.paths_for(upload)
        meta = json.dumps(build_body(upload, include_payload=False), indent=2, ensure_ascii=False) + "\n"
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(data_path, data)
            write_atomic(meta_path, meta.encode("utf-8"))
        except OSError as exc:
            return AttemptOutcome(FAILED, error=f"writing {data_path}: {exc.strerror or exc}")
        return AttemptOutcome(DELIVERED, response_excerpt=str(data_path.relative_to(self.root)))

    def close(self) -> None:
        pass
