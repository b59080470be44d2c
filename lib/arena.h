/*
 * arena.h — scratch memory that dies all at once (one per request).
 *
 * Allocations are carved from chunks and never freed one by one;
 * crm_arena_free() releases everything. Not thread-safe: one owner at a time.
 */
#ifndef CRM_ARENA_H
#define CRM_ARENA_H

#include <stdalign.h>
#include <stddef.h>

typedef struct crm_arena_chunk crm_arena_chunk;

typedef struct crm_arena {
    crm_arena_chunk *head;
    alignas(max_align_t) char inline_buf[512]; /* small requests never touch malloc */
    size_t inline_used;
} crm_arena;

void crm_arena_init(crm_arena *a);

/* Returns size bytes aligned for any type, or NULL when out of memory. */
void *crm_arena_alloc(crm_arena *a, size_t size);

/* Copies len bytes of s and a terminating NUL into the arena. */
char *crm_arena_strndup(crm_arena *a, const char *s, size_t len);

void crm_arena_free(crm_arena *a);

#endif
