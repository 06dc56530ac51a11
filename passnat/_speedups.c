/*
 * passnat._speedups: the established-flow fast path in C (optional).
 *
 * fast() does exactly what the pure-Python fast path in passnat/nat/router.py
 * does -- one dict lookup of the 12 address/port bytes, then the session's
 * precomputed rewrite with RFC 1624 incremental checksums -- and returns None
 * whenever the packet needs anything else, so the Python slow path stays the
 * one place with logic.  The session's rewrite slots and hop tuple are
 * passnat/nat/flow.py's (configure() learns where the slots are).
 *
 * ring_rx() is the daemon's receive loop (passnat/io/daemon.py _drain) over a
 * TPACKET_V2 ring: for each frame the kernel handed over, the same fast path,
 * rewriting the frame in its slot, putting the next hop's cached link-layer
 * header (virtio_net_hdr + Ethernet, neighbours.py ``fast``) in front of it
 * and queueing it for sendmmsg on the egress socket -- what Router.handle() +
 * Daemon._send() do for such a frame, byte for byte and counter for counter.
 * Every other frame (ARP, new flows, anything odd) goes to a Python callback
 * after everything queued before it was sent, so frames leave in ring order
 * and every frame is handled by exactly one of the two.
 *
 * If this module cannot be built, passnat runs the same paths in Python
 * (PASSNAT_PURE=1 forces that; tests check both give identical bytes).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

/* A session's hop tuple (passnat/nat/flow.py H_*). */
enum { H_OIF, H_NH, H_MTU, H_SLOW, H_FC, H_LEN };

static PyObject *str_count;
static PyObject *int_one;
static PyObject *int_0, *int_6, *int_17;

/*
 * The Session class (passnat/nat/session.py) and where its slots live:
 * configure(Session) reads the offsets from the class's member descriptors,
 * so C reads and writes them as CPython's own slot descriptors do.
 */
static PyTypeObject *session_type;
enum { S_LAST, S_IN_ADDR, S_IN_PORT, S_OUT_ADDR, S_OUT_PORT,
       S_O_IPD, S_O_L4D, S_O_HOP, S_I_IPD, S_I_L4D, S_I_HOP,
       S_MAPPING, S_TCP_STATE, S_LAN_IF, S_UR, S_NSLOTS };
static const char *const slot_names[S_NSLOTS] = {
    "last", "in_addr", "in_port", "out_addr", "out_port",
    "o_ipd", "o_l4d", "o_hop", "i_ipd", "i_l4d", "i_hop",
    "mapping", "tcp_state", "lan_if", "ur",
};
static Py_ssize_t slot_off[S_NSLOTS];

#define SLOT(obj, i) (*(PyObject **)((char *)(obj) + slot_off[i]))

