/*
 * test_arena.c — the per-request bump allocator (lib/arena.h).
 */
#include <check.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "arena.h"
#include "suites.h"

static bool is_aligned(const void *p)
{
    return (uintptr_t)p % alignof(max_align_t) == 0;
}

static bool inside_inline_buffer(const crm_arena *a, const void *p)
{
    const char *c = p;
    return c >= a->inline_buf && c < a->inline_buf + sizeof a->inline_buf;
}

START_TEST(test_small_allocation_uses_inline_buffer)
{
    crm_arena a;
    crm_arena_init(&a);
    void *p = crm_arena_alloc(&a, 24);
    ck_assert_ptr_nonnull(p);
    ck_assert(inside_inline_buffer(&a, p));
    ck_assert_ptr_null(a.head);
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_large_allocation_is_usable_in_full)
{
    crm_arena a;
    crm_arena_init(&a);
    size_t size = 100000;
    unsigned char *p = crm_arena_alloc(&a, size);
    ck_assert_ptr_nonnull(p);
    ck_assert(!inside_inline_buffer(&a, p));
    memset(p, 0xab, size);
    ck_assert_uint_eq(p[0], 0xab);
    ck_assert_uint_eq(p[size - 1], 0xab);
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_allocations_are_aligned_for_any_type)
{
    crm_arena a;
    crm_arena_init(&a);
    const size_t sizes[] = {1, 3, 7, 17, 100, 511, 513, 4095, 4097, 9000, 1};
    for (int round = 0; round < 20; round++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *p = crm_arena_alloc(&a, sizes[i]);
            ck_assert_ptr_nonnull(p);
            ck_assert_msg(is_aligned(p), "size %zu gave %p", sizes[i], p);
        }
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_allocations_do_not_overlap)
{
    crm_arena a;
    crm_arena_init(&a);
    enum { N = 200, SIZE = 37 };
    unsigned char *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = crm_arena_alloc(&a, SIZE);
        ck_assert_ptr_nonnull(blocks[i]);
        memset(blocks[i], i, SIZE);
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < SIZE; j++)
            ck_assert_uint_eq(blocks[i][j], (unsigned char)i);
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_large_allocation_keeps_earlier_chunk_contents)
{
    crm_arena a;
    crm_arena_init(&a);
    char *small = crm_arena_alloc(&a, 600); /* past the inline buffer: a chunk */
    memset(small, 's', 600);
    char *big = crm_arena_alloc(&a, 50000);
    memset(big, 'b', 50000);
    char *after = crm_arena_alloc(&a, 100);
    memset(after, 'a', 100);
    for (int i = 0; i < 600; i++)
        ck_assert_int_eq(small[i], 's');
    ck_assert_int_eq(big[49999], 'b');
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_zero_size_allocations_are_distinct)
{
    crm_arena a;
    crm_arena_init(&a);
    void *p = crm_arena_alloc(&a, 0);
    void *q = crm_arena_alloc(&a, 0);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    ck_assert_ptr_ne(p, q);
    crm_arena_free(&a);
}
END_TEST

/* A size that cannot be met must fail, not wrap around to a tiny block.
 * SIZE_MAX rounds up past zero when aligned. */
START_TEST(test_size_max_returns_null)
{
    crm_arena a;
    crm_arena_init(&a);
    void *p = crm_arena_alloc(&a, SIZE_MAX);
    crm_arena_free(&a);
    ck_assert_ptr_null(p);
}
END_TEST

/* Already aligned, but adding the chunk header wraps around. */
START_TEST(test_size_that_overflows_with_chunk_header_returns_null)
{
    crm_arena a;
    crm_arena_init(&a);
    void *p = crm_arena_alloc(&a, SIZE_MAX - 15);
    crm_arena_free(&a);
    ck_assert_ptr_null(p);
}
END_TEST

START_TEST(test_strndup_copies_and_terminates)
{
    crm_arena a;
    crm_arena_init(&a);
    char *s = crm_arena_strndup(&a, "customers", 9);
    ck_assert_str_eq(s, "customers");
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_strndup_copies_only_len_bytes)
{
    crm_arena a;
    crm_arena_init(&a);
    char *s = crm_arena_strndup(&a, "customers/42", 9);
    ck_assert_str_eq(s, "customers");
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_strndup_of_zero_bytes_is_empty_string)
{
    crm_arena a;
    crm_arena_init(&a);
    char *s = crm_arena_strndup(&a, "ignored", 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_strndup_copies_long_strings_into_chunks)
{
    crm_arena a;
    crm_arena_init(&a);
    char src[6000];
    memset(src, 'x', sizeof src);
    char *s = crm_arena_strndup(&a, src, sizeof src);
    ck_assert_uint_eq(strlen(s), sizeof src);
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_free_makes_arena_reusable)
{
    crm_arena a;
    crm_arena_init(&a);
    crm_arena_alloc(&a, 400);
    crm_arena_alloc(&a, 10000);
    crm_arena_free(&a);
    ck_assert_ptr_null(a.head);
    void *p = crm_arena_alloc(&a, 24);
    ck_assert(inside_inline_buffer(&a, p));
    crm_arena_free(&a);
}
END_TEST

START_TEST(test_free_of_unused_arena_is_harmless)
{
    crm_arena a;
    crm_arena_init(&a);
    crm_arena_free(&a);
    crm_arena_free(&a);
    ck_assert_ptr_null(a.head);
}
END_TEST

Suite *arena_suite(void)
{
    Suite *s = suite_create("arena");
    TCase *tc = tcase_create("alloc");
    tcase_add_test(tc, test_small_allocation_uses_inline_buffer);
    tcase_add_test(tc, test_large_allocation_is_usable_in_full);
    tcase_add_test(tc, test_allocations_are_aligned_for_any_type);
    tcase_add_test(tc, test_allocations_do_not_overlap);
    tcase_add_test(tc, test_large_allocation_keeps_earlier_chunk_contents);
    tcase_add_test(tc, test_zero_size_allocations_are_distinct);
    tcase_add_test(tc, test_size_max_returns_null);
    tcase_add_test(tc, test_size_that_overflows_with_chunk_header_returns_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("strndup");
    tcase_add_test(tc, test_strndup_copies_and_terminates);
    tcase_add_test(tc, test_strndup_copies_only_len_bytes);
    tcase_add_test(tc, test_strndup_of_zero_bytes_is_empty_string);
    tcase_add_test(tc, test_strndup_copies_long_strings_into_chunks);
    suite_add_tcase(s, tc);

    tc = tcase_create("free");
    tcase_add_test(tc, test_free_makes_arena_reusable);
    tcase_add_test(tc, test_free_of_unused_arena_is_harmless);
    suite_add_tcase(s, tc);
    return s;
}
