/* Compiled section walker for the CAR reader's hot loop (reader.py `_SlotWalk.run`, fast mode:
 * few wanted keys, CIDs not verified).
 *
 * walk(buf, pos, n, keys, tables) -> (pos, seen, lut_checks, maybe_tx)
 *
 * Walks the sections of buf[pos:n] and consumes only what the Python walk would drop without a
 * trace: Entry and Rewards nodes, and Transaction nodes the pre-filter rejects (no wanted key in
 * the section's bytes, legacy message or v0 message whose lookup-table entries are all known not
 * wanted in `tables`, the cache of prefilter.py). It stops, without consuming it, at the first
 * section that needs anything else (a candidate, a Block, a DataFrame, a Subset or Epoch node, a
 * lookup not learned yet, an unusual layout, any anomaly, an incomplete section) and returns its
 * position: the Python walk then handles that one section with its own code, so candidates, rows
 * and error messages are the Python walk's by construction. Nothing here raises on bad input.
 *
 * `keys` is the wanted 32-byte keys joined; `seen` counts the transactions consumed,
 * `lut_checks` the v0 transactions answered from the cache, and `maybe_tx` is 0 when the section it
 * stopped at is known not to be a Transaction (the Python walk then needs no key search for it). The rules below follow reader.py and
 * prefilter.py (`_static_hit`, `_quick_verdict`, `_lut_verdict`) rule for rule; keep them in step.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE  /* memmem */
#include <Python.h>
#include <string.h>

static const unsigned char CID_PREFIX[4] = {0x01, 0x71, 0x12, 0x20};
static const unsigned char TXN_2B[8] = {0x85, 0x00, 0x86, 0x06, 0xF6, 0xF6, 0xF6, 0x59};
static const unsigned char TXN_1B[8] = {0x85, 0x00, 0x86, 0x06, 0xF6, 0xF6, 0xF6, 0x58};

#define KIND_TRANSACTION 0
#define KIND_ENTRY 1
#define KIND_REWARDS 5
#define MAX_LOOKUPS 64  /* a message with more lookups is left to Python */

/* Solana compact-u16 at B[q:end]: 1 on success (value, position after), 0 when malformed or past end. */
static int cu16(const unsigned char *B, Py_ssize_t q, Py_ssize_t end, Py_ssize_t *value, Py_ssize_t *after)
{
    unsigned b0, b1, b2;
    if (q < 0 || q >= end)
        return 0;
    b0 = B[q];
    if (b0 < 0x80) {
        *value = b0;
        *after = q + 1;
        return 1;
    }
    if (q + 1 >= end)
        return 0;
    b1 = B[q + 1];
    if (b1 < 0x80) {
        *value = (Py_ssize_t)((b0 & 0x7F) | (b1 << 7));
        *after = q + 2;
        return 1;
    }
    if (q + 2 >= end)
        return 0;
    b2 = B[q + 2];
    if (b2 > 3)
        return 0;
    *value = (Py_ssize_t)((b0 & 0x7F) | ((b1 & 0x7F) << 7) | (b2 << 14));
    *after = q + 3;
    return 1;
}

/* prefilter._lut_verdict: -1 = cannot tell from the cache, 0 = no loaded address wanted, 1 = one is;
 * -2 = a Python error is set. m is the message's version byte, te the end of the message. */
static int lut_verdict(const unsigned char *B, Py_ssize_t m, Py_ssize_t te, PyObject *tables)
{
    Py_ssize_t n, q, i, a, b, nl;
    Py_ssize_t tpos[MAX_LOOKUPS], wpos[MAX_LOOKUPS], wlen[MAX_LOOKUPS], rpos[MAX_LOOKUPS], rlen[MAX_LOOKUPS];
    int verdict = 0;

    if (m < 0 || m >= te || B[m] != 0x80)
        return -1;
    if (!cu16(B, m + 4, te, &n, &q))  /* version byte, 3 header bytes, then the static keys */
        return -1;
    q += 32 * n + 32;                  /* keys, recent blockhash */
    if (!cu16(B, q, te, &n, &q))
        return -1;
    for (i = 0; i < n; i++) {          /* instructions: program index, accounts, data */
        if (!cu16(B, q + 1, te, &a, &q))
            return -1;
        q += a;
        if (!cu16(B, q, te, &b, &q))
            return -1;
        q += b;
    }
    if (!cu16(B, q, te, &nl, &q))
        return -1;
    if (nl > MAX_LOOKUPS)
        return -1;
    for (i = 0; i < nl; i++) {         /* lookups: table address, writable indexes, readonly indexes */
        tpos[i] = q;
        if (!cu16(B, q + 32, te, &wlen[i], &q))
            return -1;
        wpos[i] = q;
        if (!cu16(B, q + wlen[i], te, &rlen[i], &q))
            return -1;
        rpos[i] = q;
        q += rlen[i];
    }
    if (q != te)
        return -1;
    for (i = 0; i < nl; i++) {
        PyObject *key, *status;
        const unsigned char *S;
        Py_ssize_t j;
        key = PyBytes_FromStringAndSize((const char *)B + tpos[i], 32);
        if (key == NULL)
            return -2;
        status = PyDict_GetItemWithError(tables, key);  /* borrowed */
        Py_DECREF(key);
        if (status == NULL)
            return PyErr_Occurred() ? -2 : -1;
        if (!PyByteArray_Check(status) || PyByteArray_GET_SIZE(status) != 256)
            return -1;
        S = (const unsigned char *)PyByteArray_AS_STRING(status);
        for (j = 0; j < wlen[i]; j++) {
            unsigned v = S[B[wpos[i] + j]];
            if (v == 0)
                return -1;
            if (v == 2)
                verdict = 1;
        }
        for (j = 0; j < rlen[i]; j++) {
            unsigned v = S[B[rpos[i] + j]];
            if (v == 0)
                return -1;
            if (v == 2)
                verdict = 1;
        }
    }
    return verdict;
}

