/*
 * ratelimit.h — per-key token buckets, for the per-key rate limit.
 *
 * Each key (by its id) has a bucket of at most `burst` tokens that refills
 * at `rate` tokens a second; a request takes one token or, when none is
 * left, is refused with the time until one will be. The table is bounded:
 * at most about max_keys buckets, in sets of a few entries each; when a set
 * is full, the bucket that would be fullest now is forgotten (a full bucket
 * is what a new one starts as, so forgetting it changes nothing; forgetting
 * a partly used one can only give that key more, never less).
 *
 * Thread-safe: each set has its own mutex. The caller passes the time (a
 * monotonic clock in milliseconds), so tests can drive it.
 */
#ifndef CRM_RATELIMIT_H
#define CRM_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct crm_ratelimit crm_ratelimit;

typedef struct crm_ratelimit_state {
    bool allowed;
    long long limit;          /* the burst: tokens in a full bucket */
    long long remaining;      /* whole tokens left after this request */
    long long reset_s;        /* seconds until the bucket is full again */
    long long retry_after_s;  /* when refused: seconds until a token is back (>= 1) */
} crm_ratelimit_state;

#define CRM_RATELIMIT_MAX_RATE 1000000
#define CRM_RATELIMIT_MAX_BURST 1000000

/* A table for about max_keys keys, refilling rate tokens a second up to
 * burst (each 1 .. the maxima above). NULL on bad arguments or no memory.
 * Free with crm_ratelimit_free. */
crm_ratelimit *crm_ratelimit_new(long long rate, long long burst, size_t max_keys);

void crm_ratelimit_free(crm_ratelimit *rl);

/* Takes one token from key_id's bucket at now_ms (a monotonic clock; a time
 * earlier than the bucket's last is taken as no time passing). Fills *out;
 * returns out->allowed. */
bool crm_ratelimit_take(crm_ratelimit *rl, long long key_id, long long now_ms,
                        crm_ratelimit_state *out);

#endif
