/* The Span messages of an OTLP export request, written in C for the spans of the common
   shape (see tienda_platform.otlp, whose SpanEncoder.span writes the same bytes in Python).

   encode_spans(spans, lean_type, fallback) returns the `spans` fields of a ScopeSpans
   message: for each span, the tag 0x12, the length of its Span message, and the message.
   A span whose type is exactly lean_type (tienda_platform.spans.LeanSpan) is written here
   when its shape is the common one: attributes in a plain dict (str keys; str, bool, int
   and float values), no events, no links, no trace state. Any other span, and any value
   this code does not take (an int beyond 64 bits, say), goes to fallback(span), which
   returns the Span message's bytes: tienda_platform.otlp writes those in Python.

   The fields are read from the span's attributes (_context, _parent, _name, _kind,
   _start_time, _end_time, _attributes, _events, _links, _status), the names the Python
   encoder reads too. A SpanContext is the tuple (trace_id, span_id, is_remote, trace_flags,
   trace_state, is_valid); SpanKind and StatusCode are enums whose _value_ is their number.

   Each field starts with its tag, (field number << 3) | wire type: 0x0a trace_id, 0x12
   span_id, 0x22 parent_span_id, 0x2a name, 0x30 kind, 0x39 and 0x41 the start and end
   times (fixed64), 0x4a attributes, 0x7a status (0x12 message, 0x18 code) and 0x85 0x01
   flags (fixed32). A KeyValue is 0x0a key, 0x12 value; an AnyValue is 0x0a string, 0x10
   bool, 0x18 int (a varint of the two's complement) or 0x21 double. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
} Buffer;

static int
reserve(Buffer *buffer, size_t more)
{
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    size_t capacity = buffer->capacity ? buffer->capacity : 4096;
    while (capacity < buffer->size + more) {
        capacity *= 2;
    }
    unsigned char *data = PyMem_Realloc(buffer->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

/* The callers reserve first: these write without checking. */

static inline void
put_byte(Buffer *buffer, unsigned char byte)
{
    buffer->data[buffer->size++] = byte;
}

static inline void
put_bytes(Buffer *buffer, const void *bytes, size_t length)
{
    memcpy(buffer->data + buffer->size, bytes, length);
    buffer->size += length;
}

static inline size_t
varint_size(uint64_t n)
{
    size_t size = 1;
    while (n >= 128) {
        n >>= 7;
        size++;
    }
    return size;
}

static inline void
put_varint(Buffer *buffer, uint64_t n)
{
    while (n >= 128) {
        put_byte(buffer, (unsigned char)((n & 0x7F) | 0x80));
        n >>= 7;
    }
    put_byte(buffer, (unsigned char)n);
}

static inline void
put_fixed64(Buffer *buffer, uint64_t n)
{
    for (int i = 0; i < 8; i++) {
        put_byte(buffer, (unsigned char)(n >> (8 * i)));
    }
}

static inline void
put_fixed32(Buffer *buffer, uint32_t n)
{
    for (int i = 0; i < 4; i++) {
        put_byte(buffer, (unsigned char)(n >> (8 * i)));
    }
}

static inline void
put_big_endian64(Buffer *buffer, uint64_t n)
{
    for (int i = 7; i >= 0; i--) {
        put_byte(buffer, (unsigned char)(n >> (8 * i)));
    }
}

/* A length-delimited field of a string's UTF-8 bytes. */
static int
put_text(Buffer *buffer, unsigned char tag, PyObject *text)
{
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 == NULL) {
        return -1;
    }
    if (reserve(buffer, 1 + 10 + (size_t)length) < 0) {
        return -1;
    }
    put_byte(buffer, tag);
    put_varint(buffer, (uint64_t)length);
    put_bytes(buffer, utf8, (size_t)length);
    return 0;
}

/* What one call has worked out already, by object: the spans of a batch share their
   traces' ids and trace states (a child's context holds its parent's objects), and the spans
   passed in keep them alive until the call returns. */
#define MEMO_SIZE 64
typedef struct {
    PyObject *trace_ids[MEMO_SIZE];
    unsigned char trace_id_bytes[MEMO_SIZE][16];
    PyObject *empty_trace_state; /* the last trace state found empty */
} Memo;

/* Interned attribute names, set at import. */
static PyObject *s_context, *s_parent, *s_name, *s_kind, *s_start_time, *s_end_time,
    *s_attributes, *s_events, *s_links, *s_status, *s_status_code, *s_description, *s_value;

/* 1: written; 0: not the common shape (nothing to report, the caller falls back);
   -1: an error (a Python exception is set). On 0 and -1 the buffer may hold part of the
   span: the caller truncates it. */