/* configure(Session) -> None */
static PyObject *
configure(PyObject *self, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes the Session class");
        return NULL;
    }
    Py_ssize_t offs[S_NSLOTS];
    for (int i = 0; i < S_NSLOTS; i++) {
        PyObject *d = PyObject_GetAttrString(cls, slot_names[i]);
        if (d == NULL)
            return NULL;
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok)
            offs[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "Session.%s is not a __slots__ member", slot_names[i]);
            return NULL;
        }
    }
    memcpy(slot_off, offs, sizeof offs);
    Py_XSETREF(session_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* untrack(obj) -> None: the cycle collector stops looking at obj (a session: table.py add). */
static PyObject *
untrack(PyObject *self, PyObject *obj)
{
    if (PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj))
        PyObject_GC_UnTrack(obj);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ shared */

static inline unsigned fold_apply(unsigned csum, unsigned delta)
{
    unsigned s = (csum ^ 0xFFFFu) + delta;
    s = (s & 0xFFFFu) + (s >> 16);
    return s ^ 0xFFFFu;
}

/* 1 when the 20-byte IPv4 header at p sums to 0xFFFF (RFC 1071; RFC 1812 §5.2.2). */
static inline int header_ok(const unsigned char *p)
{
    uint32_t s = 0;
    for (int i = 0; i < 20; i += 2)
        s += ((uint32_t)p[i] << 8) | p[i + 1];
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    return s == 0xFFFF;
}

/* 1 when the n bytes at p sum to 0xFFFF as 16-bit words (an odd last byte padded): an ICMP checksum. */
static int sum_ok(const unsigned char *p, Py_ssize_t n)
{
    uint64_t s = 0;
    Py_ssize_t i = 0;
    for (; i + 1 < n; i += 2)
        s += ((uint32_t)p[i] << 8) | p[i + 1];
    if (i < n)
        s += (uint32_t)p[i] << 8;
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return s == 0xFFFF;
}

/* What a session changes in a packet of one direction (flow.py). */
struct rewrite {
    unsigned long addr;
    long port, ipd, l4d;
    int outbound;
    PyObject *hop;   /* borrowed: the session's hop tuple for this direction */
};

/*
 * The session for IPv4 packet p (n bytes) arriving on the interface whose fast
 * table is ft (router.py _build_fast_tables: (outbound, [256 protocol dicts])),
 * if the fast path may take it: a borrowed reference with *rw filled in.
 * NULL means the slow path; with an exception set if a Python call failed.
 * The same tests, in the same order, as Router._handle.
 */
static PyObject *
find_flow(PyObject *ft, const unsigned char *p, Py_ssize_t n, struct rewrite *rw)
{
    if (session_type == NULL || !PyTuple_CheckExact(ft) || PyTuple_GET_SIZE(ft) != 2)
        return NULL;
    PyObject *lst = PyTuple_GET_ITEM(ft, 1);
    if (n < 28 || p[0] != 0x45 || !PyList_CheckExact(lst) || PyList_GET_SIZE(lst) != 256)
        return NULL;
    unsigned proto = p[9];
    PyObject *tbl = PyList_GET_ITEM(lst, proto);
    if (tbl == Py_None || !PyDict_CheckExact(tbl))
        return NULL;
    int outbound = PyObject_IsTrue(PyTuple_GET_ITEM(ft, 0));
    if (outbound < 0)
        return NULL;
    PyObject *key;
    if (proto == 1) {
        /* ICMP echo: the identifier is the "port"; requests go out, replies come in */
        if (p[20] != (outbound ? 8 : 0) || p[21] != 0)
            return NULL;
        unsigned char k[12];
        memcpy(k, p + 12, 8);
        memcpy(k + 8, p + 24, 2);
        k[10] = k[11] = 0;
        key = PyBytes_FromStringAndSize((const char *)k, 12);
    } else {
        key = PyBytes_FromStringAndSize((const char *)p + 12, 12);
    }
    if (key == NULL)
        return NULL;
    PyObject *s = PyDict_GetItemWithError(tbl, key);
    Py_DECREF(key);
    if (s == NULL || Py_TYPE(s) != session_type)
        return NULL;
    PyObject *hop = SLOT(s, outbound ? S_O_HOP : S_I_HOP);
    if (hop == NULL || !PyTuple_CheckExact(hop) || PyTuple_GET_SIZE(hop) != H_LEN
        || PyTuple_GET_ITEM(hop, H_SLOW) != Py_False)
        return NULL;
    unsigned ttl = p[8];
    unsigned frag = ((unsigned)p[6] << 8) | p[7];
    unsigned totlen = ((unsigned)p[2] << 8) | p[3];
    long mtu = PyLong_AsLong(PyTuple_GET_ITEM(hop, H_MTU));
    if (mtu == -1 && PyErr_Occurred())
        return NULL;
    if (ttl <= 1 || (frag & 0x3FFF) || (Py_ssize_t)totlen != n || n > mtu)
        return NULL;
    if (proto == 6) {
        if (n < 40 || (p[33] & 0x17) != 0x10)
            return NULL; /* ACK without SYN/FIN/RST only: other flags are the slow path's */
    } else if (proto == 1) {
        if (!sum_ok(p + 20, n - 20))
            return NULL; /* the slow path drops and counts it (bad_l4_header) */
    } else if (proto != 17) {
        return NULL;
    }
    if (!header_ok(p))
        return NULL; /* the slow path drops and counts it (bad_ip_checksum) */
    PyObject *addr = SLOT(s, outbound ? S_OUT_ADDR : S_IN_ADDR), *port = SLOT(s, outbound ? S_OUT_PORT : S_IN_PORT);
    PyObject *ipd = SLOT(s, outbound ? S_O_IPD : S_I_IPD), *l4d = SLOT(s, outbound ? S_O_L4D : S_I_L4D);
    if (addr == NULL || port == NULL || ipd == NULL || l4d == NULL || SLOT(s, S_LAST) == NULL)
        return NULL;
    rw->outbound = outbound;
    rw->hop = hop;
    rw->addr = PyLong_AsUnsignedLong(addr);
    rw->port = PyLong_AsLong(port);
    rw->ipd = PyLong_AsLong(ipd);
    rw->l4d = PyLong_AsLong(l4d);
    if (PyErr_Occurred())
        return NULL;
    return s;
}

/* Apply a rewrite found by find_flow to the packet in b, in place: TTL - 1, the
 * new address and port, both checksums updated incrementally. */
static void
apply_flow(unsigned char *b, const struct rewrite *rw)
{
    unsigned proto = b[9];
    unsigned co = proto == 6 ? 36 : proto == 17 ? 26 : 22;
    unsigned old = ((unsigned)b[co] << 8) | b[co + 1];
    unsigned c = fold_apply(((unsigned)b[10] << 8) | b[11], (unsigned)rw->ipd);
    b[8] = (unsigned char)(b[8] - 1);
    b[10] = (unsigned char)(c >> 8);
    b[11] = (unsigned char)c;
    int aoff = rw->outbound ? 12 : 16, poff = proto == 1 ? 24 : rw->outbound ? 20 : 22;
    b[aoff] = (unsigned char)(rw->addr >> 24);
    b[aoff + 1] = (unsigned char)(rw->addr >> 16);
    b[aoff + 2] = (unsigned char)(rw->addr >> 8);
    b[aoff + 3] = (unsigned char)rw->addr;
    b[poff] = (unsigned char)(rw->port >> 8);
    b[poff + 1] = (unsigned char)rw->port;
    if (old || proto != 17) {
        unsigned c4 = fold_apply(old, (unsigned)rw->l4d);
        if (c4 == 0 && proto == 17)
            c4 = 0xFFFF; /* RFC 768: a computed zero is sent as all ones */
        b[co] = (unsigned char)(c4 >> 8);
        b[co + 1] = (unsigned char)c4;
    }
}

/* The per-packet bookkeeping: session.last = now, filter counter + 1. */
static int
count_flow(PyObject *s, PyObject *hop, PyObject *now)
{
    PyObject **last = &SLOT(s, S_LAST);
    PyObject *old = *last;
    *last = Py_NewRef(now);
    Py_XDECREF(old); /* a float: its deallocation runs no Python code */
    PyObject *fc = PyTuple_GET_ITEM(hop, H_FC);
    if (fc == Py_None)
        return 0;
    PyObject *cnt = PyObject_GetAttr(fc, str_count);
    PyObject *inc = cnt ? PyNumber_Add(cnt, int_one) : NULL;
    Py_XDECREF(cnt);
    int r = inc == NULL ? -1 : PyObject_SetAttr(fc, str_count, inc);
    Py_XDECREF(inc);
    return r;
}

/* ------------------------------------------------------------------ lean */

/*
 * The lean path in C: passnat/nat/lean.py's LeanPath.first, step for step (that
 * file is its readable twin and tests/nat/test_lean.py compares the two).  The
 * checks read the router's own dicts and sets; the table's methods (admit,
 * mapping_for, new_id, add), the Session class and the route lookup on a cache
 * miss are called as they are, so the session and the table come out exactly
 * as Python makes them.  LeanPath.configure builds the state tuple (L_*).
 */
enum { L_INGRESS, L_EGRESS, L_MSS, L_LOCAL, L_BCAST, L_ROUTES, L_ROUTE, L_TCP_FIRST, L_UDP, L_UDP_DNS,
       L_DNS_PORTS, L_HOPS, L_MAKE_HOP, L_OUT_FLOWS, L_COUNTERS, L_ROUTER, L_U16, L_ADMIT, L_MAPPING_FOR,
       L_NEW_ID, L_ADD, L_SESSION, L_KEEP, L_NAPT, L_TCPUDP, L_LOG_EVENT, L_NAT_GLOBALS,
       L_UDP_IKE, L_STRICT_RPF, L_SLOW_HOPS, L_MAKE_SLOW_HOP, L_MAPPINGS, L_POOLS, L_LOG_LAST, L_LEN };

/* 1 when a TCP segment's flags are a combination some stack sends (packet/tcp.py VALID_FLAGS:
 * Linux conntrack's set, PSH/ECE/CWR aside); the others are the slow path's to drop. */
static inline int
tcp_flags_valid(unsigned flags)
{
    switch (flags & 0x37) { /* FIN SYN RST ACK URG */
    case 0x02: case 0x22: case 0x12: case 0x04: case 0x14: case 0x11: case 0x31: case 0x10: case 0x30:
        return 1;
    default:
        return 0;
    }
}

static PyObject *str_slow_path_packets, *str_tcp_mss_clamped, *str_clock, *str_out_port, *str_no_port, *kw_keep;
static PyObject *str_nat_no_free_port; /* Drop.NO_PORT */
static PyObject *str_free, *msg_no_port_tcp, *msg_no_port_udp;
static PyObject *int_1, *int_1023, *int_1024, *int_65535;

static inline unsigned be16(const unsigned char *b) { return ((unsigned)b[0] << 8) | b[1]; }
static inline uint32_t be32(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}
static inline void put16(unsigned char *b, unsigned v) { b[0] = (unsigned char)(v >> 8); b[1] = (unsigned char)v; }

/* checksum.py: delta16, add_delta (two folds), apply_delta */
static inline unsigned fold2(uint32_t s)
{
    s = (s & 0xFFFF) + (s >> 16);
    return (s & 0xFFFF) + (s >> 16);
}
static inline unsigned delta16(unsigned old, unsigned new_) { return fold2((~old & 0xFFFF) + new_); }

/* passnat/packet/tcp.py clamp_mss on the segment at p (IPv4 header of 20 bytes, *n bytes, room
 * for 4 more): 1 when it changed (lowered or added the MSS option). */
static int
clamp_mss(unsigned char *p, Py_ssize_t *np, unsigned limit)
{
    Py_ssize_t n = *np, ihl = 20;
    if (n < ihl + 20)
        return 0;
    Py_ssize_t doff = (p[ihl + 12] >> 4) * 4;
    if (doff < 20 || n < ihl + doff)
        return 0;
    Py_ssize_t cs = ihl + 16;
    /* find_mss */
    Py_ssize_t i = ihl + 20, end = ihl + doff < n ? ihl + doff : n, found = -1;
    while (i < end) {
        unsigned kind = p[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= end)
            break;
        unsigned len = p[i + 1];
        if (len < 2)
            break;
        if (kind == 2 && len == 4 && i + 4 <= end) {
            found = i + 2;
            break;
        }
        i += len;
    }
    if (found >= 0) {
        unsigned old = be16(p + found), lim = limit;
        if (old <= limit)
            return 0;
        put16(p + found, limit);
        if ((found - ihl) & 1) { /* an option at an odd offset straddles two checksum words */
            old = ((old & 0xFF) << 8) | (old >> 8);
            lim = ((lim & 0xFF) << 8) | (lim >> 8);
        }
        put16(p + cs, fold_apply(be16(p + cs), delta16(old, lim)));
        return 1;
    }
    if (doff + 4 > 60)
        return 0;
    unsigned total = be16(p + 2);
    unsigned old_word = be16(p + ihl + 12);
    unsigned new_word = ((unsigned)((doff + 4) / 4) << 12) | (old_word & 0x0FFF);
    unsigned seg = total - (unsigned)ihl;
    unsigned delta = fold2(delta16(old_word, new_word) + ((2u << 8) | 4) + limit + delta16(seg, seg + 4));
    Py_ssize_t at = ihl + 20;
    memmove(p + at + 4, p + at, (size_t)(n - at));
    p[at] = 2;
    p[at + 1] = 4;
    put16(p + at + 2, limit);
    put16(p + ihl + 12, new_word);
    put16(p + cs, fold_apply(be16(p + cs), delta));
    put16(p + 2, total + 4);
    put16(p + 10, fold_apply(be16(p + 10), delta16(total, total + 4)));
    *np = n + 4;
    return 1;
}

/* flow.py rewrite_deltas */
static void
rewrite_deltas(uint32_t in_addr, uint32_t out_addr, unsigned in_port, unsigned out_port, unsigned d[4])
{
    uint32_t s = ((~in_addr >> 16) & 0xFFFF) + (~in_addr & 0xFFFF) + (out_addr >> 16) + (out_addr & 0xFFFF);
    unsigned a = fold2(s);
    unsigned o_l4d = fold2((~in_port & 0xFFFF) + out_port + a);
    unsigned o_ipd = fold2(a + 0xFEFF); /* TTL_DEC_DELTA */
    unsigned na = 0 < a && a < 0xFFFF ? 0xFFFF - a : 0xFFFF;
    d[0] = o_ipd;
    d[1] = o_l4d;
    d[2] = fold2(na + 0xFEFF);
    d[3] = 0 < o_l4d && o_l4d < 0xFFFF ? 0xFFFF - o_l4d : 0xFFFF;
}

/* The route (oif, next hop) to addr from Router.hop's cache, or by calling it: a new reference,
 * Py_None for no route, NULL on error. */
static PyObject *
route(PyObject *st, PyObject *addr)
{
    PyObject *hit = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_ROUTES), addr);
    if (hit != NULL)
        return Py_NewRef(hit);
    if (PyErr_Occurred())
        return NULL;
    return PyObject_CallOneArg(PyTuple_GET_ITEM(st, L_ROUTE), addr);
}