/* prefilter._quick_verdict (few keys, no wanted key in the section): 0 = reject, 1 = anything else
 * (candidate, cannot tell, lookup not learned: the Python walk decides), -2 = Python error set. */
static int quick_verdict(const unsigned char *B, Py_ssize_t d, Py_ssize_t e, PyObject *tables, Py_ssize_t *lut_checks)
{
    Py_ssize_t q, s, ln, te, m;
    unsigned h, nxt, nsig;
    int v;

    if (e - d < 16)
        return 1;
    if (B[d + 2] != 0x86 || B[d + 3] != 0x06 || B[d + 4] != 0xF6 || B[d + 5] != 0xF6 || B[d + 6] != 0xF6)
        return 1;
    q = d + 7;
    h = B[q];
    if (h == 0x59) {
        s = q + 3;
        ln = (B[q + 1] << 8) | B[q + 2];
    } else if (h == 0x58) {
        s = q + 2;
        ln = B[q + 1];
    } else if (h >= 0x40 && h <= 0x57) {
        s = q + 1;
        ln = h - 0x40;
    } else {
        return 1;
    }
    te = s + ln;
    if (te + 8 > e)
        return 1;
    nxt = B[te];
    if (nxt != 0xF6 && nxt != 0x80)
        return 1;
    nsig = B[s];
    if (nsig >= 0x80)
        return 1;
    m = s + 1 + 64 * (Py_ssize_t)nsig;
    if (m >= te)
        return 1;
    if (!(B[m] & 0x80))
        return 0;  /* legacy message: every key is static, none matched */
    v = lut_verdict(B, m, te, tables);
    if (v == -2)
        return -2;
    if (v == 0) {
        (*lut_checks)++;
        return 0;
    }
    return 1;
}

/* prefilter._static_hit without the hit list: 1 when a static account key of the transaction whose
 * data is B[s:te] is a wanted key, or when the message cannot be read in place; 0 otherwise. */
static int static_hit(const unsigned char *B, Py_ssize_t s, Py_ssize_t te, Py_ssize_t e,
                      const unsigned char *keys, Py_ssize_t nwanted)
{
    Py_ssize_t end = te < e ? te : e, m, h0, nkeys, k0, i, j;
    unsigned nsig;
    if (s >= end)
        return 1;
    nsig = B[s];
    if (nsig >= 0x80)
        return 1;
    m = s + 1 + 64 * (Py_ssize_t)nsig;
    if (m >= end)
        return 1;
    h0 = (B[m] & 0x80) ? m + 1 : m;
    if (!cu16(B, h0 + 3, end, &nkeys, &k0))
        return 1;
    if (k0 + 32 * nkeys > end)
        return 1;
    for (i = 0; i < nkeys; i++) {
        const unsigned char *k = B + k0 + 32 * i;
        for (j = 0; j < nwanted; j++) {
            if (memcmp(k, keys + 32 * j, 32) == 0)
                return 1;
        }
    }
    return 0;
}

/* Whether a wanted key starts in B[pos:e] and ends within B[:n] (the Python walk's `hits`). */
static int any_key(const unsigned char *B, Py_ssize_t pos, Py_ssize_t e, Py_ssize_t n,
                   const unsigned char *keys, Py_ssize_t nwanted)
{
    Py_ssize_t end = e + 31 < n ? e + 31 : n, j;
    if (end - pos < 32)
        return 0;
    for (j = 0; j < nwanted; j++) {
        if (memmem(B + pos, (size_t)(end - pos), keys + 32 * j, 32) != NULL)
            return 1;
    }
    return 0;
}

