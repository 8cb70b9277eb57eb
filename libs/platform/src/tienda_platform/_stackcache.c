/* Frame-stack chunks kept for reuse, between CPython and its arena allocator.

   Since Python 3.11 the interpreter keeps the frames of Python calls on a per-thread data
   stack made of chunks of 16 KiB, which it takes from (and gives back to) the arena
   allocator: mmap and munmap on Linux. greenlet gives every greenlet a data stack of its own,
   so each new greenlet maps a fresh chunk at its first Python call and unmaps it when it
   ends. SQLAlchemy's asyncio layer runs each awaited database operation (every execute,
   flush, commit and close) in a new greenlet: dozens per order, each paying two system
   calls, up to four page faults and, once a process runs more than one thread, a TLB
   shootdown across the cores it ran on.

   install() puts a small cache in front of the arena allocator: a chunk of that size that
   is given back is kept (up to KEEP of them, 2 MiB) and handed out again on the next request
   of that size. Every other request goes to the allocator installed before, unchanged.

   The arena allocator is called only with the GIL held, which serialises the cache; a
   free-threaded build is left alone. (Sub-interpreters with a GIL of their own, from Python
   3.12, would share the cache without a common lock: tienda runs none.) */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* CPython's DATA_STACK_CHUNK_SIZE (Python/pystate.c, 3.11 to 3.13); pymalloc's arenas are
   1 MiB, so no other request of the arena allocator has this size. Larger chunks (a deep
   recursion) are not cached. */
#define CHUNK_SIZE (16 * 1024)
#define KEEP 128

static PyObjectArenaAllocator underlying;
static void *kept[KEEP];
static int kept_count;
static int installed;
static unsigned long long reused, mapped, unmapped;

static void *
cached_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size == CHUNK_SIZE) {
        if (kept_count > 0) {
            reused++;
            return kept[--kept_count];
        }
        mapped++;
    }
    return underlying.alloc(underlying.ctx, size);
}

static void
cached_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (size == CHUNK_SIZE && ptr != NULL) {
        if (kept_count < KEEP) {
            kept[kept_count++] = ptr;
            return;
        }
        unmapped++;
    }
    underlying.free(underlying.ctx, ptr, size);
}

static PyObject *
install(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
#ifdef Py_GIL_DISABLED
    Py_RETURN_FALSE;
#else
    if (!installed) {
        PyObjectArenaAllocator cache = {NULL, cached_alloc, cached_free};
        PyObject_GetArenaAllocator(&underlying);
        PyObject_SetArenaAllocator(&cache);
        installed = 1;
    }
    Py_RETURN_TRUE;
#endif
}

static PyObject *
stats(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return Py_BuildValue(
        "{s:O,s:K,s:K,s:K,s:i}",
        "installed", installed ? Py_True : Py_False,
        "reused", reused,
        "mapped", mapped,
        "unmapped", unmapped,
        "kept", kept_count);
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS,
     "Put the chunk cache in front of the arena allocator (once); False where the build "
     "has no GIL and nothing was installed."},
    {"stats", stats, METH_NOARGS,
     "installed, and counts since then of 16 KiB chunks reused, mapped and unmapped, and "
     "how many are kept now."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tienda_platform._stackcache", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__stackcache(void)
{
    return PyModule_Create(&module);
}
