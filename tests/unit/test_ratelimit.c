/*
 * test_ratelimit.c — the per-key token buckets (lib/ratelimit.h), driven by
 * an injected clock: a burst is allowed and the next request refused, tokens
 * come back at the rate, the headers' numbers (remaining, reset, retry
 * after) are right, keys are independent, the table stays bounded and
 * forgets full buckets first, and concurrent takers never get more than the
 * bucket holds.
 */
#include <check.h>
#include <pthread.h>

#include "ratelimit.h"
#include "suites.h"

#define T0 1000000LL /* an arbitrary monotonic time, in ms */

static crm_ratelimit_state take(crm_ratelimit *rl, long long key, long long now_ms)
{
    crm_ratelimit_state st;
    crm_ratelimit_take(rl, key, now_ms, &st);
    return st;
}

START_TEST(test_new_refuses_bad_arguments)
{
    ck_assert_ptr_null(crm_ratelimit_new(0, 10, 16));
    ck_assert_ptr_null(crm_ratelimit_new(10, 0, 16));
    ck_assert_ptr_null(crm_ratelimit_new(10, 10, 0));
    ck_assert_ptr_null(crm_ratelimit_new(CRM_RATELIMIT_MAX_RATE + 1, 10, 16));
    ck_assert_ptr_null(crm_ratelimit_new(10, CRM_RATELIMIT_MAX_BURST + 1, 16));
}
END_TEST

START_TEST(test_burst_is_allowed_then_the_next_is_refused)
{
    crm_ratelimit *rl = crm_ratelimit_new(2, 5, 16);
    for (int i = 0; i < 5; i++) {
        crm_ratelimit_state st = take(rl, 7, T0);
        ck_assert(st.allowed);
        ck_assert_int_eq(st.limit, 5);
        ck_assert_int_eq(st.remaining, 4 - i);
        ck_assert_int_eq(st.retry_after_s, 0);
    }
    crm_ratelimit_state st = take(rl, 7, T0);
    ck_assert(!st.allowed);
    ck_assert_int_eq(st.remaining, 0);
    ck_assert_int_eq(st.retry_after_s, 1); /* one token in 500 ms: rounded up to 1 s */
    ck_assert_int_eq(st.reset_s, 3);       /* five tokens in 2.5 s: 3 s */
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_tokens_come_back_at_the_rate)
{
    crm_ratelimit *rl = crm_ratelimit_new(2, 2, 16);
    ck_assert(take(rl, 1, T0).allowed);
    ck_assert(take(rl, 1, T0).allowed);
    ck_assert(!take(rl, 1, T0).allowed);
    ck_assert(!take(rl, 1, T0 + 499).allowed); /* 0.998 of a token */
    ck_assert(take(rl, 1, T0 + 500).allowed);  /* one token at 2 a second */
    ck_assert(!take(rl, 1, T0 + 500).allowed);
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_refill_stops_at_the_burst)
{
    crm_ratelimit *rl = crm_ratelimit_new(10, 3, 16);
    ck_assert(take(rl, 1, T0).allowed);
    /* A day later: full again, not 864,000 tokens. */
    crm_ratelimit_state st = take(rl, 1, T0 + 86400000LL);
    ck_assert(st.allowed);
    ck_assert_int_eq(st.remaining, 2);
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_slow_rate_gives_a_long_retry_after)
{
    crm_ratelimit *rl = crm_ratelimit_new(1, 1, 16);
    ck_assert(take(rl, 1, T0).allowed);
    crm_ratelimit_state st = take(rl, 1, T0 + 100);
    ck_assert(!st.allowed);
    ck_assert_int_eq(st.retry_after_s, 1);
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_reset_is_zero_when_full_and_counts_whole_seconds)
{
    crm_ratelimit *rl = crm_ratelimit_new(1, 10, 16);
    crm_ratelimit_state st = take(rl, 1, T0);
    ck_assert_int_eq(st.remaining, 9);
    ck_assert_int_eq(st.reset_s, 1);
    for (int i = 0; i < 4; i++)
        st = take(rl, 1, T0);
    ck_assert_int_eq(st.remaining, 5);
    ck_assert_int_eq(st.reset_s, 5);
    st = take(rl, 1, T0 + 60000);
    ck_assert_int_eq(st.remaining, 9); /* full, then one taken */
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_keys_have_their_own_buckets)
{
    crm_ratelimit *rl = crm_ratelimit_new(1, 1, 16);
    ck_assert(take(rl, 1, T0).allowed);
    ck_assert(!take(rl, 1, T0).allowed);
    ck_assert(take(rl, 2, T0).allowed);
    ck_assert(take(rl, 3, T0).allowed);
    ck_assert(!take(rl, 2, T0).allowed);
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_clock_going_back_adds_nothing)
{
    crm_ratelimit *rl = crm_ratelimit_new(1000, 1, 16);
    ck_assert(take(rl, 1, T0).allowed);
    ck_assert(!take(rl, 1, T0 - 5000).allowed);
    ck_assert(!take(rl, 1, T0).allowed);
    ck_assert(take(rl, 1, T0 + 1).allowed);
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_many_keys_stay_bounded_and_an_empty_bucket_is_kept)
{
    /* A table for 8 keys (one set of 8 ways): key 1 empties its bucket, then
     * 10,000 other keys take one token each, leaving theirs fuller than
     * key 1's. The fullest bucket is forgotten first, so key 1 stays
     * refused: crowding the table cannot reset a bucket. */
    crm_ratelimit *rl = crm_ratelimit_new(1, 2, 8);
    ck_assert(take(rl, 1, T0).allowed);
    ck_assert(take(rl, 1, T0).allowed);
    for (long long k = 2; k < 10002; k++)
        ck_assert(take(rl, k, T0).allowed);
    ck_assert(!take(rl, 1, T0).allowed);
    crm_ratelimit_free(rl);
}
END_TEST

