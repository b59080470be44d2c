/*
 * clock.h — the two clocks crmd reads, in milliseconds: the wall clock (for
 * what is stored or compared with stored times) and the monotonic one (for
 * durations and timeouts, which must not jump when the wall clock is set).
 */
#ifndef CRM_CLOCK_H
#define CRM_CLOCK_H

#include <time.h>

static inline long long crm_clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds since the epoch. */
static inline long long crm_wall_ms(void)
{
    return crm_clock_ms(CLOCK_REALTIME);
}

/* Milliseconds of a clock that only moves forward. */
static inline long long crm_monotonic_ms(void)
{
    return crm_clock_ms(CLOCK_MONOTONIC);
}

/* Microseconds of the monotonic clock, for timing work. */
static inline long long crm_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The monotonic clock's time ms milliseconds from now: the deadline of a
 * pthread_cond_timedwait on a condition variable of that clock. */
static inline struct timespec crm_monotonic_after_ms(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

#endif
