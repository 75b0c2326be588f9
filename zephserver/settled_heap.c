/* The daemon's heap once it has started (zephserver/memory.py, settle()): what the start
   built stays packed in pymalloc's arenas, what comes after is taken from glibc's heap.

   The start builds several hundred thousand objects (modules' code, Django's models,
   tornado) that live as long as the daemon: pymalloc packs them with no per-block
   header, 1.3 MiB less than glibc's chunks. What the daemon makes afterwards (a burst
   of jobs or connections, freed when it ends) must come from glibc's heap, whose free
   pages malloc_trim returns wherever they are: pymalloc keeps a 1 MiB arena until its
   last object has gone, and a few survivors of a burst kept tens of MiB resident.

   So Python's allocator for objects (the MEM and OBJ domains) becomes: malloc and calloc
   from glibc; realloc and free of a block in glibc's main heap by glibc, of any other
   through pymalloc's own, which tell its blocks from any other by address and hand the
   others to glibc, as they always have for the blocks over 512 bytes that pymalloc takes
   from glibc. realloc of NULL is a malloc: glibc's. A block of the start that grows
   stays in pymalloc while it fits one.

   Loaded with ctypes.PyDLL, so that zs_settle runs with the GIL held: every allocation
   of those two domains is made with it, and none sees the allocator half changed.
   Built by `make`; needs no Python headers (PyMemAllocatorEx is declared below as
   Include/cpython/pymem.h has it). Where it is not built the daemon's objects come
   from glibc's heap from the first (zephserver/interpreter.py). */

#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr);
} allocator; /* PyMemAllocatorEx */

enum { DOMAIN_RAW, DOMAIN_MEM, DOMAIN_OBJ }; /* PyMemAllocatorDomain */
void PyMem_GetAllocator(int domain, allocator *allocator);
void PyMem_SetAllocator(int domain, allocator *allocator);

static allocator packed[DOMAIN_OBJ + 1]; /* pymalloc's, as the start used them */
static char *heap_start; /* glibc's main heap ([heap]); NULL: unknown */
static int settled;

int zs_abi(void) { return 2; }

/* Whether a block is in glibc's main heap, below its top: every block the daemon takes
   after its start is (one arena and no mapped chunk under 64 KiB: memory.one_arena),
   and no pymalloc arena ever is (pymalloc maps its arenas). Such a block goes to glibc
   at once, without pymalloc's look-up of its arenas, which cost a freed object 20
   instructions. A live block is below the top whatever another thread does meanwhile:
   the heap grows up, and shrinks only above its last live block. */
static int in_heap(const void *ptr)
{
    return heap_start && (const char *)ptr >= heap_start && ptr < sbrk(0);
}

/* Python's own raw allocator asks for 1 byte where 0 are asked: a unique pointer. */
static void *from_heap(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size ? size : 1);
}

static void *from_heap_zeroed(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (nelem == 0 || elsize == 0)
        nelem = elsize = 1;
    return calloc(nelem, elsize);
}

static void *resize(int domain, void *ctx, void *ptr, size_t size)
{
    if (ptr == NULL)
        return from_heap(ctx, size);
    if (in_heap(ptr))
        return realloc(ptr, size ? size : 1);
    return packed[domain].realloc(ctx, ptr, size);
}

static void release(int domain, void *ctx, void *ptr)
{
    if (in_heap(ptr))
        free(ptr);
    else
        packed[domain].free(ctx, ptr);
}

static void *resize_mem(void *ctx, void *ptr, size_t size) { return resize(DOMAIN_MEM, ctx, ptr, size); }
static void *resize_obj(void *ctx, void *ptr, size_t size) { return resize(DOMAIN_OBJ, ctx, ptr, size); }
static void release_mem(void *ctx, void *ptr) { release(DOMAIN_MEM, ctx, ptr); }
static void release_obj(void *ctx, void *ptr) { release(DOMAIN_OBJ, ctx, ptr); }

/* heap: the start of glibc's main heap (the [heap] line of /proc/self/maps), or NULL.
   0 once settled; 1 if it already was. */
int zs_settle(void *heap)
{
    if (settled)
        return 1;
    heap_start = heap;
    for (int domain = DOMAIN_MEM; domain <= DOMAIN_OBJ; domain++) {
        PyMem_GetAllocator(domain, &packed[domain]);
        int mem = domain == DOMAIN_MEM;
        allocator after = {
            packed[domain].ctx, from_heap, from_heap_zeroed,
            mem ? resize_mem : resize_obj, mem ? release_mem : release_obj,
        };
        PyMem_SetAllocator(domain, &after);
    }
    settled = 1;
    return 0;
}
