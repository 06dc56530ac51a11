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
#include <sys/socket.h>
#include <time.h>

/* A session's hop tuple (passnat/nat/flow.py H_*). */
enum { H_OIF, H_NH, H_MTU, H_SLOW, H_FC, H_LEN };

static PyObject *str_count;
static PyObject *int_one;

/*
 * The Session class (passnat/nat/session.py) and where its slots live:
 * configure(Session) reads the offsets from the class's member descriptors,
 * so C reads and writes them as CPython's own slot descriptors do.
 */
static PyTypeObject *session_type;
enum { S_LAST, S_IN_ADDR, S_IN_PORT, S_OUT_ADDR, S_OUT_PORT,
       S_O_IPD, S_O_L4D, S_O_HOP, S_I_IPD, S_I_L4D, S_I_HOP, S_NSLOTS };
static const char *const slot_names[S_NSLOTS] = {
    "last", "in_addr", "in_port", "out_addr", "out_port",
    "o_ipd", "o_l4d", "o_hop", "i_ipd", "i_l4d", "i_hop",
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
        if (n < 40 || (p[33] & 0x07))
            return NULL;
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

/* ------------------------------------------------------------------ fast() */

/* fast(fast_tables, interface, packet, now, Output) -> [Output] | None */
static PyObject *
fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fast() takes 5 arguments");
        return NULL;
    }
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
    PyObject *lean;         /* Router.lean.first, or NULL */
    PyObject *send;         /* Daemon._send, for outputs this file cannot send itself */
    PyObject *name;         /* the interface being walked */
    struct port ports[MAX_PORTS];
    int nports;
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
 * lean path (passnat/nat/lean.py: the first packet of a plain NAPT flow):
 * 1 when it was handled (its output queued here, or sent by the daemon's
 * _send), 0 when the lean path declined it (nothing changed: slow() takes it).
 * The same conditions as the daemon's _frame before it calls Router.handle,
 * which would reach the lean path for this frame: no super-frame, no partial
 * checksum, IPv4.
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
    if (eth[12] != 0x08 || eth[13] != 0x00 || n < 28 || (Py_ssize_t)net + n > (Py_ssize_t)mac + (Py_ssize_t)snap)
        return 0;
    PyObject *pkt = PyBytes_FromStringAndSize((const char *)p, n);
    if (pkt == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *args[3] = {c->name, pkt, c->now};
    PyObject *outs = PyObject_Vectorcall(c->lean, args, 3, NULL);
    if (outs == NULL) {
        /* as Router.handle raising in _frame: the frame is dropped, an internal error counted */
        Py_DECREF(pkt);
        PyErr_Clear();
        c->st[ST_CB_ERRORS]++;
        return 1;
    }
    if (outs == Py_None) {
        Py_DECREF(outs);
        Py_DECREF(pkt);
        return 0;
    }
    int done = 0;
    if (PyList_CheckExact(outs) && PyList_GET_SIZE(outs) == 1) {
        /* the usual case: one packet, to a resolved next hop: into this slot and queued */
        PyObject *o = PyList_GET_ITEM(outs, 0);
        PyObject *oif = PyObject_GetAttrString(o, "interface"), *nh = PyObject_GetAttrString(o, "next_hop");
        PyObject *opkt = PyObject_GetAttrString(o, "packet");
        PyErr_Clear();
        if (oif && nh && opkt && PyBytes_CheckExact(opkt)) {
            Py_ssize_t on = PyBytes_GET_SIZE(opkt);
            PyObject *entry = PyDict_GetItemWithError(c->egress, oif);
            struct port *pt = entry ? get_port(c, entry) : NULL;
            PyObject *hdrobj = pt ? neighbour_header(pt, nh) : NULL;
            PyErr_Clear();
            if (hdrobj != NULL && (Py_ssize_t)net + on <= c->frame_size) {
                memcpy(p, PyBytes_AS_STRING(opkt), (size_t)on);
                unsigned char *l2 = p - L2_LEN;
                memcpy(l2, PyBytes_AS_STRING(hdrobj), L2_LEN);
                queue_frame(pt, l2, on + L2_LEN);
                done = 1;
            }
            Py_XDECREF(hdrobj);
        }
        Py_XDECREF(oif);
        Py_XDECREF(nh);
        Py_XDECREF(opkt);
    }
    if (!done) {
        /* anything else (ARP to resolve, several packets): the daemon's _send, after what is queued */
        flush_all(c);
        PyObject *sargs[4] = {outs, c->name, pkt, c->now};
        PyObject *r = PyObject_Vectorcall(c->send, sargs, 4, NULL);
        if (r == NULL) {
            PyErr_Clear();
            c->st[ST_CB_ERRORS]++;
        }
        Py_XDECREF(r);
    }
    Py_DECREF(outs);
    Py_DECREF(pkt);
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
        } else {
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
 * ring_rx(links, budget, now, fast, fast_tables, egress, partial_max, spin_ns, lean, send) -> frames walked
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
 *   lean         Router.lean.first, or None: a frame the fast path does not take is offered
 *                to it before slow() (the first packet of a plain NAPT flow); its output is
 *                sent from here, or by send(outputs, interface, packet, now) (Daemon._send)
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
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "ring_rx() takes 10 arguments");
        return NULL;
    }
    PyObject *lks = args[0];
    struct call c;
    c.nports = 0;
    c.now = args[2];
    c.egress = args[5];
    c.lean = args[8] == Py_None ? NULL : args[8];
    c.send = args[9];
    if ((c.lean != NULL && !PyCallable_Check(c.lean)) || !PyCallable_Check(c.send)) {
        PyErr_SetString(PyExc_TypeError, "ring_rx(): lean must be a callable or None, send a callable");
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
            continue;
        }
        if (spin_ns <= 0 || total == 0)
            break;
        int64_t t = mono_ns();
        if (spin_from == 0)
            spin_from = t;
        else if (t - spin_from >= spin_ns)
            break;
        cpu_relax();
    }
    for (int i = 0; i < c.nports; i++) {
        PyBuffer_Release(&c.ports[i].view);
        Py_DECREF(c.ports[i].entry);
    }
    release_links(links, n);
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
     "fast(tables, interface, packet, now, Output) -> [Output] or None (take the slow path)"},
    {"ring_rx", (PyCFunction)(void (*)(void))ring_rx, METH_FASTCALL,
     "ring_rx(links, budget, now, fast, fast_tables, egress, partial_max, spin_ns, lean, send) -> frames walked:\n"
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
    int_one = PyLong_FromLong(1);
    use_mmsg = getenv("PASSNAT_TX_SEND") == NULL; /* PASSNAT_TX_SEND=1: one send() per frame (to compare) */
    if (str_count == NULL || int_one == NULL)
        return NULL;
    return PyModule_Create(&module);
}
