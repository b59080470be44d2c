/*
 * throttle.h — the per-key rate limit at the HTTP edge.
 *
 * Every authenticated request takes one token from its key's bucket
 * (lib/ratelimit.h): CRMD_RATE_LIMIT_RPS tokens a second, up to
 * CRMD_RATE_LIMIT_BURST. Its answer carries RateLimit-Limit,
 * RateLimit-Remaining and RateLimit-Reset; with the bucket empty it is
 * answered 429 with Retry-After. The buckets live in this process: behind a
 * load balancer spreading keys over N crmd processes, a key can get up to N
 * times the limit (README, "Rate limits").
 */
#ifndef HTTP_THROTTLE_H
#define HTTP_THROTTLE_H

#include <stdbool.h>

typedef struct http_request http_request;

/* Sets the limit before serving: rps tokens a second (0 turns the limit
 * off), burst at most. False when the table cannot be made. */
bool http_throttle_configure(int rps, int burst);

/* Frees the table after serving. */
void http_throttle_shutdown(void);

/* For an authenticated request: takes a token for key_id and adds the
 * RateLimit-* headers. When the bucket is empty, answers 429 with
 * Retry-After and returns false. Always true when the limit is off. */
bool http_throttle_admit(http_request *req, long long key_id);

#endif
