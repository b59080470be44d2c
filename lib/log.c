/*
 * log.c — one JSON line per event, written with a single write(2) so that
 * lines from concurrent threads never interleave.
 */
#include "log.h"

#include <jansson.h>
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

void crm_log_write_line(const char *line, size_t len)
{
    char stackbuf[1024];
    char *buf = len + 1 <= sizeof stackbuf ? stackbuf : malloc(len + 1);
    if (buf == NULL)
        return;
    memcpy(buf, line, len);
    buf[len] = '\n';
    ssize_t rc = write(STDERR_FILENO, buf, len + 1);
    (void)rc; /* a log line that cannot be written has nowhere else to go */
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
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char ts[40];
    crm_log_timestamp(ts, sizeof ts);
    json_t *obj = json_pack("{s:s, s:s, s:o}", "ts", ts, "level", level_names[level], "msg",
                            json_stringn_nocheck(msg, strlen(msg)));
    char *line = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (line != NULL)
        crm_log_write_line(line, strlen(line));
    free(line);
    json_decref(obj);
}