static int
set_slot(PyObject *obj, int i, PyObject *value)
{
    PyObject **slot = &SLOT(obj, i);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

static int
count(PyObject *counters, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(counters, key);
    if (v == NULL && PyErr_Occurred())
        return -1;
    long n = v == NULL ? 0 : PyLong_AsLong(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *nv = PyLong_FromLong(n + 1);
    if (nv == NULL)
        return -1;
    int r = PyDict_SetItem(counters, key, nv);
    Py_DECREF(nv);
    return r;
}

/* router._clock = max(router._clock, now), as Router.handle keeps it; -1 on error */
static int
advance_clock(PyObject *rt, PyObject *now)
{
    PyObject *clock = PyObject_GetAttr(rt, str_clock);
    if (clock == NULL)
        return -1;
    int r = PyObject_RichCompareBool(now, clock, Py_GT);
    Py_DECREF(clock);
    return r < 0 || (r && PyObject_SetAttr(rt, str_clock, now) < 0) ? -1 : 0;
}

/* 1 when TableState.mapping_for would return None for this endpoint without a search: it has no
 * mapping yet and the pool of (protocol, global address) has no free port left in the range
 * (nat/ports.py IdPool._free: the free counts of 0, 1-1023 and 1024-65535, which _counted reads);
 * 0 when mapping_for must decide; -1 on error. */
static int
range_full(PyObject *st, PyObject *proto, PyObject *oif, PyObject *src, PyObject *sport, PyObject *out_addr, int low)
{
    PyObject *key = PyTuple_Pack(4, proto, oif, src, sport);
    if (key == NULL)
        return -1;
    PyObject *m = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_MAPPINGS), key);
    Py_DECREF(key);
    if (m != NULL || PyErr_Occurred())
        return m != NULL ? 0 : -1;
    if ((key = PyTuple_Pack(2, proto, out_addr)) == NULL)
        return -1;
    PyObject *pool = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_POOLS), key);
    Py_DECREF(key);
    if (pool == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *free_ = PyObject_GetAttr(pool, str_free);
    if (free_ == NULL)
        return -1;
    long n = 1;
    if (PyList_CheckExact(free_) && PyList_GET_SIZE(free_) == 3)
        n = PyLong_AsLong(PyList_GET_ITEM(free_, low ? 1 : 2));
    Py_DECREF(free_);
    if (n == -1 && PyErr_Occurred())
        return -1;
    return n == 0;
}

/* 1 when Router.log_event(key, now, ...) would log (nothing for key in the last second), else 0;
 * -1 on error.  Spares building and passing the message for every refused packet of a flood. */
static int
log_due(PyObject *st, PyObject *key, PyObject *now)
{
    PyObject *last = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_LOG_LAST), key);
    if (last == NULL)
        return PyErr_Occurred() ? -1 : 1;
    double l = PyFloat_AsDouble(last), t = PyFloat_AsDouble(now);
    if ((l == -1.0 || t == -1.0) && PyErr_Occurred())
        return -1;
    return t - l >= 1.0 || t < l;
}

/*
 * LeanPath.first for the packet at p (n bytes, room bytes writable there), arrived on iface:
 * 1 when it was the first packet of a plain NAPT flow -- the session is made and the packet
 * rewritten in place (*np its new length, *oif and *nh new references to where it goes);
 * 2 when it was one but no outside port is left (dropped, logged and counted: no output);
 * 0 when the lean path declines it (nothing changed); -1 with an exception set.
 */
