/*
 * ratelimit.c — a bounded, set-associative table of token buckets (see
 * ratelimit.h).
 *
 * Tokens are counted in thousandths, so that a bucket refilling `rate`
 * tokens a second gains exactly `rate` thousandths a millisecond: integer
 * arithmetic, no drift, and nothing can overflow, because a bucket never
 * holds more than burst * 1000 <= 10^9 thousandths and a refill is computed
 * only while it is below that.
 */
#include "ratelimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define WAYS 8
#define MILLI 1000LL

typedef struct bucket {
    long long key_id; /* 0: free (key ids start at 1) */
    long long tokens; /* thousandths */
    long long last_ms;
} bucket;

typedef struct bucket_set {
    pthread_mutex_t mu;
    bucket ways[WAYS];
} bucket_set;

struct crm_ratelimit {
    long long rate;  /* tokens a second = thousandths a millisecond */
    long long full;  /* burst, in thousandths */
    size_t nsets;    /* a power of two */
    bucket_set *sets;
};

crm_ratelimit *crm_ratelimit_new(long long rate, long long burst, size_t max_keys)
{
    if (rate < 1 || rate > CRM_RATELIMIT_MAX_RATE || burst < 1 ||
        burst > CRM_RATELIMIT_MAX_BURST || max_keys == 0 || max_keys > ((size_t)1 << 24))
        return NULL;
    crm_ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    rl->rate = rate;
    rl->full = burst * MILLI;
    rl->nsets = 1;
    while (rl->nsets * WAYS < max_keys)
        rl->nsets *= 2;
    rl->sets = calloc(rl->nsets, sizeof *rl->sets);
    if (rl->sets == NULL) {
        free(rl);
        return NULL;
    }
    for (size_t i = 0; i < rl->nsets; i++)
        pthread_mutex_init(&rl->sets[i].mu, NULL);
    return rl;
}

void crm_ratelimit_free(crm_ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->nsets; i++)
        pthread_mutex_destroy(&rl->sets[i].mu);
    free(rl->sets);
    free(rl);
}

/* Key ids are small consecutive integers: mix them so consecutive keys
 * spread over the sets (splitmix64's finalizer). */
static size_t set_of(const crm_ratelimit *rl, long long key_id)
{
    uint64_t z = (uint64_t)key_id;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (size_t)(z & (rl->nsets - 1));
}

/* The bucket's tokens at now_ms, refilled and capped at full. */
static long long refilled(const crm_ratelimit *rl, const bucket *b, long long now_ms)
{
    long long elapsed = now_ms - b->last_ms;
    if (elapsed <= 0)
        return b->tokens;
    long long need = rl->full - b->tokens;
    /* Compare before multiplying: elapsed * rate < need <= 10^9 below. */
    if (elapsed >= (need + rl->rate - 1) / rl->rate)
        return rl->full;
    return b->tokens + elapsed * rl->rate;
}

/* key_id's bucket in set s (the caller holds its mutex): found, or a free
 * way, or the way that would be fullest now, made a new full bucket. */
static bucket *find_bucket(const crm_ratelimit *rl, bucket_set *s, long long key_id,
                           long long now_ms)
{
    bucket *victim = NULL;
    long long victim_tokens = -1;
    for (int i = 0; i < WAYS; i++) {
        bucket *b = &s->ways[i];
        if (b->key_id == key_id)
            return b;
        long long t = b->key_id == 0 ? rl->full + 1 : refilled(rl, b, now_ms);
        if (t > victim_tokens) {
            victim = b;
            victim_tokens = t;
        }
    }
    *victim = (bucket){.key_id = key_id, .tokens = rl->full, .last_ms = now_ms};
    return victim;
}

/* Whole seconds, rounded up, that a refill of `thousandths` takes. */
static long long seconds_to_refill(const crm_ratelimit *rl, long long thousandths)
{
    if (thousandths <= 0)
        return 0;
    long long ms = (thousandths + rl->rate - 1) / rl->rate;
    return (ms + 999) / 1000;
}

bool crm_ratelimit_take(crm_ratelimit *rl, long long key_id, long long now_ms,
                        crm_ratelimit_state *out)
{
    bucket_set *s = &rl->sets[set_of(rl, key_id)];
    pthread_mutex_lock(&s->mu);
    bucket *b = find_bucket(rl, s, key_id, now_ms);
    b->tokens = refilled(rl, b, now_ms);
    if (now_ms > b->last_ms)
        b->last_ms = now_ms;
    out->allowed = b->tokens >= MILLI;
    if (out->allowed)
        b->tokens -= MILLI;
    long long tokens = b->tokens;
    pthread_mutex_unlock(&s->mu);

    out->limit = rl->full / MILLI;
    out->remaining = tokens / MILLI;
    out->reset_s = seconds_to_refill(rl, rl->full - tokens);
    out->retry_after_s = 0;
    if (!out->allowed) {
        long long wait = seconds_to_refill(rl, MILLI - tokens);
        out->retry_after_s = wait > 0 ? wait : 1;
    }
    return out->allowed;
}
