/*
 * passnat._speedups: the established-flow fast path in C (optional).
 *
 * It does exactly what the pure-Python fast path in passnat/nat/router.py
 * does -- one dict lookup of the 12 address/port bytes, then the flow's
 * precomputed rewrite with RFC 1624 incremental checksums -- and returns None
 * whenever the packet needs anything else, so the Python slow path stays the
 * one place with logic.  The flow tuple layout is passnat/nat/flow.py's F_*.
 * If this module cannot be built, passnat runs the same path in Python
 * (PASSNAT_PURE=1 forces that; tests check both give identical bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { F_SESS, F_ADDR, F_PORT, F_IPD, F_L4D, F_OIF, F_NH, F_MTU, F_FC, F_SLOW, F_LEN };

static PyObject *str_last;
static PyObject *str_count;
static PyObject *int_one;

static inline unsigned fold_apply(unsigned csum, unsigned delta)
{
    unsigned s = (csum ^ 0xFFFFu) + delta;
    s = (s & 0xFFFFu) + (s >> 16);
    return s ^ 0xFFFFu;
}

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
    if (!PyTuple_CheckExact(ft) || PyTuple_GET_SIZE(ft) != 2)
        Py_RETURN_NONE;
    int outbound = PyObject_IsTrue(PyTuple_GET_ITEM(ft, 0));
    PyObject *lst = PyTuple_GET_ITEM(ft, 1);
    Py_ssize_t n = PyBytes_GET_SIZE(packet);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    if (n < 28 || p[0] != 0x45 || !PyList_CheckExact(lst) || PyList_GET_SIZE(lst) != 256)
        Py_RETURN_NONE;
    unsigned proto = p[9];
    PyObject *tbl = PyList_GET_ITEM(lst, proto);
    if (tbl == Py_None || !PyDict_CheckExact(tbl))
        Py_RETURN_NONE;
    PyObject *key = PyBytes_FromStringAndSize((const char *)p + 12, 12);
    if (key == NULL)
        return NULL;
    PyObject *fl = PyDict_GetItemWithError(tbl, key);
    Py_DECREF(key);
    if (fl == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(fl) || PyTuple_GET_SIZE(fl) != F_LEN || PyTuple_GET_ITEM(fl, F_SLOW) != Py_False)
        Py_RETURN_NONE;
    unsigned ttl = p[8];
    unsigned frag = ((unsigned)p[6] << 8) | p[7];
    unsigned totlen = ((unsigned)p[2] << 8) | p[3];
    long mtu = PyLong_AsLong(PyTuple_GET_ITEM(fl, F_MTU));
    if (ttl <= 1 || (frag & 0x3FFF) || (Py_ssize_t)totlen != n || n > mtu)
        Py_RETURN_NONE;
    if (proto == 6) {
        if (n < 40 || (p[33] & 0x07))
            Py_RETURN_NONE;
    } else if (proto != 17) {
        Py_RETURN_NONE;
    }
    unsigned long addr = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(fl, F_ADDR));
    long port = PyLong_AsLong(PyTuple_GET_ITEM(fl, F_PORT));
    long ipd = PyLong_AsLong(PyTuple_GET_ITEM(fl, F_IPD));
    long l4d = PyLong_AsLong(PyTuple_GET_ITEM(fl, F_L4D));
    if (PyErr_Occurred())
        return NULL;

    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    unsigned char *b = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(b, p, (size_t)n);
    b[8] = (unsigned char)(ttl - 1);
    unsigned c = fold_apply(((unsigned)p[10] << 8) | p[11], (unsigned)ipd);
    b[10] = (unsigned char)(c >> 8);
    b[11] = (unsigned char)c;
    int aoff = outbound ? 12 : 16, poff = outbound ? 20 : 22, co = proto == 6 ? 36 : 26;
    b[aoff] = (unsigned char)(addr >> 24);
    b[aoff + 1] = (unsigned char)(addr >> 16);
    b[aoff + 2] = (unsigned char)(addr >> 8);
    b[aoff + 3] = (unsigned char)addr;
    b[poff] = (unsigned char)(port >> 8);
    b[poff + 1] = (unsigned char)port;
    unsigned old = ((unsigned)p[co] << 8) | p[co + 1];
    if (old || proto == 6) {
        unsigned c4 = fold_apply(old, (unsigned)l4d);
        if (c4 == 0 && proto == 17)
            c4 = 0xFFFF; /* RFC 768: a computed zero is sent as all ones */
        b[co] = (unsigned char)(c4 >> 8);
        b[co + 1] = (unsigned char)c4;
    }

    if (PyObject_SetAttr(PyTuple_GET_ITEM(fl, F_SESS), str_last, now) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *fc = PyTuple_GET_ITEM(fl, F_FC);
    if (fc != Py_None) {
        PyObject *cnt = PyObject_GetAttr(fc, str_count);
        PyObject *inc = cnt ? PyNumber_Add(cnt, int_one) : NULL;
        Py_XDECREF(cnt);
        if (inc == NULL || PyObject_SetAttr(fc, str_count, inc) < 0) {
            Py_XDECREF(inc);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(inc);
    }
    PyObject *callargs[3] = {PyTuple_GET_ITEM(fl, F_OIF), PyTuple_GET_ITEM(fl, F_NH), out};
    PyObject *o = PyObject_Vectorcall(output, callargs, 3, NULL);
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

static PyMethodDef methods[] = {
    {"fast", (PyCFunction)(void (*)(void))fast, METH_FASTCALL,
     "fast(tables, interface, packet, now, Output) -> [Output] or None (take the slow path)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "passnat._speedups",
    "The established-flow fast path in C (see passnat/nat/router.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_last = PyUnicode_InternFromString("last");
    str_count = PyUnicode_InternFromString("count");
    int_one = PyLong_FromLong(1);
    if (str_last == NULL || str_count == NULL || int_one == NULL)
        return NULL;
    return PyModule_Create(&module);
}