static int
lean(PyObject *st, PyObject *iface, unsigned char *p, Py_ssize_t *np, Py_ssize_t room, PyObject *now,
     PyObject **oif_out, PyObject **nh_out)
{
    Py_ssize_t n = *np;
    if (n < 28 || session_type == NULL)
        return 0;
    int r = PySet_Contains(PyTuple_GET_ITEM(st, L_INGRESS), iface);
    if (r <= 0)
        return r;
    unsigned length = be16(p + 2), frag = be16(p + 6), ttl = p[8], proto = p[9];
    uint32_t src = be32(p + 12), dst = be32(p + 16);
    unsigned sport = be16(p + 20), dport = be16(p + 22), flags;
    if (p[0] != 0x45 || (Py_ssize_t)length != n || (frag & 0x3FFF) || ttl <= 1)
        return 0;
    if (proto == 6) {
        if (n < 40 || (p[32] >> 4) < 5 || sport == 1723 || dport == 1723)
            return 0;
        flags = p[33];
        if (!tcp_flags_valid(flags))
            return 0; /* the full path drops and counts it (tcp_invalid_flags) */
    } else if (proto == 17) {
        if (sport == 500 || dport == 500)
            return 0;
        flags = 0;
    } else {
        return 0;
    }
    if (src == 0 || (src >> 24) == 127 || (src >> 28) >= 0xE || (dst >> 28) >= 0xE || dst == 0xFFFFFFFF)
        return 0;
    PyObject *srcl = NULL, *dstl = NULL, *hop = NULL, *in_hop = NULL, *okey = NULL, *ikey = NULL, *m = NULL;
    PyObject *s = NULL, *obj = NULL;
    int result = -1;
    srcl = PyLong_FromUnsignedLong(src);
    dstl = PyLong_FromUnsignedLong(dst);
    if (srcl == NULL || dstl == NULL)
        goto done;
    PyObject *local = PyTuple_GET_ITEM(st, L_LOCAL), *bcast = PyTuple_GET_ITEM(st, L_BCAST);
    int c1 = PyDict_Contains(local, srcl), c2 = PySet_Contains(bcast, srcl), c3 = PyDict_Contains(local, dstl),
        c4 = PySet_Contains(bcast, dstl), c5 = PyDict_Contains(PyTuple_GET_ITEM(st, L_NAT_GLOBALS), dstl);
    if (c1 < 0 || c2 < 0 || c3 < 0 || c4 < 0 || c5 < 0)
        goto done;
    result = 0;
    if (c1 || c2 || c3 || c4 || c5 || !header_ok(p))
        goto done; /* (c5: a global address: hairpinning or the router's, Router._reflect) */
    result = -1;
    if ((hop = route(st, dstl)) == NULL)
        goto done;
    result = 0;
    if (hop == Py_None || !PyTuple_CheckExact(hop) || PyTuple_GET_SIZE(hop) != 2)
        goto done;
    PyObject *oif = PyTuple_GET_ITEM(hop, 0), *nh = PyTuple_GET_ITEM(hop, 1);
    PyObject *eg = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_EGRESS), oif);
    if (eg == NULL) {
        result = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    r = PyObject_RichCompareBool(oif, iface, Py_EQ);
    if (r != 0) {
        result = r < 0 ? -1 : 0;
        goto done;
    }
    if (!PyTuple_CheckExact(eg) || PyTuple_GET_SIZE(eg) != 4 || !PyList_CheckExact(PyTuple_GET_ITEM(eg, 3)))
        goto done;
    PyObject *out_addr = PyTuple_GET_ITEM(eg, 0), *oif_mss = PyTuple_GET_ITEM(eg, 2);
    PyObject *private = PyTuple_GET_ITEM(eg, 3);
    int inside = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(private); i++) {
        PyObject *lohi = PyList_GET_ITEM(private, i);
        if (!PyTuple_CheckExact(lohi) || PyTuple_GET_SIZE(lohi) != 2)
            goto done;
        unsigned long lo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(lohi, 0));
        unsigned long hi = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(lohi, 1));
        if (PyErr_Occurred()) {
            result = -1;
            goto done;
        }
        if (lo <= src && src <= hi) {
            inside = 1;
            break;
        }
    }
    if (!inside)
        goto done;
    long mtu = PyLong_AsLong(PyTuple_GET_ITEM(eg, 1));
    unsigned long oaddr = PyLong_AsUnsignedLong(out_addr);
    if (PyErr_Occurred()) {
        result = -1;
        goto done;
    }
    long limit = -1;
    if (flags & 2) {
        PyObject *in_mss = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_MSS), iface);
        if (in_mss == NULL) {
            result = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
        long a = in_mss == Py_None ? -1 : PyLong_AsLong(in_mss), b = oif_mss == Py_None ? -1 : PyLong_AsLong(oif_mss);
        if (PyErr_Occurred()) {
            result = -1;
            goto done;
        }
        limit = a < 0 ? b : b < 0 ? a : (a < b ? a : b);
    }
    if (n + (limit >= 0 ? 4 : 0) > mtu || n + 4 > room)
        goto done;
    result = -1;
    okey = PyBytes_FromStringAndSize((const char *)p + 12, 12);
    if (okey == NULL)
        goto done;
    PyObject *flows = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, L_OUT_FLOWS), proto == 6 ? int_6 : int_17);
    if (flows == NULL) {
        result = PyErr_Occurred() ? -1 : 0; /* no index for the protocol: the full path decides */
        goto done;
    }
    r = PyDict_Contains(flows, okey);
    if (r != 0) {
        result = r < 0 ? -1 : 0;
        goto done;
    }
    PyObject *aargs[2] = {srcl, srcl};
    if ((obj = PyObject_Vectorcall(PyTuple_GET_ITEM(st, L_ADMIT), aargs, 2, NULL)) == NULL)
        goto done;
    if (obj != Py_None) {
        result = 0;
        goto done;
    }
    Py_CLEAR(obj);
    if ((in_hop = route(st, srcl)) == NULL)
        goto done;
    if (in_hop == Py_None || !PyTuple_CheckExact(in_hop) || PyTuple_GET_SIZE(in_hop) != 2) {
        result = 0;
        goto done;
    }
    if (PyTuple_GET_ITEM(st, L_STRICT_RPF) == Py_True) {
        /* the reverse-path check: the source routes back out of the interface it came in on */
        r = PyObject_RichCompareBool(PyTuple_GET_ITEM(in_hop, 0), iface, Py_EQ);
        if (r <= 0) {
            result = r < 0 ? -1 : 0;
            goto done;
        }
    }
    /* ---- committed: the same session the full path makes ---- */
    PyObject *u16 = PyTuple_GET_ITEM(st, L_U16);
    PyObject *sp = PyList_GET_ITEM(u16, sport), *dp = PyList_GET_ITEM(u16, dport);
    if ((r = range_full(st, proto == 6 ? int_6 : int_17, oif, srcl, sp, out_addr, sport < 1024)) != 0) {
        if (r < 0)
            goto done;
        m = Py_NewRef(Py_None); /* what mapping_for returns then, without calling it (a cheap refusal) */
    } else {
        PyObject *margs[8] = {proto == 6 ? int_6 : int_17, oif, srcl, sp, out_addr, sport < 1024 ? int_1 : int_1024,
                              sport < 1024 ? int_1023 : int_65535, PyTuple_GET_ITEM(st, L_KEEP)};
        m = PyObject_Vectorcall(PyTuple_GET_ITEM(st, L_MAPPING_FOR), margs, 7, kw_keep);
    }
    if (m == NULL)
        goto done;
    if (m == Py_None) {
        /* the range is full: refused here, as the full path would (logged once a second, counted) */
        if ((r = log_due(st, str_no_port, now)) != 0) {
            PyObject *largs[3] = {str_no_port, now, proto == 6 ? msg_no_port_tcp : msg_no_port_udp};
            if (r < 0 || (obj = PyObject_Vectorcall(PyTuple_GET_ITEM(st, L_LOG_EVENT), largs, 3, NULL)) == NULL)
                goto done;
        }
        PyObject *counters = PyTuple_GET_ITEM(st, L_COUNTERS);
        if (count(counters, str_slow_path_packets) < 0 || count(counters, str_nat_no_free_port) < 0)
            goto done;
        if (advance_clock(PyTuple_GET_ITEM(st, L_ROUTER), now) < 0)
            goto done;
        result = 2;
        goto done;
    }
    PyObject *tcp_state, *klass, *timeout;
    int ur = 1; /* UR_IN: awaiting a reply from outside (evictable; the reply takes the slow path) */
    if (proto == 6) {
        PyObject *tf = PyList_GET_ITEM(PyTuple_GET_ITEM(st, L_TCP_FIRST), flags);
        tcp_state = PyTuple_GET_ITEM(tf, 0);
        klass = PyTuple_GET_ITEM(tf, 1);
        timeout = PyTuple_GET_ITEM(tf, 2);
    } else {
        PyObject *dns = PyTuple_GET_ITEM(st, L_DNS_PORTS);
        int d1 = PySet_Contains(dns, sp), d2 = PySet_Contains(dns, dp);
        if (d1 < 0 || d2 < 0)
            goto done;
        int ike = sport == 4500 || dport == 4500; /* NAT-T: never evicted; the udp timer unless DNS's */
        if (ike)
            ur = 0;
        PyObject *cls = PyTuple_GET_ITEM(st, d1 || d2 ? L_UDP_DNS : ike ? L_UDP_IKE : L_UDP);
        tcp_state = int_0;
        klass = PyTuple_GET_ITEM(cls, 0);
        timeout = PyTuple_GET_ITEM(cls, 1);
    }
    PyObject *oport = PyObject_GetAttr(m, str_out_port);
    if (oport == NULL)
        goto done;
    long oport_v = PyLong_AsLong(oport);
    if (oport_v == -1 && PyErr_Occurred()) {
        Py_DECREF(oport);
        goto done;
    }
    PyObject *id = PyObject_CallNoArgs(PyTuple_GET_ITEM(st, L_NEW_ID));
    if (id == NULL || oport_v < 0 || oport_v > 0xFFFF) {
        Py_DECREF(oport);
        Py_XDECREF(id);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "lean: a mapping's port out of range");
        goto done;
    }
    PyObject *sargs[15] = {id, proto == 6 ? int_6 : int_17, PyTuple_GET_ITEM(st, L_NAPT), oif, srcl, sp, out_addr,
                           oport, dstl, dp, now, timeout, klass, srcl, PyTuple_GET_ITEM(st, L_TCPUDP)};
    s = PyObject_Vectorcall(PyTuple_GET_ITEM(st, L_SESSION), sargs, 15, NULL);
    Py_DECREF(id);
    Py_DECREF(oport);
    if (s == NULL)
        goto done;
    if (Py_TYPE(s) != session_type) {
        PyErr_SetString(PyExc_TypeError, "lean: Session is not the configured class");
        goto done;
    }
    set_slot(s, S_MAPPING, m);
    set_slot(s, S_TCP_STATE, tcp_state);
    set_slot(s, S_LAN_IF, PyTuple_GET_ITEM(in_hop, 0));
    set_slot(s, S_UR, ur ? int_1 : int_0);
    unsigned d[4];
    rewrite_deltas(src, (uint32_t)oaddr, sport, (unsigned)oport_v, d);
    set_slot(s, S_O_IPD, PyList_GET_ITEM(u16, d[0]));
    set_slot(s, S_O_L4D, PyList_GET_ITEM(u16, d[1]));
    set_slot(s, S_I_IPD, PyList_GET_ITEM(u16, d[2]));
    set_slot(s, S_I_L4D, PyList_GET_ITEM(u16, d[3]));
    for (int k = 0; k < 2; k++) {
        PyObject *rt = k == 0 ? hop : in_hop;
        int slow = k == 1 && ur; /* the inbound hop of a session awaiting its reply: the slow path */
        PyObject *h = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, slow ? L_SLOW_HOPS : L_HOPS), rt);
        if (h != NULL) {
            Py_INCREF(h);
        } else {
            if (PyErr_Occurred()
                || (h = PyObject_CallOneArg(PyTuple_GET_ITEM(st, slow ? L_MAKE_SLOW_HOP : L_MAKE_HOP), rt)) == NULL)
                goto done;
        }
        set_slot(s, k == 0 ? S_O_HOP : S_I_HOP, h);
        Py_DECREF(h);
    }
    unsigned char ik[12];
    memcpy(ik, p + 16, 4);
    ik[4] = (unsigned char)(oaddr >> 24);
    ik[5] = (unsigned char)(oaddr >> 16);
    ik[6] = (unsigned char)(oaddr >> 8);
    ik[7] = (unsigned char)oaddr;
    put16(ik + 8, dport);
    put16(ik + 10, (unsigned)oport_v);
    if ((ikey = PyBytes_FromStringAndSize((const char *)ik, 12)) == NULL)
        goto done;
    PyObject *addargs[3] = {s, okey, ikey};
    if ((obj = PyObject_Vectorcall(PyTuple_GET_ITEM(st, L_ADD), addargs, 3, NULL)) == NULL)
        goto done;
    Py_CLEAR(obj);
    /* ---- the packet: the fast path's rewrite, then MSS clamping (Router._emit) ---- */
    unsigned c = fold_apply(be16(p + 10), d[0]);
    p[8] = (unsigned char)(ttl - 1);
    put16(p + 10, c);
    p[12] = (unsigned char)(oaddr >> 24);
    p[13] = (unsigned char)(oaddr >> 16);
    p[14] = (unsigned char)(oaddr >> 8);
    p[15] = (unsigned char)oaddr;
    put16(p + 20, (unsigned)oport_v);
    unsigned co = proto == 6 ? 36 : 26, old = be16(p + co);
    if (old || proto == 6) {
        unsigned c4 = fold_apply(old, d[1]);
        put16(p + co, c4 || proto == 6 ? c4 : 0xFFFF);
    }
    PyObject *counters = PyTuple_GET_ITEM(st, L_COUNTERS);
    if (count(counters, str_slow_path_packets) < 0)
        goto done;
    if (limit >= 0 && clamp_mss(p, np, (unsigned)limit) && count(counters, str_tcp_mss_clamped) < 0)
        goto done;
    if (advance_clock(PyTuple_GET_ITEM(st, L_ROUTER), now) < 0)
        goto done;
    *oif_out = Py_NewRef(oif);
    *nh_out = Py_NewRef(nh);
    result = 1;
done:
    Py_XDECREF(srcl);
    Py_XDECREF(dstl);
    Py_XDECREF(hop);
    Py_XDECREF(in_hop);
    Py_XDECREF(okey);
    Py_XDECREF(ikey);
    Py_XDECREF(m);
    Py_XDECREF(s);
    Py_XDECREF(obj);
    return result;
}

/* ------------------------------------------------------------------ fast() */

/* The lean path for the engine's API (a packet that missed the fast path): [Output] or None. */
static PyObject *
fast_lean(PyObject *st, PyObject *iface, const unsigned char *p, Py_ssize_t n, PyObject *now, PyObject *output)
{
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n + 4); /* room for an added MSS option */
    if (buf == NULL)
        return NULL;
    unsigned char *b = (unsigned char *)PyBytes_AS_STRING(buf);
    memcpy(b, p, (size_t)n);
    PyObject *oif = NULL, *nh = NULL;
    Py_ssize_t len = n;
    int r = lean(st, iface, b, &len, n + 4, now, &oif, &nh);
    if (r <= 0 || r == 2) {
        Py_DECREF(buf);
        if (r < 0)
            return NULL;
        if (r == 2)
            return PyList_New(0);
        Py_RETURN_NONE;
    }
    PyObject *pkt = PyBytes_FromStringAndSize((const char *)b, len);
    Py_DECREF(buf);
    PyObject *o = NULL, *result = NULL;
    if (pkt != NULL) {
        PyObject *callargs[3] = {oif, nh, pkt};
        o = PyObject_Vectorcall(output, callargs, 3, NULL);
    }
    if (o != NULL && (result = PyList_New(1)) != NULL)
        PyList_SET_ITEM(result, 0, Py_NewRef(o));
    Py_XDECREF(o);
    Py_XDECREF(pkt);
    Py_DECREF(oif);
    Py_DECREF(nh);
    return result;
}

