
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * An LD_PRELOAD shim for bench/http: counts what a process asks of
 * malloc, so that the benchmark can tell the bytes allocated per
 * request without a debug build of nginx.  The counters live in a file
 * (LLMR_MALLOC_COUNT, created by the benchmark, 32 bytes) mapped shared,
 * so that the forked nginx worker updates them and the benchmark reads
 * them while nginx runs:
 *
 *     calls   allocations (malloc, calloc, realloc, memalign family)
 *     bytes   bytes allocated, as malloc_usable_size() gives them
 *     live    bytes allocated and not yet freed
 *     peak    the largest "live" since the benchmark last set it to 0
 *
 * all signed 64-bit, in the machine's byte order.  Blocks freed that
 * were allocated before the shim was loaded can make "live" negative:
 * only differences of it mean something.
 *
 * Without LLMR_MALLOC_COUNT the counters go nowhere.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>


typedef struct {
    int64_t  calls;
    int64_t  bytes;
    int64_t  live;
    int64_t  peak;
} llmr_malloc_count_t;


extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *p);


static llmr_malloc_count_t   llmr_none;
static llmr_malloc_count_t  *llmr_count = &llmr_none;


__attribute__((constructor))
static void
llmr_malloc_count_init(void)
{
    int          fd;
    void        *p;
    const char  *file;

    file = getenv("LLMR_MALLOC_COUNT");
    if (file == NULL) {
        return;
    }

    fd = open(file, O_RDWR);
    if (fd == -1) {
        return;
    }

    p = mmap(NULL, sizeof(llmr_malloc_count_t), PROT_READ | PROT_WRITE,
             MAP_SHARED, fd, 0);
    close(fd);

    if (p != MAP_FAILED) {
        llmr_count = p;
    }
}


static void
llmr_alloc(void *p)
{
    int64_t  size, live, peak;

    if (p == NULL) {
        return;
    }

    size = (int64_t) malloc_usable_size(p);

    __atomic_add_fetch(&llmr_count->calls, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&llmr_count->bytes, size, __ATOMIC_RELAXED);
    live = __atomic_add_fetch(&llmr_count->live, size, __ATOMIC_RELAXED);

    peak = __atomic_load_n(&llmr_count->peak, __ATOMIC_RELAXED);

    while (live > peak
           && !__atomic_compare_exchange_n(&llmr_count->peak, &peak, live, 1,
                                           __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED))
    {
        /* void */
    }
}


static void
llmr_release(void *p)
{
    if (p) {
        __atomic_sub_fetch(&llmr_count->live, (int64_t) malloc_usable_size(p),
                           __ATOMIC_RELAXED);
    }
}


void *
malloc(size_t size)
{
    void  *p;

    p = __libc_malloc(size);
    llmr_alloc(p);

    return p;
}


void *
calloc(size_t n, size_t size)
{
    void  *p;

    p = __libc_calloc(n, size);
    llmr_alloc(p);

    return p;
}


void *
realloc(void *old, size_t size)
{
    void     *p;
    int64_t   was;

    was = old ? (int64_t) malloc_usable_size(old) : 0;

    p = __libc_realloc(old, size);

    if (p == NULL && size) {
        /* failed: the old block is still there */
        return NULL;
    }

    __atomic_sub_fetch(&llmr_count->live, was, __ATOMIC_RELAXED);
    llmr_alloc(p);

    return p;
}


void
free(void *p)
{
    llmr_release(p);
    __libc_free(p);
}


void *
memalign(size_t alignment, size_t size)
{
    void  *p;

    p = __libc_memalign(alignment, size);
    llmr_alloc(p);

    return p;
}


void *
aligned_alloc(size_t alignment, size_t size)
{
    return memalign(alignment, size);
}


int
posix_memalign(void **out, size_t alignment, size_t size)
{
    void  *p;

    if (alignment % sizeof(void *) != 0
        || (alignment & (alignment - 1)) != 0)
    {
        return EINVAL;
    }

    p = memalign(alignment, size);
    if (p == NULL) {
        return ENOMEM;
    }

    *out = p;

    return 0;
}
