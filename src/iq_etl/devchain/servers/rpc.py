"""A Solana JSON-RPC server on loopback that serves a development chain as mainnet would.

`serve_rpc(chain_dir)` loads the chain through the CAR reader (`chain_dir/{epoch}/epoch-{epoch}.car`,
slot span from `chain_dir/manifest.json`), indexes it in memory (by slot, by signature, by account
address) and answers in a daemon thread. Responses are built with solders' RPC types, so the JSON is
what mainnet sends (field names, `status`/`err`, `version`, base58 inner-instruction data...).

Methods: getSignaturesForAddress, getTransaction, getBlock, getBlocks, getBlockTime, getSlot,
getBlockHeight, getFirstAvailableBlock, getSignatureStatuses, getHealth, getVersion; JSON-RPC
batches; mainnet's error codes and messages (-32009 skipped slot, -32004 block not available
above the tip, -32015 v0 transaction without maxSupportedTransactionVersion, -32601 unknown method,
-32602 bad params).

Where mainnet's behaviour depends on data the model does not keep, the server says so:
balances and token balances are empty lists, blockhashes are synthetic (stable per slot), and
`getSignaturesForAddress` orders signatures within one slot by signature, newest slot first (as
the blockstore's index does), which is deliberately *not* ledger order.

Fault injection (`Faults`, in `rpc_faults`) for tests and `iq-etl devchain serve` flags: a
request-rate limit answered with HTTP 429 + Retry-After (or scripted 429 bursts), random 5xx, slow
answers, dropped connections, refused batches, blocks a node claims are skipped though it lists
them, and (tests) results rewritten by a `tamper` function, for peers that send malformed data. The in-memory index (`RpcChain`) lives in `rpc_index`.
"""
from __future__ import annotations

import bisect
import gzip
import json
import logging
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetBlockResp,
    GetSignaturesForAddressResp,
    GetTransactionResp,
    RpcConfirmedTransactionStatusWithSignature,
)
from solders.signature import Signature
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    EncodedTransactionWithStatusMeta,
    UiConfirmedBlock,
)

from iq_etl.devchain.servers.rpc_faults import Faults, ServerCounters
from iq_etl.devchain.servers.rpc_index import RpcChain, _Tx
from iq_etl.ingest.sources.rpc.convert import err_value, memo_of, synthetic_blockhash, transaction_to_rpc

log = logging.getLogger(__name__)

MAX_SIGNATURES_LIMIT = 1000
MAX_STATUS_SIGNATURES = 256
MAX_GET_BLOCKS_RANGE = 500_000
SERVER_VERSION = "2.2.14"  # reported by getVersion; the JSON shapes follow agave 2.x


# --- JSON-RPC errors ----------------------------------------------------------------------------------