/* fast(fast_tables, interface, packet, now, Output[, lean_state]) -> [Output] | None */
static PyObject *
fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 && nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "fast() takes 5 or 6 arguments");
        return NULL;
    }
    PyObject *lean_state = nargs == 6 && PyTuple_CheckExact(args[5]) && PyTuple_GET_SIZE(args[5]) == L_LEN
                           ? args[5] : NULL;
    PyObject *tables = args[0], *iface = args[1], *packet = args[2], *now = args[3], *output = args[4];
    if (!PyDict_CheckExact(tables) || !PyBytes_CheckExact(packet))
        Py_RETURN_NONE;
    PyObject *ft = PyDict_GetItemWithError(tables, iface);
    if (ft == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(packet);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    struct rewrite rw;
    PyObject *s = find_flow(ft, p, n, &rw);
    if (s == NULL) {
        if (PyErr_Occurred())
            return NULL;
        if (lean_state != NULL)
            return fast_lean(lean_state, iface, p, n, now, output);
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    unsigned char *b = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(b, p, (size_t)n);
    apply_flow(b, &rw);
    PyObject *hop = Py_NewRef(rw.hop); /* count_flow may run Python code (a filter counter's setter) */
    if (count_flow(s, hop, now) < 0) {
        Py_DECREF(hop);
        Py_DECREF(out);
        return NULL;
    }
    PyObject *callargs[3] = {PyTuple_GET_ITEM(hop, H_OIF), PyTuple_GET_ITEM(hop, H_NH), out};
    PyObject *o = PyObject_Vectorcall(output, callargs, 3, NULL);
    Py_DECREF(hop);
    Py_DECREF(out);
    if (o == NULL)
        return NULL;
    PyObject *result = PyList_New(1);
    if (result == NULL) {
        Py_DECREF(o);
        return NULL;
    }
    PyList_SET_ITEM(result, 0, o);
    return result;
}

/* ---------------------------------------------------------------- ring_rx() */

/* The per-link state array (array('q'), Link.fast_state; link.py names the same indexes). */
enum {
    ST_RX_PACKETS, /* frames walked (all of them: forwarded here or handed to Python) */
    ST_RX_BYTES,   /* their wire bytes */
    ST_PARTIAL,    /* frames forwarded here that had a partial checksum */
    ST_TX_PACKETS, /* frames sent on this link (as egress) */
    ST_TX_BYTES,   /* their bytes without the virtio_net_hdr */
    ST_TX_ERRORS,  /* frames the kernel refused on this link */
    ST_FAST,       /* frames received on this link and forwarded here */
    ST_CB_ERRORS,  /* exceptions that escaped the Python callback (internal errors) */
    ST_HEAD,       /* in/out: the next slot of this link's ring to read */
    ST_ERRNO,      /* ST_ERRNO + e: send errors with errno e (e < ST_NERRNO, else ST_ERRNO + 0) */
    ST_NERRNO = 128,
    ST_LEN = ST_ERRNO + ST_NERRNO
};

#define TP2_HDR 32              /* sizeof(struct tpacket2_hdr): never written over */
#define TP_STATUS_USER 1
#define TP_STATUS_COPY 2
#define TP_STATUS_CSUMNOTREADY 8
#define TP_STATUS_VLAN_VALID 16
#define VNET_LEN 10             /* struct virtio_net_hdr */
#define L2_LEN (VNET_LEN + 14)  /* what goes in front of the IPv4 packet */
#define MAX_PORTS 8             /* egress links one call can send on */
#define BATCH 64                /* frames queued per egress before one sendmmsg */

/* An egress link seen during one call: its table entry, state array and send queue. */
struct port {
    PyObject *entry;  /* the egress dict's (neighbour fast dict, fd, state) tuple (a reference) */
    PyObject *neigh;  /* borrowed from entry: str(next hop) -> virtio_net_hdr + Ethernet header */
    int fd;
    Py_buffer view;
    int64_t *st;
    unsigned nq;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
};
static int use_mmsg = 1;

static void
count_tx_error(int64_t *st, int e)
{
    st[ST_TX_ERRORS]++;
    st[ST_ERRNO + (e > 0 && e < ST_NERRNO ? e : 0)]++;
}

static void
port_flush(struct port *pt)
{
    unsigned i = 0;
    while (i < pt->nq) {
        int r = sendmmsg(pt->fd, pt->msgs + i, pt->nq - i, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            count_tx_error(pt->st, errno); /* the first message failed: skip it, send the rest */
            i++;
            continue;
        }
        for (int k = 0; k < r; k++) {
            pt->st[ST_TX_PACKETS]++;
            pt->st[ST_TX_BYTES] += (int64_t)pt->iov[i + k].iov_len - VNET_LEN;
        }
        i += (unsigned)r;
    }
    pt->nq = 0;
}

/* Send the frame at l2 (len bytes, virtio_net_hdr first) on port pt: queued for sendmmsg (sent
 * with the port's next flush, before its slot goes back), or sent at once with PASSNAT_TX_SEND. */
static void
queue_frame(struct port *pt, unsigned char *l2, Py_ssize_t len)
{
    if (use_mmsg) {
        if (pt->nq == BATCH)
            port_flush(pt); /* (the frames it sends are released with the others at the end) */
        unsigned q = pt->nq++;
        pt->iov[q].iov_base = l2;
        pt->iov[q].iov_len = (size_t)len;
        memset(&pt->msgs[q], 0, sizeof(pt->msgs[q]));
        pt->msgs[q].msg_hdr.msg_iov = &pt->iov[q];
        pt->msgs[q].msg_hdr.msg_iovlen = 1;
        return;
    }
    ssize_t r;
    do {
        r = send(pt->fd, l2, (size_t)len, MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        count_tx_error(pt->st, errno);
    } else {
        pt->st[ST_TX_PACKETS]++;
        pt->st[ST_TX_BYTES] += len - VNET_LEN;
    }
}

struct call {
    unsigned char *ring;    /* the link being walked (copied from its struct rxlink) */
    Py_ssize_t frame_size;
    PyObject *ft;           /* its interface's fast table, or NULL: every frame to Python */
    long plain;
    int64_t *st;            /* its state */
    PyObject *egress;
    PyObject *now;
    long partial_max;
    PyObject *lean;         /* the lean path's state (LeanPath.c_state), or NULL */
    PyObject *send;         /* Daemon._send, for outputs this file cannot send itself */
    PyObject *error;        /* Daemon._lean_error(interface, exception) */
    PyObject *output;       /* the Output class */
    PyObject *name;         /* the interface being walked */
    struct port ports[MAX_PORTS];
    int nports;
    int python;             /* a frame of this call was not an established flow's: no sleeping here */
};

static inline uint32_t rd32(const unsigned char *b)
{
    uint32_t v;
    memcpy(&v, b, 4); /* host order */
    return v;
}

static inline unsigned rd16(const unsigned char *b)
{
    uint16_t v;
    memcpy(&v, b, 2);
    return v;
}

/* The egress port for entry (a table value), opened on first use; NULL: not usable. */
static struct port *
get_port(struct call *c, PyObject *entry)
{
    for (int i = 0; i < c->nports; i++)
        if (c->ports[i].entry == entry)
            return &c->ports[i];
    if (c->nports == MAX_PORTS || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3)
        return NULL;
    PyObject *neigh = PyTuple_GET_ITEM(entry, 0), *fd = PyTuple_GET_ITEM(entry, 1);
    if (!PyDict_CheckExact(neigh) || !PyLong_CheckExact(fd))
        return NULL;
    struct port *pt = &c->ports[c->nports];
    long v = PyLong_AsLong(fd);
    if (v < 0 || v > INT32_MAX) {
        PyErr_Clear();
        return NULL;
    }
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(entry, 2), &pt->view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return NULL;
    }
    if (pt->view.itemsize != 8 || pt->view.len < ST_LEN * 8 || pt->view.format == NULL
        || strcmp(pt->view.format, "q") != 0) {
        PyBuffer_Release(&pt->view);
        return NULL;
    }
    pt->entry = Py_NewRef(entry); /* kept for the call: Python code may run (callbacks, counters) */
    pt->neigh = neigh;
    pt->fd = (int)v;
    pt->st = (int64_t *)pt->view.buf;
    pt->nq = 0;
    c->nports++;
    return pt;
}

/* The cached link-layer header (a new reference to 24 bytes) for next hop nh on port pt, or NULL. */
static PyObject *
neighbour_header(struct port *pt, PyObject *nh)
{
    /* the daemon looks up str(next_hop): an exact str, so the dict never calls
     * the Addr subclass's Python-level __eq__ */
    PyObject *key = PyUnicode_CheckExact(nh) ? Py_NewRef(nh) : PyUnicode_FromObject(nh);
    if (key == NULL)
        return NULL;
    PyObject *hdr = PyDict_GetItemWithError(pt->neigh, key);
    Py_DECREF(key);
    if (hdr == NULL || !PyBytes_CheckExact(hdr) || PyBytes_GET_SIZE(hdr) != L2_LEN)
        return NULL;
    return Py_NewRef(hdr);
}

static void
flush_all(struct call *c)
{
    for (int i = 0; i < c->nports; i++)
        port_flush(&c->ports[i]);
}

/*
 * Forward the frame in the slot at ring offset off if it takes the fast path:
 * 1 when it was rewritten and queued (or sent), 0 when it is left to Python
 * untouched.  Every check comes before the first change, and the changes stay
 * inside this slot, after its tpacket2_hdr.  The same tests, in the same
 * order, as the daemon's Python loop (daemon.py _frame) and Router._handle.
 */
static int
forward_one(struct call *c, Py_ssize_t off)
{
    unsigned char *f = c->ring + off;
    uint32_t status = rd32(f), length = rd32(f + 4), snap = rd32(f + 8);
    unsigned mac = rd16(f + 12), net = rd16(f + 14);
    if (status & (TP_STATUS_COPY | TP_STATUS_VLAN_VALID))
        return 0; /* a super-frame (on the socket queue), or a VLAN tag: Python */
    if ((Py_ssize_t)mac + (Py_ssize_t)snap > c->frame_size || mac < TP2_HDR + VNET_LEN || net < mac + 14
        || net < TP2_HDR + L2_LEN || (Py_ssize_t)net + 28 > (Py_ssize_t)mac + (Py_ssize_t)snap)
        return 0;
    const unsigned char *eth = f + mac;
    unsigned char *p = f + net;
    if (eth[12] != 0x08 || eth[13] != 0x00)
        return 0; /* ARP, VLAN */
    Py_ssize_t n = ((Py_ssize_t)p[2] << 8) | p[3];
    if (n < 28 || (Py_ssize_t)net + n > (Py_ssize_t)mac + (Py_ssize_t)snap)
        return 0; /* Python would pass a packet whose length differs from its header's: slow path */
    int partial = 0;
    if ((status & TP_STATUS_CSUMNOTREADY) || (long)length > c->plain) {
        if (p[9] != 6 && p[9] != 17)
            return 0;
        /* the daemon's partial-checksum path: the same tests, in the same order */
        const unsigned char *v = eth - VNET_LEN;
        unsigned flags = v[0], gso = v[1];
        long cstart = (long)(v[6] | (v[7] << 8)), coff = (long)(v[8] | (v[9] << 8));
        long a = cstart - ((long)net - (long)mac);
        if (gso || length > snap || !(flags & 1) || !(20 <= a && a < n - coff - 1))
            return 0; /* super-frame, truncated, odd request: Python's _rx_special */
        if (!(n <= c->partial_max - 4)) {
            if (n > c->partial_max)
                return 0; /* the engine may fragment it: Python finishes the checksum */
            if (p[9] == 6) {
                if (a + 13 >= n || (p[a + 13] & 2))
                    return 0; /* a SYN near the MTU: the engine may add an MSS option */
            }
        }
        partial = 1;
    }
    struct rewrite rw;
    PyObject *sess = find_flow(c->ft, p, n, &rw);
    if (sess == NULL)
        goto python;
    PyObject *entry = PyDict_GetItemWithError(c->egress, PyTuple_GET_ITEM(rw.hop, H_OIF));
    if (entry == NULL)
        goto python;
    struct port *pt = get_port(c, entry);
    if (pt == NULL)
        goto python;
    PyObject *hdrobj = neighbour_header(pt, PyTuple_GET_ITEM(rw.hop, H_NH));
    if (hdrobj == NULL)
        goto python; /* next hop not resolved: ARP in Python */
    PyObject *hop = Py_NewRef(rw.hop); /* count_flow may run Python code (a filter counter's setter) */
    int counted = count_flow(sess, hop, c->now);
    Py_DECREF(hop);
    if (counted < 0) {
        Py_DECREF(hdrobj);
        goto python; /* the Python path does the same and reports the error */
    }
    const unsigned char *hdr = (const unsigned char *)PyBytes_AS_STRING(hdrobj);

    /* ---- committed: nothing below can fail ---- */
    apply_flow(p, &rw);
    unsigned char *l2 = p - L2_LEN; /* inside this slot: net >= TP2_HDR + L2_LEN */
    if (partial) {
        /* offload.to_partial: the kernel finishes the L4 checksum; the field holds
         * the pseudo-header sum and the virtio_net_hdr asks for the rest */
        unsigned tcp = p[9] == 6, co = tcp ? 36 : 26;
        uint32_t s = ((p[12] << 8) | p[13]) + ((p[14] << 8) | p[15]) + ((p[16] << 8) | p[17])
                     + ((p[18] << 8) | p[19]) + p[9] + (uint32_t)(n - 20);
        s = (s & 0xFFFF) + (s >> 16);
        s = (s & 0xFFFF) + (s >> 16);
        p[co] = (unsigned char)(s >> 8);
        p[co + 1] = (unsigned char)s;
        static const unsigned char vnet_tcp[VNET_LEN] = {1, 0, 0, 0, 0, 0, 34, 0, 16, 0};
        static const unsigned char vnet_udp[VNET_LEN] = {1, 0, 0, 0, 0, 0, 34, 0, 6, 0};
        memcpy(l2 + VNET_LEN, hdr + VNET_LEN, L2_LEN - VNET_LEN);
        memcpy(l2, tcp ? vnet_tcp : vnet_udp, VNET_LEN);
        c->st[ST_PARTIAL]++;
    } else {
        memcpy(l2, hdr, L2_LEN);
    }
    Py_DECREF(hdrobj);
    c->st[ST_FAST]++;
    queue_frame(pt, l2, n + L2_LEN);
    return 1;

python:
    PyErr_Clear(); /* a failed Python call before the commit: the Python path repeats it */
    return 0;
}

static inline uint32_t status_acquire(const unsigned char *f)
{
    return __atomic_load_n((const uint32_t *)f, __ATOMIC_ACQUIRE);
}

static inline void release(unsigned char *f)
{
    __atomic_store_n((uint32_t *)f, 0, __ATOMIC_RELEASE); /* TP_STATUS_KERNEL: the slot goes back */
}

#define MAX_LINKS 16
#define CHUNK 64                /* frames of one link before the next link's turn */

/* One receive ring in a ring_rx call (an entry of its links argument). */
struct rxlink {
    PyObject *name, *slow;
    Py_buffer ring, state;
    int have_ring, have_state;
    Py_ssize_t frame_nr, frame_size;
    long plain;
    int64_t *st;
    PyObject *ft;           /* a reference, or NULL */
};

/*
 * The frame at ring offset off, which the fast path did not take, through the
 * lean path (lean() above; passnat/nat/lean.py): 1 when it was handled (its
 * output queued here, or sent by the daemon's _send when its next hop needs
 * ARP), 0 when the lean path declined it (nothing changed: slow() takes it).
 * The same conditions as the daemon's _frame before it calls Router.handle,
 * which would reach the lean path for this frame: no super-frame, no partial
 * checksum, no VLAN tag, IPv4.
 */
static int
lean_one(struct call *c, Py_ssize_t off)
{
    unsigned char *f = c->ring + off;
    uint32_t status = rd32(f), length = rd32(f + 4), snap = rd32(f + 8);
    unsigned mac = rd16(f + 12), net = rd16(f + 14);
    if (status & (TP_STATUS_COPY | TP_STATUS_VLAN_VALID | TP_STATUS_CSUMNOTREADY) || (long)length > c->plain
        || (Py_ssize_t)mac + (Py_ssize_t)snap > c->frame_size || mac < TP2_HDR + VNET_LEN || net < mac + 14
        || net < TP2_HDR + L2_LEN || (Py_ssize_t)net + 28 > (Py_ssize_t)mac + (Py_ssize_t)snap)
        return 0;
    const unsigned char *eth = f + mac;
    unsigned char *p = f + net;
    Py_ssize_t n = ((Py_ssize_t)p[2] << 8) | p[3];
    if (eth[12] != 0x08 || eth[13] != 0x00 || n < 28 || (Py_ssize_t)net + n > (Py_ssize_t)mac + (Py_ssize_t)snap
        || n > 2048)
        return 0;
    unsigned char orig[2048]; /* the packet as received: what an ICMP error quotes if ARP fails */
    memcpy(orig, p, (size_t)n);
    PyObject *oif = NULL, *nh = NULL;
    Py_ssize_t len = n;
    int r = lean(c->lean, c->name, p, &len, c->frame_size - (Py_ssize_t)net, c->now, &oif, &nh);
    if (r == 0)
        return 0;
    if (r == 2)
        return 1; /* refused (no port left): nothing to send */
    if (r < 0) {
        /* as Router.handle raising in _frame: the frame is dropped, the error counted and logged */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *eargs[2] = {c->name, value ? value : Py_None};
        PyObject *res = PyObject_Vectorcall(c->error, eargs, 2, NULL);
        if (res == NULL) {
            PyErr_Clear();
            c->st[ST_CB_ERRORS]++;
        }
        Py_XDECREF(res);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return 1;
    }
    PyObject *entry = PyDict_GetItemWithError(c->egress, oif);
    struct port *pt = entry ? get_port(c, entry) : NULL;
    PyObject *hdrobj = pt ? neighbour_header(pt, nh) : NULL;
    PyErr_Clear();
    if (hdrobj != NULL) {
        unsigned char *l2 = p - L2_LEN;
        memcpy(l2, PyBytes_AS_STRING(hdrobj), L2_LEN);
        Py_DECREF(hdrobj);
        queue_frame(pt, l2, len + L2_LEN);
    } else {
        /* the next hop needs ARP: the daemon's _send queues it, after what is queued here */
        flush_all(c);
        PyObject *pkt = PyBytes_FromStringAndSize((const char *)p, len);
        PyObject *in = PyBytes_FromStringAndSize((const char *)orig, n);
        PyObject *oargs[3] = {oif, nh, pkt};
        PyObject *o = pkt && in ? PyObject_Vectorcall(c->output, oargs, 3, NULL) : NULL;
        PyObject *outs = o ? PyList_New(1) : NULL;
        if (outs != NULL)
            PyList_SET_ITEM(outs, 0, Py_NewRef(o));
        PyObject *sargs[4] = {outs, c->name, in, c->now};
        PyObject *res = outs ? PyObject_Vectorcall(c->send, sargs, 4, NULL) : NULL;
        if (res == NULL) {
            PyErr_Clear();
            c->st[ST_CB_ERRORS]++;
        }
        Py_XDECREF(res);
        Py_XDECREF(outs);
        Py_XDECREF(o);
        Py_XDECREF(pkt);
        Py_XDECREF(in);
    }
    Py_DECREF(oif);
    Py_DECREF(nh);
    return 1;
}

/*
 * Walk at most max frames of link L from its head: 1 frame more per slot handed
 * over, established flows forwarded here, the others to L->slow(offset, now).
 * Everything queued is sent and every walked slot given back before it returns.
 * Returns the frames walked.
 */
static Py_ssize_t
walk(struct call *c, struct rxlink *L, Py_ssize_t max)
{
    c->ring = (unsigned char *)L->ring.buf;
    c->frame_size = L->frame_size;
    c->ft = L->ft;
    c->plain = L->plain;
    c->st = L->st;
    c->name = L->name;
    Py_ssize_t head = (Py_ssize_t)L->st[ST_HEAD], nr = L->frame_nr, size = L->frame_size;
    Py_ssize_t pending = head, npending = 0, done = 0;
    if (max > nr)
        max = nr; /* a frame forwarded here stays the reader's until the walk ends: never come round to it */
    for (; done < max; done++) {
        unsigned char *f = c->ring + head * size;
        if (!(status_acquire(f) & TP_STATUS_USER))
            break;
        c->st[ST_RX_PACKETS]++;
        c->st[ST_RX_BYTES] += rd32(f + 4);
        if (c->ft != NULL && forward_one(c, head * size)) {
            npending++;
        } else if (c->ft != NULL && c->lean != NULL && lean_one(c, head * size)) {
            npending++; /* its output (if queued here) is sent with the others, before the slot goes back */
            c->python = 1;
        } else {
            c->python = 1;
            flush_all(c);
            for (; npending; npending--, pending = (pending + 1) % nr)
                release(c->ring + pending * size);
            PyObject *cargs[2] = {PyLong_FromSsize_t(head * size), c->now};
            PyObject *r = cargs[0] ? PyObject_Vectorcall(L->slow, cargs, 2, NULL) : NULL;
            Py_XDECREF(cargs[0]);
            if (r == NULL) {
                PyErr_Clear(); /* the daemon's handler counts its own errors; this is the last guard */
                c->st[ST_CB_ERRORS]++;
            }
            Py_XDECREF(r);
            release(f);
            pending = (head + 1) % nr;
        }
        head = (head + 1) % nr;
    }
    flush_all(c);
    for (; npending; npending--, pending = (pending + 1) % nr)
        release(c->ring + pending * size);
    L->st[ST_HEAD] = head;
    return done;
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define MAX_POLLFDS 64

/* What ring_rx may sleep on when the rings are idle (its 13th argument). */
struct sleep {
    int64_t until;          /* CLOCK_MONOTONIC ns: return by then (0: never sleep) */
    struct pollfd fds[MAX_POLLFDS];
    int nfds;
    int rings[MAX_LINKS];   /* which of those descriptors are the rings */
    int nrings;
};

/*
 * Sleep in poll() on every descriptor the daemon watches, at most until
 * s->until.  1: only rings became readable (walk them again, here); 0: a
 * timeout, a signal, an error or any other descriptor (the daemon's turn).
 */
static int
sleep_on_rings(struct sleep *s, int64_t now)
{
    int64_t left = s->until - now;
    if (left <= 0)
        return 0;
    for (int i = 0; i < s->nfds; i++)
        s->fds[i].revents = 0;
    int ms = left > 1000000000LL ? 1000 : (int)((left + 999999) / 1000000);
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = poll(s->fds, (nfds_t)s->nfds, ms);
    Py_END_ALLOW_THREADS
    if (r <= 0)
        return 0;
    int rings = 0;
    for (int i = 0; i < s->nfds; i++) {
        if (!s->fds[i].revents)
            continue;
        int ring = 0;
        for (int k = 0; k < s->nrings && !ring; k++)
            ring = s->fds[i].fd == s->rings[k];
        if (!ring || (s->fds[i].revents & ~POLLIN))
            return 0;
        rings++;
    }
    return rings > 0;
}

/* Parse ring_rx's sleep argument (None, or (until_ns, pollfds, ring_fds)); -1 with an exception. */
static int
parse_sleep(PyObject *arg, struct sleep *s)
{
    s->until = 0;
    s->nfds = s->nrings = 0;
    if (arg == Py_None)
        return 0;
    if (!PyTuple_CheckExact(arg) || PyTuple_GET_SIZE(arg) != 3 || !PyLong_CheckExact(PyTuple_GET_ITEM(arg, 0))
        || !PyBytes_CheckExact(PyTuple_GET_ITEM(arg, 1)) || !PyTuple_CheckExact(PyTuple_GET_ITEM(arg, 2))) {
        PyErr_SetString(PyExc_TypeError, "ring_rx(): sleep must be None or (until_ns, pollfds bytes, ring fds)");
        return -1;
    }
    long long until = PyLong_AsLongLong(PyTuple_GET_ITEM(arg, 0));
    if (until == -1 && PyErr_Occurred())
        return -1;
    PyObject *fds = PyTuple_GET_ITEM(arg, 1), *rings = PyTuple_GET_ITEM(arg, 2);
    Py_ssize_t len = PyBytes_GET_SIZE(fds), nr = PyTuple_GET_SIZE(rings);
    if (len % (Py_ssize_t)sizeof(struct pollfd) || nr > MAX_LINKS) {
        PyErr_SetString(PyExc_ValueError, "ring_rx(): pollfds must be whole struct pollfd, at most 16 ring fds");
        return -1;
    }
    for (Py_ssize_t k = 0; k < nr; k++) {
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(rings, k));
        if (fd == -1 && PyErr_Occurred())
            return -1;
        s->rings[k] = (int)fd;
    }
    if (len / (Py_ssize_t)sizeof(struct pollfd) > MAX_POLLFDS || nr == 0)
        return 0; /* too many to copy here: never sleep in this call (the daemon's poll does) */
    s->nfds = (int)(len / (Py_ssize_t)sizeof(struct pollfd));
    s->nrings = (int)nr;
    memcpy(s->fds, PyBytes_AS_STRING(fds), (size_t)len);
    s->until = until;
    return 0;
}

static void
release_links(struct rxlink *links, int n)
{
    for (int i = 0; i < n; i++) {
        if (links[i].have_state)
            PyBuffer_Release(&links[i].state);
        if (links[i].have_ring)
            PyBuffer_Release(&links[i].ring);
        Py_XDECREF(links[i].ft);
    }
}

/*
 * ring_rx(links, budget, now, fast, fast_tables, egress, partial_max, spin_ns, lean, send, error, Output
 *         [, sleep]) -> frames walked
 *
 *   links        a tuple of (interface, ring, frame_nr, frame_size, plain, state, slow) per link:
 *                  ring        the mmap'ed TPACKET_V2 ring (frame_nr slots of frame_size bytes)
 *                  plain       largest frame without a partial checksum request (link MTU + 14)
 *                  state       that link's array('q') (ST_*; ST_HEAD: the next slot to read)
 *                  slow        slow(offset, now): the daemon's Python handling of a frame
 *   budget       at most this many frames in all
 *   now          the engine's clock for this call (stored as session.last)
 *   fast         False: every frame goes to slow() (timers are due, or a capture is written)
 *   fast_tables  Router.fast_tables
 *   egress       interface name -> (neighbour fast dict, send socket fd, that link's state)
 *   partial_max  Daemon.partial_max
 *   spin_ns      after frames were walked and none is waiting, keep looking this long
 *                before returning (0: return at once)
 *   lean         the lean path's state (LeanPath.c_state), or None: a frame the fast path does
 *                not take goes through lean() before slow() (the first packet of a plain NAPT
 *                flow); its output is sent from here, or by send(outputs, interface, packet,
 *                now) (Daemon._send) when its next hop needs ARP; error(interface, exception)
 *                reports an exception it raised (Daemon._lean_error)
 *   sleep        (optional) None, or (until_ns, pollfds, ring_fds): when the spin found
 *                nothing and every frame of this call was an established flow's, sleep in
 *                poll() on pollfds (every descriptor the daemon watches, as struct pollfd
 *                bytes) until CLOCK_MONOTONIC until_ns instead of returning; when only
 *                ring_fds became readable, read the clock (the daemon's time.monotonic) as
 *                the new now and walk again.  Any other descriptor, a signal, the time or a
 *                wake-up for a slot that is not ours returns (Daemon._drain_all)
 *
 * The links take turns, CHUNK frames each, until none has a frame waiting (and
 * the spin found none) or the budget is spent.  In each ring, the slots the
 * kernel handed over are walked in order from the link's head: a frame of an
 * established TCP/UDP flow or ICMP echo whose next hop is resolved is
 * rewritten in its slot and queued for sendmmsg on its egress link; any other
 * frame goes to that link's slow() -- after everything queued before it was
 * sent, so frames leave in ring order.  A slot goes back to the kernel once its
 * frame was sent or handled.  Raises only for bad arguments, before any slot is
 * touched.
 */
static PyObject *
ring_rx(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12 && nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "ring_rx() takes 12 or 13 arguments");
        return NULL;
    }
    PyObject *lks = args[0];
    struct call c;
    c.nports = 0;
    c.python = 0;
    struct sleep sl;
    if (parse_sleep(nargs == 13 ? args[12] : Py_None, &sl) < 0)
        return NULL;
    PyObject *now_own = NULL; /* the clock read after a sleep here */
    c.now = args[2];
    c.egress = args[5];
    c.lean = args[8] == Py_None ? NULL : args[8];
    c.send = args[9];
    c.error = args[10];
    c.output = args[11];
    if ((c.lean != NULL && (!PyTuple_CheckExact(c.lean) || PyTuple_GET_SIZE(c.lean) != L_LEN))
        || !PyCallable_Check(c.send) || !PyCallable_Check(c.error) || !PyCallable_Check(c.output)) {
        PyErr_SetString(PyExc_TypeError, "ring_rx(): lean must be the lean path's state or None, send, error "
                                         "and Output callables");
        return NULL;
    }
    if (!PyTuple_CheckExact(lks) || PyTuple_GET_SIZE(lks) > MAX_LINKS || !PyDict_CheckExact(args[4])
        || !PyDict_CheckExact(c.egress)) {
        PyErr_SetString(PyExc_TypeError, "ring_rx(): links must be a tuple (at most 16), fast_tables and "
                                         "egress dicts");
        return NULL;
    }
    Py_ssize_t budget = PyLong_AsSsize_t(args[1]);
    int fast = PyObject_IsTrue(args[3]);
    c.partial_max = PyLong_AsLong(args[6]);
    long long spin_ns = PyLong_AsLongLong(args[7]);
    if (PyErr_Occurred() || fast < 0)
        return NULL;
    int n = (int)PyTuple_GET_SIZE(lks);
    struct rxlink links[MAX_LINKS];
    memset(links, 0, sizeof links);
    for (int i = 0; i < n; i++) {
        struct rxlink *L = &links[i];
        PyObject *e = PyTuple_GET_ITEM(lks, i);
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 7 || !PyCallable_Check(PyTuple_GET_ITEM(e, 6))) {
            PyErr_SetString(PyExc_TypeError, "ring_rx(): a link is (interface, ring, frame_nr, frame_size, "
                                             "plain, state, slow)");
            goto fail;
        }
        L->name = PyTuple_GET_ITEM(e, 0);
        L->slow = PyTuple_GET_ITEM(e, 6);
        L->frame_nr = PyLong_AsSsize_t(PyTuple_GET_ITEM(e, 2));
        L->frame_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(e, 3));
        L->plain = PyLong_AsLong(PyTuple_GET_ITEM(e, 4));
        if (PyErr_Occurred())
            goto fail;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(e, 1), &L->ring, PyBUF_WRITABLE) < 0)
            goto fail;
        L->have_ring = 1;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(e, 5), &L->state, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
            goto fail;
        L->have_state = 1;
        L->st = (int64_t *)L->state.buf;
        if (L->frame_nr <= 0 || L->frame_size < 2 * TP2_HDR || L->frame_size % 16
            || L->frame_nr > L->ring.len / L->frame_size || L->state.itemsize != 8
            || L->state.len < ST_LEN * 8 || L->state.format == NULL || strcmp(L->state.format, "q") != 0
            || L->st[ST_HEAD] < 0 || L->st[ST_HEAD] >= L->frame_nr) {
            PyErr_SetString(PyExc_ValueError, "ring_rx(): ring geometry, head or state array out of range");
            goto fail;
        }
        if (fast && session_type != NULL) {
            L->ft = Py_XNewRef(PyDict_GetItemWithError(args[4], L->name));
            PyErr_Clear();
        }
    }
    Py_ssize_t total = 0;
    int64_t spin_from = 0;
    int woke = 0;
    while (total < budget) {
        Py_ssize_t round = 0;
        for (int i = 0; i < n && total < budget; i++) {
            Py_ssize_t chunk = budget - total < CHUNK ? budget - total : CHUNK;
            Py_ssize_t w = walk(&c, &links[i], chunk);
            round += w;
            total += w;
        }
        if (round) {
            spin_from = 0;
            woke = 0;
            continue;
        }
        if (total == 0 || woke)
            break; /* nothing at all, or poll() woke us for a slot that is not ours: the daemon's turn */
        int64_t t = mono_ns();
        if (spin_ns > 0) {
            if (spin_from == 0)
                spin_from = t;
            if (t - spin_from < spin_ns) {
                cpu_relax();
                continue;
            }
        }
        /* Idle after established flows only: sleep here on every descriptor rather than
           return to the daemon's poll; the frame that wakes us is walked without a turn of
           the Python loop in between (the daemon's own sleep when sl.until is 0). */
        if (c.python || sl.until == 0 || !sleep_on_rings(&sl, t))
            break;
        t = mono_ns();
        if (t >= sl.until)
            break;
        PyObject *f = PyFloat_FromDouble((double)t / 1e9); /* time.monotonic(), as the daemon's clock */
        if (f == NULL) {
            PyErr_Clear();
            break;
        }
        Py_XSETREF(now_own, f);
        c.now = f;
        woke = 1;
        spin_from = 0;
    }
    for (int i = 0; i < c.nports; i++) {
        PyBuffer_Release(&c.ports[i].view);
        Py_DECREF(c.ports[i].entry);
    }
    release_links(links, n);
    Py_XDECREF(now_own);
    return PyLong_FromSsize_t(total);