START_TEST(test_largest_settings_do_not_overflow)
{
    crm_ratelimit *rl = crm_ratelimit_new(CRM_RATELIMIT_MAX_RATE, CRM_RATELIMIT_MAX_BURST, 16);
    crm_ratelimit_state st = take(rl, 1, T0);
    ck_assert(st.allowed);
    ck_assert_int_eq(st.remaining, CRM_RATELIMIT_MAX_BURST - 1);
    st = take(rl, 1, 4000000000000000000LL);
    ck_assert(st.allowed);
    ck_assert_int_eq(st.remaining, CRM_RATELIMIT_MAX_BURST - 1);
    crm_ratelimit_free(rl);
}
END_TEST

/* ---- threads --------------------------------------------------------- */

#define THREADS 8
#define TAKES 500

typedef struct taker {
    crm_ratelimit *rl;
    int allowed;
} taker;

static void *take_many(void *arg)
{
    taker *t = arg;
    for (int i = 0; i < TAKES; i++) {
        crm_ratelimit_state st;
        if (crm_ratelimit_take(t->rl, 42, T0, &st))
            t->allowed++;
    }
    return NULL;
}

START_TEST(test_concurrent_takers_get_exactly_the_burst)
{
    /* The clock stands still: exactly burst requests may pass, whatever the
     * interleaving. */
    crm_ratelimit *rl = crm_ratelimit_new(1, 1000, 64);
    pthread_t th[THREADS];
    taker t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        t[i] = (taker){rl, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, take_many, &t[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += t[i].allowed;
    }
    ck_assert_int_eq(total, 1000);
    crm_ratelimit_free(rl);
}
END_TEST

Suite *ratelimit_suite(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("bucket");
    tcase_add_test(tc, test_new_refuses_bad_arguments);
    tcase_add_test(tc, test_burst_is_allowed_then_the_next_is_refused);
    tcase_add_test(tc, test_tokens_come_back_at_the_rate);
    tcase_add_test(tc, test_refill_stops_at_the_burst);
    tcase_add_test(tc, test_slow_rate_gives_a_long_retry_after);
    tcase_add_test(tc, test_reset_is_zero_when_full_and_counts_whole_seconds);
    tcase_add_test(tc, test_keys_have_their_own_buckets);
    tcase_add_test(tc, test_clock_going_back_adds_nothing);
    tcase_add_test(tc, test_many_keys_stay_bounded_and_an_empty_bucket_is_kept);
    tcase_add_test(tc, test_largest_settings_do_not_overflow);
    tcase_add_test(tc, test_concurrent_takers_get_exactly_the_burst);
    suite_add_tcase(s, tc);
    return s;
}
