/*
 * arena.c — bump allocation over a list of chunks.
 */
#include "arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct crm_arena_chunk {
    crm_arena_chunk *next;
    size_t size, used;
    alignas(max_align_t) char data[];
};

#define ALIGN(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

void crm_arena_init(crm_arena *a)
{
    a->head = NULL;
    a->inline_used = 0;
}

void *crm_arena_alloc(crm_arena *a, size_t size)
{
    /* Sizes near SIZE_MAX would wrap in the rounding or the chunk header. */
    if (size > SIZE_MAX / 2)
        return NULL;
    size = ALIGN(size ? size : 1);
    if (a->inline_used + size <= sizeof a->inline_buf) {
        void *p = a->inline_buf + a->inline_used;
        a->inline_used += size;
        return p;
    }
    if (a->head == NULL || a->head->used + size > a->head->size) {
        size_t chunk = size > 4096 ? size : 4096;
        crm_arena_chunk *c = malloc(sizeof *c + chunk);
        if (c == NULL)
            return NULL;
        c->next = a->head;
        c->size = chunk;
        c->used = 0;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += size;
    return p;
}

char *crm_arena_strndup(crm_arena *a, const char *s, size_t len)
{
    char *p = crm_arena_alloc(a, len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

void crm_arena_free(crm_arena *a)
{
    while (a->head != NULL) {
        crm_arena_chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    a->inline_used = 0;
}