typedef int Outcome;

static Outcome
put_attribute(Buffer *buffer, PyObject *key, PyObject *value)
{
    if (!PyUnicode_CheckExact(key)) {
        return 0;
    }
    Py_ssize_t key_length;
    const char *key_utf8 = PyUnicode_AsUTF8AndSize(key, &key_length);
    if (key_utf8 == NULL) {
        return -1;
    }
    if (key_length == 0) {
        return 0;
    }
    /* the AnyValue first, into a small stack buffer (strings are written in place) */
    unsigned char scalar[16];
    size_t scalar_length = 0;
    const char *text = NULL;
    Py_ssize_t text_length = 0;
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type) {
        text = PyUnicode_AsUTF8AndSize(value, &text_length);
        if (text == NULL) {
            return -1;
        }
    }
    else if (type == &PyBool_Type) {
        scalar[0] = 0x10;
        scalar[1] = value == Py_True ? 1 : 0;
        scalar_length = 2;
    }
    else if (type == &PyLong_Type) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            return 0;
        }
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        uint64_t bits = (uint64_t)n;
        Buffer small = {scalar, 0, sizeof scalar};
        put_byte(&small, 0x18);
        put_varint(&small, bits);
        scalar_length = small.size;
    }
    else if (type == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(value);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        scalar[0] = 0x21;
        for (int i = 0; i < 8; i++) {
            scalar[1 + i] = (unsigned char)(bits >> (8 * i));
        }
        scalar_length = 9;
    }
    else {
        return 0;
    }
    size_t any_length =
        text != NULL ? 1 + varint_size((uint64_t)text_length) + (size_t)text_length
                     : scalar_length;
    size_t key_value_length = 1 + varint_size((uint64_t)key_length) + (size_t)key_length + 1 +
                              varint_size(any_length) + any_length;
    if (reserve(buffer, 1 + 10 + key_value_length) < 0) {
        return -1;
    }
    put_byte(buffer, 0x4a);
    put_varint(buffer, key_value_length);
    put_byte(buffer, 0x0a);
    put_varint(buffer, (uint64_t)key_length);
    put_bytes(buffer, key_utf8, (size_t)key_length);
    put_byte(buffer, 0x12);
    put_varint(buffer, any_length);
    if (text != NULL) {
        put_byte(buffer, 0x0a);
        put_varint(buffer, (uint64_t)text_length);
        put_bytes(buffer, text, (size_t)text_length);
    }
    else {
        put_bytes(buffer, scalar, scalar_length);
    }
    return 1;
}

static int
is_empty_tuple(PyObject *object)
{
    return PyTuple_CheckExact(object) && PyTuple_GET_SIZE(object) == 0;
}

