"""`iq-etl decode`: decode one IQ instruction given on the command line, for operators debugging a
transaction. Prints the record (or `{"decodable": false, "reason": ...}`, exit 0); bad arguments are
one-line errors with a non-zero exit.

`--data` is hex or base58. An explicit `hex:` or `b58:` prefix decides; otherwise a `0x` prefix, or
only hex digits with an even length, means hex, and anything else is read as base58 (so a base58
string made only of digits 1-9 and a-f with an even length must be given as `b58:...`).
"""
from __future__ import annotations

import argparse
import json
import string

from iq_etl.errors import IQEtlError
from iq_etl.protocol import MODES, IQRecord, decode
from iq_etl.settings import is_pubkey

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_HEX = set(string.hexdigits)


def register(sub) -> None:
    p = sub.add_parser("decode", help="decode one IQ instruction (program id + data) and print the record",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--program", required=True, help="program id (base58)")
    p.add_argument("--data", required=True,
                   help="instruction data: hex or base58; force with a hex:/b58: prefix (0x also means hex)")
    p.add_argument("--accounts", default="", help="the instruction's account keys in order, comma-separated")
    p.add_argument("--session-pdas", default="",
                   help="comma-separated session PDAs: the first instruction account found here is the session")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="G2 layout choice when the program id does not decide (default: auto)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(handler=run)


def b58decode(text: str) -> bytes:
    number = 0
    for pos, char in enumerate(text):
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise ValueError(f"character {char!r} at position {pos} is not base58")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading_zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * leading_zeros + body


def parse_data(text: str) -> bytes:
    """Instruction data from `--data` (rule in the module docstring)."""
    value = text.strip()
    lowered = value.lower()
    try:
        if lowered.startswith("hex:"):
            return _hex(value[4:])
        if lowered.startswith("b58:"):
            return b58decode(value[4:])
        if lowered.startswith("0x"):
            return _hex(value[2:])
        if len(value) % 2 == 0 and set(value) <= _HEX:
            return bytes.fromhex(value)
        return b58decode(value)
    except ValueError as exc:
        raise IQEtlError(f"--data {text[:60]!r}: not hex or base58 ({exc})") from None


def _hex(value: str) -> bytes:
    if len(value) % 2:
        raise ValueError(f"odd number of hex digits ({len(value)})")
    if not set(value) <= _HEX:
        bad = next(i for i, c in enumerate(value) if c not in _HEX)
        raise ValueError(f"character {value[bad]!r} at position {bad} is not a hex digit")
    return bytes.fromhex(value)


def _keys(text: str, option: str) -> list[str]:
    keys = [k.strip() for k in text.split(",")] if text.strip() else []
    for pos, key in enumerate(keys):
        if not is_pubkey(key):
            raise IQEtlError(f"{option}: entry {pos} {key[:60]!r} is not a base58 public key")
    return keys


def render(record: IQRecord) -> str:
    """A readable rendering: the JSON fields that apply, plus the encoding details."""
    from iq_etl.output import visible

    lines = []
    for name, value in record.to_json().items():
        if value is None or name == "decodable":
            continue
        if name == "payload_base64":
            payload = record.payload or b""
            preview = payload[:64].decode("utf-8", "replace")
            lines.append(f"payload: {len(payload)} bytes: {preview!r}{' ...' if len(payload) > 64 else ''}")
            continue
        if name == "metadata" and not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{name}: {visible(value, 1000)}")  # chain text: control characters escaped (--json: exact)
    for name in ("db_root_id", "table_seed"):
        value = getattr(record, name)
        if value is not None:
            lines.append(f"{name}: {value.hex()}")
    if record.proof is not None:
        lines.append(f"proof: [{', '.join(p.hex() for p in record.proof)}]")
    if record.variant:
        lines.append(f"variant: {record.variant}")
    return "\n".join(lines)


def run(args) -> int:
    if not is_pubkey(args.program.strip()):
        raise IQEtlError(f"--program {args.program[:60]!r} is not a base58 public key")
    data = parse_data(args.data)
    accounts = _keys(args.accounts, "--accounts")
    session_pdas = frozenset(_keys(args.session_pdas, "--session-pdas"))
    result = decode(args.program.strip(), accounts, data, mode=args.mode, session_pdas=session_pdas)
    if args.json or not isinstance(result, IQRecord):
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=None if not args.json else 2))
    else:
        print(render(result))
    return 0
