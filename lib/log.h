/*
 * log.h — structured logging: one JSON object per line on stderr.
 *
 * Messages are for operators. They must never carry personal data (names,
 * e-mail addresses, request bodies); callers pass identifiers only.
 */
#ifndef CRM_LOG_H
#define CRM_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { CRM_LOG_DEBUG, CRM_LOG_INFO, CRM_LOG_WARN, CRM_LOG_ERROR } crm_log_level;

/* Sets the lowest level that is written; the default is CRM_LOG_INFO. */
void crm_log_set_level(crm_log_level level);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int crm_log_level_parse(const char *name);

/* Writes {"ts":..., "level":..., "msg":...} with msg formatted printf-style. */
void crm_log(crm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts a thread that batches log lines into one write every 100 ms, so
 * that logging costs a request a memcpy, not a system call. Until it is
 * started, and after crm_log_stop_writer(), lines are written at once. */
bool crm_log_start_writer(void);

/* Writes what is buffered and stops the thread. */
void crm_log_stop_writer(void);

/* Writes one already-formatted JSON line (without the newline) atomically. */
void crm_log_write_line(const char *line, size_t len);

/* Formats the current UTC time as RFC 3339 with milliseconds into buf (>= 32). */
void crm_log_timestamp(char *buf, size_t size);

#endif