static PyObject *walk(PyObject *self, PyObject *args)
{
    PyObject *bufobj, *tables, *result = NULL;
    Py_ssize_t pos, n, seen = 0, lut_checks = 0, nwanted;
    int maybe_tx = 1;
    Py_buffer view, kview;
    const unsigned char *B, *keys;
    (void)self;

    if (!PyArg_ParseTuple(args, "Onny*O!", &bufobj, &pos, &n, &kview, &PyDict_Type, &tables))
        return NULL;
    if (kview.len % 32 != 0) {
        PyBuffer_Release(&kview);
        PyErr_SetString(PyExc_ValueError, "keys must be 32-byte keys joined");
        return NULL;
    }
    if (PyObject_GetBuffer(bufobj, &view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&kview);
        return NULL;
    }
    B = (const unsigned char *)view.buf;
    keys = (const unsigned char *)kview.buf;
    nwanted = kview.len / 32;
    if (n > view.len)
        n = view.len;
    if (pos < 0)
        pos = n;  /* nothing to do: hand back at once */

    while (pos + 1 < n) {
        Py_ssize_t p, e, d, ts, te;
        unsigned b0 = B[pos], kind;
        int v;

        if (b0 < 0x80) {
            p = pos + 1;
            e = p + b0;
        } else if (B[pos + 1] < 0x80) {
            p = pos + 2;
            e = p + ((b0 & 0x7F) | ((Py_ssize_t)B[pos + 1] << 7));
        } else {
            break;  /* long length: Python */
        }
        if (e > n || e - p < 38 || memcmp(B + p, CID_PREFIX, 4) != 0)
            break;
        d = p + 36;
        if ((B[d] & 0xE0) != 0x80)
            break;
        kind = B[d + 1];
        if (kind == KIND_ENTRY || kind == KIND_REWARDS) {
            pos = e;
            continue;
        }
        if (kind != KIND_TRANSACTION) {
            maybe_tx = 0;  /* a Block, DataFrame, Subset, Epoch or unknown kind: no key search needed */
            break;
        }
        ts = 0;
        te = 0;
        if (d + 10 <= e && memcmp(B + d, TXN_2B, 8) == 0) {
            ts = d + 10;
            te = ts + ((B[d + 8] << 8) | B[d + 9]);
        } else if (d + 9 <= e && memcmp(B + d, TXN_1B, 8) == 0) {
            ts = d + 9;
            te = ts + B[d + 8];
        }
        if (ts) {
            /* the transaction data in one frame: a wanted static key makes a candidate */
            if (ts >= e || static_hit(B, ts, te, e, keys, nwanted))
                break;
            if (B[ts] == 1 && te < e && (B[te] == 0xF6 || B[te] == 0x80)) {
                /* one signature: legacy rejected, v0 by its lookups */
                if (ts + 65 >= e)
                    break;
                if (B[ts + 65] >= 0x80) {
                    v = lut_verdict(B, ts + 65, te, tables);
                    if (v == -2)
                        goto done;
                    if (v != 0)
                        break;
                    lut_checks++;
                }
                seen++;
                pos = e;
                continue;
            }
        } else if (any_key(B, pos, e, n, keys, nwanted)) {
            break;  /* unusual layout with a wanted key in its bytes: a candidate */
        }
        v = quick_verdict(B, d, e, tables, &lut_checks);
        if (v == -2)
            goto done;
        if (v != 0)
            break;
        seen++;
        pos = e;
    }
    result = Py_BuildValue("nnni", pos, seen, lut_checks, maybe_tx);
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&kview);
    return result;
}

/* format.crc64_iso: Go's crc64.Checksum(data, MakeTable(ISO)) (multi-frame DataFrame hashes). */
static unsigned long long crc_table[256];
static int crc_ready = 0;

static PyObject *crc64_iso(PyObject *self, PyObject *args)
{
    Py_buffer data;
    unsigned long long crc = ~0ULL;
    const unsigned char *b;
    Py_ssize_t i;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &data))
        return NULL;
    if (!crc_ready) {
        int j, k;
        for (j = 0; j < 256; j++) {
            unsigned long long c = (unsigned long long)j;
            for (k = 0; k < 8; k++)
                c = (c & 1) ? (c >> 1) ^ 0xD800000000000000ULL : c >> 1;
            crc_table[j] = c;
        }
        crc_ready = 1;
    }
    b = (const unsigned char *)data.buf;
    for (i = 0; i < data.len; i++)
        crc = crc_table[(crc ^ b[i]) & 0xFF] ^ (crc >> 8);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLongLong(crc ^ ~0ULL);
}

static PyMethodDef methods[] = {
    {"crc64_iso", crc64_iso, METH_VARARGS, "crc64_iso(data) -> int: CRC-64/GO-ISO, as format.crc64_iso."},
    {"walk", walk, METH_VARARGS,
     "walk(buf, pos, n, keys, tables) -> (pos, seen, lut_checks, maybe_tx): consume the sections of buf[pos:n] "
     "the Python walk would drop (Entry, Rewards, rejected Transactions); stop at the first other one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walker",
    "Compiled section walker + key pre-filter for iq_etl's CAR reader (see reader.py, prefilter.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__walker(void)
{
    return PyModule_Create(&module);
}