fail:
    release_links(links, n);
    return NULL;
}

static PyMethodDef methods[] = {
    {"untrack", (PyCFunction)untrack, METH_O,
     "untrack(obj) -> None: take obj out of the cycle collector's lists (it holds no cycles)"},
    {"configure", (PyCFunction)configure, METH_O,
     "configure(Session) -> None: where the Session class keeps the slots the fast path reads"},
    {"fast", (PyCFunction)(void (*)(void))fast, METH_FASTCALL,
     "fast(tables, interface, packet, now, Output[, lean_state]) -> [Output] or None (take the slow path)"},
    {"ring_rx", (PyCFunction)(void (*)(void))ring_rx, METH_FASTCALL,
     "ring_rx(links, budget, now, fast, fast_tables, egress, partial_max, spin_ns, lean, send, error, Output"
     "[, sleep])\n"
     "-> frames walked:\n"
     "walk TPACKET_V2 rings in turn, forwarding established flows, handing every other frame to\n"
     "its link's slow(offset, now)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "passnat._speedups",
    "The established-flow fast path in C: per packet for the engine, per ring walk for the daemon "
    "(see passnat/nat/router.py and passnat/io/daemon.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_count = PyUnicode_InternFromString("count");
    str_slow_path_packets = PyUnicode_InternFromString("slow_path_packets");
    str_tcp_mss_clamped = PyUnicode_InternFromString("tcp_mss_clamped");
    str_clock = PyUnicode_InternFromString("_clock");
    str_out_port = PyUnicode_InternFromString("out_port");
    str_no_port = PyUnicode_InternFromString("no_port");
    str_nat_no_free_port = PyUnicode_InternFromString("nat_no_free_port");
    str_free = PyUnicode_InternFromString("_free");
    msg_no_port_tcp = PyUnicode_FromString("NAPT: no free 6 port on the global address");
    msg_no_port_udp = PyUnicode_FromString("NAPT: no free 17 port on the global address");
    kw_keep = Py_BuildValue("(s)", "keep");
    int_0 = PyLong_FromLong(0);
    int_1 = PyLong_FromLong(1);
    int_6 = PyLong_FromLong(6);
    int_17 = PyLong_FromLong(17);
    int_1023 = PyLong_FromLong(1023);
    int_1024 = PyLong_FromLong(1024);
    int_65535 = PyLong_FromLong(65535);
    if (!str_slow_path_packets || !str_tcp_mss_clamped || !str_clock || !str_out_port || !str_no_port
        || !str_nat_no_free_port || !str_free || !msg_no_port_tcp || !msg_no_port_udp || !kw_keep
        || !int_0
        || !int_1 || !int_6 || !int_17 || !int_1023 || !int_1024 || !int_65535)
        return NULL;
    int_one = PyLong_FromLong(1);
    use_mmsg = getenv("PASSNAT_TX_SEND") == NULL; /* PASSNAT_TX_SEND=1: one send() per frame (to compare) */
    if (str_count == NULL || int_one == NULL)
        return NULL;
    return PyModule_Create(&module);
}