class _RpcFault(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _invalid(message: str) -> _RpcFault:
    return _RpcFault(-32602, message)


# --- method implementations -------------------------------------------------------------------------

def _config(params: list, position: int, *, encoding_shorthand: bool = False) -> dict:
    if len(params) <= position or params[position] is None:
        return {}
    cfg = params[position]
    if isinstance(cfg, str) and encoding_shorthand:
        return {"encoding": cfg}  # the deprecated form: an encoding name instead of a config object
    if not isinstance(cfg, dict):
        raise _invalid("Invalid params: invalid type: expected a config object")
    return cfg


def _check_commitment(cfg: dict) -> None:
    commitment = cfg.get("commitment")
    if commitment is None:
        return
    if commitment not in ("processed", "confirmed", "finalized", "recent", "single", "singleGossip", "root", "max"):
        raise _invalid(f"Invalid params: unknown variant `{commitment}`")
    if commitment == "processed":
        raise _invalid("Method does not support commitment below `confirmed`")


def _slot_param(params: list) -> int:
    if not params or not isinstance(params[0], int) or isinstance(params[0], bool) or params[0] < 0:
        raise _invalid("Invalid params: invalid type: expected u64.")
    return params[0]


def _signature_param(value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid("Invalid params: invalid type: expected a string.")
    try:
        Signature.from_string(value)
    except ValueError:
        raise _invalid("Invalid param: Invalid") from None
    return value


def _max_version(cfg: dict) -> int | None:
    value = cfg.get("maxSupportedTransactionVersion")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 255:
        raise _invalid("Invalid params: invalid value: expected u8.")
    return value


def _check_version(tx: _Tx, max_version: int | None) -> None:
    if tx.v0 and max_version is None:
        raise _RpcFault(-32015, "Transaction version (0) is not supported by the requesting client. "
                                "Please try the request again with the following configuration parameter: "
                                "\"maxSupportedTransactionVersion\": 0")


def _encoding(cfg: dict, default: str = "json") -> str:
    encoding = cfg.get("encoding") or default
    if encoding == "binary":
        encoding = "base58"  # the deprecated alias
    if encoding not in ("json", "base64", "base58"):
        if encoding == "jsonParsed":
            raise _invalid("Invalid params: jsonParsed encoding is not served by the development chain; "
                           "use json or base64")
        raise _invalid(f"Invalid params: unknown variant `{encoding}`, expected one of `binary`, `base64`, "
                       "`base58`, `json`, `jsonParsed`")
    return encoding


class _Methods:
    """One instance per server: the chain plus the handlers, each `fn(params) -> JSON value`."""

    def __init__(self, chain: RpcChain):
        self.chain = chain
        self.hidden: frozenset[int] = frozenset()  # a node with holes in its long-term storage
        self.tamper: Callable[[str, list, Any], Any] | None = None  # Faults.tamper
        self.table: dict[str, Callable[[list], Any]] = {
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getTransaction": self.get_transaction,
            "getBlock": self.get_block,
            "getBlocks": self.get_blocks,
            "getBlockTime": self.get_block_time,
            "getSlot": self.get_slot,
            "getBlockHeight": self.get_block_height,
            "getFirstAvailableBlock": self.get_first_available_block,
            "getSignatureStatuses": self.get_signature_statuses,
            "getHealth": lambda params: "ok",
            "getVersion": lambda params: {"solana-core": SERVER_VERSION, "feature-set": 0},
        }

    def _missing_slot(self, slot: int) -> _RpcFault:
        if self.chain.slot_state(slot) == "future":
            return _RpcFault(-32004, f"Block not available for slot {slot}")
        return _RpcFault(-32009, f"Slot {slot} was skipped, or missing in long-term storage")

    def get_signatures_for_address(self, params: list) -> Any:
        if not params or not isinstance(params[0], str):
            raise _invalid("Invalid params: invalid type: expected a string.")
        try:
            Pubkey.from_string(params[0])
        except ValueError:
            raise _invalid("Invalid param: Invalid") from None
        cfg = _config(params, 1)
        _check_commitment(cfg)
        limit = cfg.get("limit", MAX_SIGNATURES_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1 or limit > MAX_SIGNATURES_LIMIT:
            raise _invalid(f"Invalid limit; max {MAX_SIGNATURES_LIMIT}")
        history = self.chain.address_history(params[0])
        hi = len(history)
        if cfg.get("before") is not None:
            before = self.chain.by_signature.get(_signature_param(cfg["before"]))
            if before is None:
                return json.loads(GetSignaturesForAddressResp([]).to_json())["result"]
            hi = bisect.bisect_left(history, (before.slot, bytes(Signature.from_string(before.signature))))
        lo = 0
        if cfg.get("until") is not None:
            until = self.chain.by_signature.get(_signature_param(cfg["until"]))
            if until is not None:  # an unknown `until` is ignored, as on mainnet
                lo = bisect.bisect_right(history, (until.slot, bytes(Signature.from_string(until.signature)),
                                                   until.signature))
        picked = history[max(lo, hi - limit):hi][::-1]
        entries = []
        for _slot, _sig_bytes, sig in picked:
            tx = self.chain.by_signature[sig]
            err = err_value(tx.meta)
            entries.append(RpcConfirmedTransactionStatusWithSignature.from_json(json.dumps({
                "signature": sig, "slot": tx.slot, "err": err, "memo": memo_of(tx.chain_tx()),
                "blockTime": tx.block_time, "confirmationStatus": "finalized",
            })))
        return json.loads(GetSignaturesForAddressResp(entries).to_json())["result"]

    def get_transaction(self, params: list) -> Any:
        if not params:
            raise _invalid("Invalid params: invalid length 0, expected at least 1.")
        sig = _signature_param(params[0])
        cfg = _config(params, 1, encoding_shorthand=True)
        _check_commitment(cfg)
        encoding = _encoding(cfg)
        max_version = _max_version(cfg)
        tx = self.chain.by_signature.get(sig)
        if tx is None:
            return None
        _check_version(tx, max_version)
        body = transaction_to_rpc(tx.chain_tx(), encoding=encoding, with_version=max_version is not None)
        etx = EncodedTransactionWithStatusMeta.from_json(json.dumps(body))
        resp = GetTransactionResp(EncodedConfirmedTransactionWithStatusMeta(tx.slot, etx, tx.block_time))
        return json.loads(resp.to_json())["result"]

    def get_block(self, params: list) -> Any:
        slot = _slot_param(params)
        cfg = _config(params, 1, encoding_shorthand=True)
        _check_commitment(cfg)
        encoding = _encoding(cfg)
        max_version = _max_version(cfg)
        details = cfg.get("transactionDetails", "full")
        if details not in ("full", "signatures", "none"):
            raise _invalid(f"Invalid params: transactionDetails {details!r} is not served by the development chain "
                           "(full, signatures or none)")
        rewards = cfg.get("rewards", True)
        block = self.chain.blocks.get(slot)
        if block is None or slot in self.hidden:
            raise self._missing_slot(slot)
        txs = signatures = None
        if details == "full":
            txs = []
            for tx in block.txs:
                _check_version(tx, max_version)
                body = transaction_to_rpc(tx.chain_tx(), encoding=encoding, with_version=max_version is not None)
                txs.append(EncodedTransactionWithStatusMeta.from_json(json.dumps(body)))
        elif details == "signatures":
            signatures = [Signature.from_string(tx.signature) for tx in block.txs]
        parent = block.parent_slot if block.parent_slot is not None else slot - 1
        ui = UiConfirmedBlock(
            previous_blockhash=_hash(synthetic_blockhash(parent)),
            blockhash=_hash(synthetic_blockhash(slot)),
            parent_slot=parent,
            transactions=txs,
            signatures=signatures,
            rewards=[] if rewards else None,
            block_time=block.block_time,
            block_height=self.chain.block_height(slot),
        )
        return json.loads(GetBlockResp(ui).to_json())["result"]

    def get_blocks(self, params: list) -> Any:
        start = _slot_param(params)
        end = params[1] if len(params) > 1 and isinstance(params[1], int) else self.chain.last_slot or start
        if end - start > MAX_GET_BLOCKS_RANGE:
            raise _invalid(f"Slot range too large; max {MAX_GET_BLOCKS_RANGE}")
        slots = self.chain.block_slots()
        return slots[bisect.bisect_left(slots, start):bisect.bisect_right(slots, end)]

    def get_block_time(self, params: list) -> Any:
        slot = _slot_param(params)
        block = self.chain.blocks.get(slot)
        if block is None:
            raise self._missing_slot(slot)
        return block.block_time

    def get_slot(self, params: list) -> Any:
        return self.chain.last_slot or 0

    def get_block_height(self, params: list) -> Any:
        slots = self.chain.block_slots()
        return self.chain.block_height(slots[-1]) if slots else 0

    def get_first_available_block(self, params: list) -> Any:
        slots = self.chain.block_slots()
        return slots[0] if slots else 0

    def get_signature_statuses(self, params: list) -> Any:
        if not params or not isinstance(params[0], list):
            raise _invalid("Invalid params: invalid type: expected a sequence.")
        if len(params[0]) > MAX_STATUS_SIGNATURES:
            raise _invalid(f"Too many inputs provided; max {MAX_STATUS_SIGNATURES}")
        values = []
        for raw in params[0]:
            tx = self.chain.by_signature.get(_signature_param(raw))
            if tx is None:
                values.append(None)
                continue
            err = err_value(tx.meta)
            values.append({"slot": tx.slot, "confirmations": None, "err": err,
                           "status": {"Ok": None} if err is None else {"Err": err},
                           "confirmationStatus": "finalized"})
        return {"context": {"apiVersion": SERVER_VERSION, "slot": self.chain.last_slot or 0}, "value": values}

    def dispatch(self, request: Any) -> dict | None:
        """One JSON-RPC request object -> its response object (None for a notification)."""
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
            return _error_obj(None, -32600, "Invalid request")
        rid = request.get("id")
        method = request["method"]
        params = request.get("params", [])
        if params is None:
            params = []
        handler = self.table.get(method)
        if handler is None:
            return _error_obj(rid, -32601, "Method not found")
        if not isinstance(params, list):
            return _error_obj(rid, -32602, "Invalid params: expected an array")
        try:
            result = handler(params)
            if self.tamper is not None:
                result = self.tamper(method, params, result)
        except _RpcFault as fault:
            return _error_obj(rid, fault.code, fault.message, fault.data)
        except Exception as exc:  # noqa: BLE001 - a server bug must answer, not hang the client
            log.exception("internal error in %s", method)
            return _error_obj(rid, -32603, f"Internal error: {type(exc).__name__}")
        return {"jsonrpc": "2.0", "result": result, "id": rid}


def _hash(text: str) -> Hash:
    return Hash.from_string(text)


def _error_obj(rid: Any, code: int, message: str, data: Any = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": rid}


# --- HTTP -------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's session expects
    server: "RpcServer"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK stall
        # every keep-alive answer by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Never the request line: a client's API key may sit in its path or query.
        log.debug("rpc %s %s: %s", self.address_string(), self.command, " ".join(str(a) for a in args[1:]))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        # mainnet answers GET /health with "ok"; anything else is a POST-only JSON-RPC endpoint
        if self.path.rstrip("/") == "/health":
            self._send(200, b"ok", "text/plain")
        else:
            self._send(405, b"Used HTTP Method is not allowed. POST or OPTIONS is required", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        srv = self.server
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        try:
            request = json.loads(body)
        except ValueError:
            request = None
            parse_error = True
        else:
            parse_error = False
        calls = len(request) if isinstance(request, list) else 1
        action, detail = srv.decide_fault(calls)
        if action == "drop":
            # Close without a byte of answer: the client sees a dropped connection.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if action == "delay":
            time.sleep(detail)
        if action == "429":
            self._send(429, b'{"jsonrpc":"2.0","error":{"code":429,"message":"Too many requests for a specific RPC call"},"id":null}',
                       "application/json", {"Retry-After": detail})
            return
        if action == "5xx":
            self._send(srv.faults.error_status, b"upstream error (injected)", "text/plain")
            return
        if isinstance(request, list) and srv.faults.reject_batches:
            self._send(403, b'{"jsonrpc":"2.0","error":{"code":-32403,"message":"Batch requests are not allowed on this plan"},"id":null}',
                       "application/json")
            return
        if parse_error:
            reply: Any = _error_obj(None, -32700, "Parse error")
        elif isinstance(request, list):
            if not request:
                reply = _error_obj(None, -32600, "Invalid request")
            else:
                reply = [r for r in (srv.methods.dispatch(item) for item in request) if r is not None]
        else:
            reply = srv.methods.dispatch(request)
        srv.count_calls(request if isinstance(request, list) else [request])
        payload = json.dumps(reply, separators=(",", ":")).encode()
        self._send(200, payload, "application/json")

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if len(payload) > 1024 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            payload = gzip.compress(payload, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out during an injected delay)


class RpcServer(ThreadingHTTPServer):
    """The started server: `.url`, `.chain`, `.counters`, `.faults` (may be replaced live), `.shutdown()`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops connection attempts under a concurrent client

    def __init__(self, chain: RpcChain, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None):
        super().__init__((host, port), _Handler)
        self.chain = chain
        self.methods = _Methods(chain)
        self.faults = faults or Faults()
        self.methods.hidden = self.faults.hide_blocks
        self.methods.tamper = self.faults.tamper
        self.counters = ServerCounters()
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._window_start = time.monotonic()
        self._window_calls = 0
        self._burst_position = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def set_faults(self, faults: Faults | None) -> None:
        with self._lock:
            self.faults = faults or Faults()
            self.methods.hidden = self.faults.hide_blocks
            self.methods.tamper = self.faults.tamper
            self._rng = random.Random(self.faults.seed)
            self._window_start = time.monotonic()
            self._window_calls = 0
            self._burst_position = 0

    def decide_fault(self, calls: int) -> tuple[str | None, Any]:
        """What to do with a request of `calls` JSON-RPC calls: None, 'drop', 'delay', '429' or '5xx'."""
        f = self.faults
        with self._lock:
            self.counters.http_requests += 1
            if f.drop_rate and self._rng.random() < f.drop_rate:
                self.counters.dropped += 1
                return "drop", None
            if f.burst is not None:
                answered, refused = f.burst
                position = self._burst_position % (answered + refused)
                self._burst_position += 1
                if position >= answered:
                    self.counters.http_429 += 1
                    return "429", f"{f.retry_after if f.retry_after is not None else 1:g}"
            if f.rate_limit is not None:
                now = time.monotonic()
                if now - self._window_start >= f.rate_window:
                    self._window_start, self._window_calls = now, 0
                if self._window_calls + calls > f.rate_limit:
                    self.counters.http_429 += 1
                    rest = f.rate_window - (now - self._window_start)
                    wait = f.retry_after if f.retry_after is not None else max(1, int(rest + 0.999))
                    return "429", f"{wait:g}"
                self._window_calls += calls
            if f.error_rate and self._rng.random() < f.error_rate:
                self.counters.http_5xx += 1
                return "5xx", None
            if f.delay and self._rng.random() < f.delay_rate:
                self.counters.delayed += 1
                return "delay", f.delay
        return None, None

    def count_calls(self, requests: list) -> None:
        with self._lock:
            for r in requests:
                self.counters.rpc_calls += 1
                if isinstance(r, dict) and isinstance(r.get("method"), str):
                    self.counters.by_method[r["method"]] += 1

    def start(self) -> "RpcServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"rpc-server:{self.server_address[1]}",
                                        daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            super().shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()

    def __enter__(self) -> "RpcServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve_rpc(chain_dir: str | Path | RpcChain, host: str = "127.0.0.1", port: int = 0,
              faults: Faults | None = None) -> RpcServer:
    """Serve a development chain folder (or an `RpcChain`) as Solana JSON-RPC; returns the started server."""
    chain = chain_dir if isinstance(chain_dir, RpcChain) else RpcChain.from_dir(chain_dir)
    return RpcServer(chain, host, port, faults).start()
