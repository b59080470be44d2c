/*
 * log.c — one JSON line per event, written with a single write(2) so that
 * lines from concurrent threads never interleave.
 */
#include "log.h"
#include "json.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_min_level = CRM_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void crm_log_set_level(crm_log_level level)
{
    atomic_store(&log_min_level, (int)level);
}

int crm_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void crm_log_timestamp(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Buffered writing (crm_log_start_writer): lines are copied into one of two
 * buffers under a mutex; a writer thread swaps them every LOG_FLUSH_MS (or
 * when one is half full) and writes the full one with a single write(2).
 * A request then costs a memcpy instead of a system call, and lines from
 * different threads still never interleave. */
#define LOG_BUF_SIZE (1u << 20)
#define LOG_FLUSH_MS 100

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf[2];
    size_t len;
    int active;
    bool running, stopping;
    pthread_t thread;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* a log that cannot be written has nowhere else to go */
        p += w;
        n -= (size_t)w;
    }
}

static void *writer_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        if (!W.stopping && W.len < LOG_BUF_SIZE / 2) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += LOG_FLUSH_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&W.cv, &W.mu, &ts);
        }
        char *full = W.buf[W.active];
        size_t n = W.len;
        W.active ^= 1;
        W.len = 0;
        bool stop = W.stopping;
        pthread_mutex_unlock(&W.mu);
        write_all(full, n);
        if (stop)
            return NULL;
        pthread_mutex_lock(&W.mu);
    }
}

bool crm_log_start_writer(void)
{
    W.buf[0] = malloc(LOG_BUF_SIZE);
    W.buf[1] = malloc(LOG_BUF_SIZE);
    if (W.buf[0] == NULL || W.buf[1] == NULL ||
        pthread_create(&W.thread, NULL, writer_main, NULL) != 0) {
        free(W.buf[0]);
        free(W.buf[1]);
        W.buf[0] = W.buf[1] = NULL;
        return false;
    }
    pthread_mutex_lock(&W.mu);
    W.running = true;
    pthread_mutex_unlock(&W.mu);
    return true;
}

void crm_log_stop_writer(void)
{
    pthread_mutex_lock(&W.mu);
    if (!W.running) {
        pthread_mutex_unlock(&W.mu);
        return;
    }
    W.stopping = true;
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    pthread_join(W.thread, NULL);
    /* Anything written while the last buffer was being written. */
    write_all(W.buf[W.active], W.len);
    W.running = W.stopping = false;
    W.len = 0;
    free(W.buf[0]);
    free(W.buf[1]);
    W.buf[0] = W.buf[1] = NULL;
}

void crm_log_write_line(const char *line, size_t len)
{
    pthread_mutex_lock(&W.mu);
    if (W.running && !W.stopping && len + 1 <= LOG_BUF_SIZE) {
        if (W.len + len + 1 > LOG_BUF_SIZE) { /* the writer is behind: write here */
            write_all(W.buf[W.active], W.len);
            W.len = 0;
        }
        char *dst = W.buf[W.active] + W.len;
        memcpy(dst, line, len);
        dst[len] = '\n';
        W.len += len + 1;
        if (W.len >= LOG_BUF_SIZE / 2)
            pthread_cond_signal(&W.cv);
        pthread_mutex_unlock(&W.mu);
        return;
    }
    pthread_mutex_unlock(&W.mu);

    char stackbuf[1024];
    char *buf = len + 1 <= sizeof stackbuf ? stackbuf : malloc(len + 1);
    if (buf == NULL)
        return;
    memcpy(buf, line, len);
    buf[len] = '\n';
    write_all(buf, len + 1);
    if (buf != stackbuf)
        free(buf);
}

void crm_log(crm_log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_min_level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int want = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = want < 0 ? 0 : strlen(msg);
    if (want >= (int)sizeof msg) /* cut: not inside a character */
        len = crm_utf8_boundary(msg, len);
    /* libpq's messages and client bytes need not be UTF-8, and Jansson
     * cannot write a string that is not: replace what is invalid, so that
     * the line is never dropped (it may be the one explaining a 500). */
    char clean[3 * sizeof msg + 1];
    size_t clean_len = crm_utf8_sanitize(msg, len, clean, sizeof clean);

    char ts[40];
    crm_log_timestamp(ts, sizeof ts);
    json_t *obj = json_pack("{s:s, s:s, s:o}", "ts", ts, "level", level_names[level], "msg",
                            json_stringn(clean, clean_len));
    char *line = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (line != NULL)
        crm_log_write_line(line, strlen(line));
    free(line);
    json_decref(obj);
}