/* A non-negative int of at most 64 bits; 0 (with no exception) when it is not one. */
static int
as_uint64(PyObject *object, uint64_t *out)
{
    if (!PyLong_CheckExact(object)) {
        return 0;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(object);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    *out = n;
    return 1;
}

static int
as_trace_id(PyObject *object, unsigned char out[16])
{
    if (!PyLong_CheckExact(object)) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t needed = PyLong_AsNativeBytes(
        object, out, 16, Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER |
                             Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (needed < 0) {
        PyErr_Clear();
        return 0;
    }
    return needed <= 16;
#else
    if (_PyLong_AsByteArray((PyLongObject *)object, out, 16, 0, 0) < 0) {
        PyErr_Clear();
        return 0;
    }
    return 1;
#endif
}

/* An enum member's number (SpanKind, StatusCode). */
static int
enum_number(PyObject *member, long *out)
{
    PyObject *value = PyObject_GetAttr(member, s_value);
    if (value == NULL) {
        return -1;
    }
    *out = PyLong_AsLong(value);
    Py_DECREF(value);
    return *out == -1 && PyErr_Occurred() ? -1 : 1;
}

static Outcome
put_span(Buffer *buffer, PyObject *span, Memo *memo)
{
    Outcome outcome = 0;
    PyObject *context = NULL, *parent = NULL, *name = NULL, *kind = NULL, *start = NULL,
             *end = NULL, *attributes = NULL, *events = NULL, *links = NULL, *status = NULL,
             *code = NULL, *description = NULL;

#define READ(target, owner, attribute)                    \
    if ((target = PyObject_GetAttr(owner, attribute)) == NULL) { \
        outcome = -1;                                     \
        goto done;                                        \
    }
#define REFUSE_UNLESS(condition) \
    if (!(condition)) {          \
        outcome = 0;             \
        goto done;               \
    }
#define CHECK(call)                 \
    if ((outcome = (call)) != 1) {  \
        goto done;                  \
    }

    READ(context, span, s_context);
    READ(parent, span, s_parent);
    READ(name, span, s_name);
    READ(kind, span, s_kind);
    READ(start, span, s_start_time);
    READ(end, span, s_end_time);
    READ(attributes, span, s_attributes);
    READ(events, span, s_events);
    READ(links, span, s_links);
    READ(status, span, s_status);
    READ(code, status, s_status_code);
    READ(description, status, s_description);

    REFUSE_UNLESS(PyTuple_Check(context) && PyTuple_GET_SIZE(context) >= 5);
    REFUSE_UNLESS(parent == Py_None ||
                  (PyTuple_Check(parent) && PyTuple_GET_SIZE(parent) >= 3));
    REFUSE_UNLESS(PyUnicode_CheckExact(name));
    REFUSE_UNLESS(PyDict_CheckExact(attributes));
    REFUSE_UNLESS(is_empty_tuple(events) && is_empty_tuple(links));
    REFUSE_UNLESS(description == Py_None || PyUnicode_CheckExact(description));
    {
        PyObject *trace_state = PyTuple_GET_ITEM(context, 4);
        if (trace_state != Py_None && trace_state != memo->empty_trace_state) {
            int present = PyObject_IsTrue(trace_state);
            if (present < 0) {
                outcome = -1;
                goto done;
            }
            REFUSE_UNLESS(!present);
            memo->empty_trace_state = trace_state;
        }
    }

    uint64_t span_id, parent_id = 0, start_time = 0, end_time = 0;
    PyObject *trace_id_object = PyTuple_GET_ITEM(context, 0);
    size_t slot = ((uintptr_t)trace_id_object >> 4) % MEMO_SIZE;
    const unsigned char *trace_id = memo->trace_id_bytes[slot];
    if (memo->trace_ids[slot] != trace_id_object) {
        unsigned char converted[16];
        CHECK(as_trace_id(trace_id_object, converted));
        memcpy(memo->trace_id_bytes[slot], converted, 16);
        memo->trace_ids[slot] = trace_id_object;
    }
    CHECK(as_uint64(PyTuple_GET_ITEM(context, 1), &span_id));
    int parent_remote = 0;
    if (parent != Py_None) {
        CHECK(as_uint64(PyTuple_GET_ITEM(parent, 1), &parent_id));
        parent_remote = PyObject_IsTrue(PyTuple_GET_ITEM(parent, 2));
        if (parent_remote < 0) {
            outcome = -1;
            goto done;
        }
    }
    if (start != Py_None) {
        CHECK(as_uint64(start, &start_time));
    }
    if (end != Py_None) {
        CHECK(as_uint64(end, &end_time));
    }
    long kind_number, code_number;
    CHECK(enum_number(kind, &kind_number));
    CHECK(enum_number(code, &code_number));
    REFUSE_UNLESS(kind_number >= 0 && kind_number <= 4 && code_number >= 0);

    if (reserve(buffer, 2 + 16 + 2 + 8 + 2 + 8 + 2 + 9 + 9) < 0) {
        outcome = -1;
        goto done;
    }
    put_byte(buffer, 0x0a);
    put_byte(buffer, 16);
    put_bytes(buffer, trace_id, 16);
    put_byte(buffer, 0x12);
    put_byte(buffer, 8);
    put_big_endian64(buffer, span_id);
    if (parent != Py_None) {
        put_byte(buffer, 0x22);
        put_byte(buffer, 8);
        put_big_endian64(buffer, parent_id);
    }
    if (put_text(buffer, 0x2a, name) < 0) {
        outcome = -1;
        goto done;
    }
    if (reserve(buffer, 2 + 9 + 9) < 0) {
        outcome = -1;
        goto done;
    }
    put_byte(buffer, 0x30);
    put_byte(buffer, (unsigned char)(kind_number + 1));
    if (start_time) {
        put_byte(buffer, 0x39);
        put_fixed64(buffer, start_time);
    }
    if (end_time) {
        put_byte(buffer, 0x41);
        put_fixed64(buffer, end_time);
    }
    {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(attributes, &position, &key, &value)) {
            CHECK(put_attribute(buffer, key, value));
        }
    }
    {
        Py_ssize_t description_length = 0;
        const char *description_utf8 = NULL;
        if (description != Py_None) {
            description_utf8 = PyUnicode_AsUTF8AndSize(description, &description_length);
            if (description_utf8 == NULL) {
                outcome = -1;
                goto done;
            }
        }
        size_t status_length = 0;
        if (description_length) {
            status_length += 1 + varint_size((uint64_t)description_length) +
                             (size_t)description_length;
        }
        if (code_number) {
            status_length += 1 + varint_size((uint64_t)code_number);
        }
        if (reserve(buffer, 1 + 10 + status_length + 2 + 4) < 0) {
            outcome = -1;
            goto done;
        }
        put_byte(buffer, 0x7a);
        put_varint(buffer, status_length);
        if (description_length) {
            put_byte(buffer, 0x12);
            put_varint(buffer, (uint64_t)description_length);
            put_bytes(buffer, description_utf8, (size_t)description_length);
        }
        if (code_number) {
            put_byte(buffer, 0x18);
            put_varint(buffer, (uint64_t)code_number);
        }
    }
    /* flags: whether the parent is remote is known (0x100), and it is (0x200) */
    put_byte(buffer, 0x85);
    put_byte(buffer, 0x01);
    put_fixed32(buffer, parent_remote ? 0x300 : 0x100);
    outcome = 1;

#undef READ
#undef REFUSE_UNLESS
#undef CHECK
done:
    Py_XDECREF(context);
    Py_XDECREF(parent);
    Py_XDECREF(name);
    Py_XDECREF(kind);
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(attributes);
    Py_XDECREF(events);
    Py_XDECREF(links);
    Py_XDECREF(status);
    Py_XDECREF(code);
    Py_XDECREF(description);
    return outcome;
}

/* Append a span's field: 0x12, the length, then the message written at `from` (which the
   message is moved behind its header to make room). */
static int
frame(Buffer *buffer, size_t from)
{
    size_t length = buffer->size - from;
    size_t header = 1 + varint_size(length);
    if (reserve(buffer, header) < 0) {
        return -1;
    }
    memmove(buffer->data + from + header, buffer->data + from, length);
    size_t end = buffer->size + header;
    buffer->size = from;
    put_byte(buffer, 0x12);
    put_varint(buffer, length);
    buffer->size = end;
    return 0;
}

static PyObject *
encode_spans(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode_spans(spans, lean_type, fallback)");
        return NULL;
    }
    PyObject *sequence = PySequence_Fast(args[0], "spans must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    PyObject *lean_type = args[1], *fallback = args[2];
    Buffer buffer = {NULL, 0, 0};
    Memo memo;
    memset(&memo, 0, sizeof memo);
    PyObject *result = NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    PyObject **spans = PySequence_Fast_ITEMS(sequence);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *span = spans[i];
        size_t from = buffer.size;
        Outcome outcome = 0;
        if ((PyObject *)Py_TYPE(span) == lean_type) {
            outcome = put_span(&buffer, span, &memo);
            if (outcome < 0) {
                goto done;
            }
        }
        if (outcome == 0) {
            buffer.size = from;
            PyObject *encoded = PyObject_CallOneArg(fallback, span);
            if (encoded == NULL) {
                goto done;
            }
            if (!PyBytes_Check(encoded)) {
                Py_DECREF(encoded);
                PyErr_SetString(PyExc_TypeError, "fallback must return bytes");
                goto done;
            }
            size_t length = (size_t)PyBytes_GET_SIZE(encoded);
            if (reserve(&buffer, length) < 0) {
                Py_DECREF(encoded);
                goto done;
            }
            put_bytes(&buffer, PyBytes_AS_STRING(encoded), length);
            Py_DECREF(encoded);
        }
        if (frame(&buffer, from) < 0) {
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize((const char *)buffer.data, (Py_ssize_t)buffer.size);
done:
    PyMem_Free(buffer.data);
    Py_DECREF(sequence);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_spans", (PyCFunction)(void (*)(void))encode_spans, METH_FASTCALL,
     "encode_spans(spans, lean_type, fallback) -> bytes: the `spans` fields (0x12) of a "
     "ScopeSpans message."},
    {NULL, NULL, 0, NULL},
};

static int
intern_names(void)
{
    struct {
        PyObject **target;
        const char *name;
    } names[] = {
        {&s_context, "_context"},       {&s_parent, "_parent"},
        {&s_name, "_name"},             {&s_kind, "_kind"},
        {&s_start_time, "_start_time"}, {&s_end_time, "_end_time"},
        {&s_attributes, "_attributes"}, {&s_events, "_events"},
        {&s_links, "_links"},           {&s_status, "_status"},
        {&s_status_code, "_status_code"}, {&s_description, "_description"},
        {&s_value, "_value_"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].target = PyUnicode_InternFromString(names[i].name);
        if (*names[i].target == NULL) {
            return -1;
        }
    }
    return 0;
}

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_otlp",
    .m_doc = "OTLP Span messages written in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__otlp(void)
{
    if (intern_names() < 0) {
        return NULL;
    }
    return PyModule_Create(&module_definition);
}
