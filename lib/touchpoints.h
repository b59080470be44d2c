/*
 * touchpoints.h — interactions with customers on every channel: recording
 * them one by one or in batches (deduplicated by the sender's event id),
 * reading one, and a customer's timeline.
 */
#ifndef CRM_TOUCHPOINTS_H
#define CRM_TOUCHPOINTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>

#include "arena.h"
#include "customers.h"
#include "db.h"
#include "error.h"
#include "jbuf.h"

#define CRM_TOUCHPOINT_BATCH_MAX 10000
#define CRM_TOUCHPOINT_ITEMS_MAX 200 /* purchased items per touchpoint */
#define CRM_TOUCHPOINT_PROPERTIES_MAX_BYTES 16384
#define CRM_TOUCHPOINT_TEXT_MAX 5000 /* feedback text, in characters */
/* A batch with this many touchpoints to store goes in by COPY; a smaller one
 * by one INSERT, which needs four fewer round trips. At about 20 µs saved a
 * row by COPY, the two cost the same near a dozen rows. */
#define CRM_TOUCHPOINT_COPY_FROM_ITEMS 16

/* The documented lists (NULL-terminated). */
extern const char *const crm_touchpoint_channels[];
extern const char *const crm_touchpoint_types[];
/* The directions and the ISO 4217 currency codes an item may carry
 * (NULL-terminated). */
extern const char *const *const crm_touchpoint_directions;
extern const char *const *const crm_touchpoint_currencies;

/* How far into the future occurred_at may lie (clocks drift); seconds. A
 * contact decision's occurred_at is held to the same tolerance. */
void crm_touchpoint_set_future_tolerance(int seconds);
int crm_touchpoint_future_tolerance(void);

/* The outcome of one item of a batch. */
typedef enum { CRM_TP_CREATED, CRM_TP_DUPLICATE, CRM_TP_REJECTED } crm_tp_status;

/* Records touchpoints: every valid item is stored (one transaction, set-based
 * statements), an item whose (source, event_id) is already stored is a
 * duplicate and not stored again, an invalid one is rejected with the
 * reasons. Returns {"created": n, "duplicates": n, "rejected": n,
 * "items": [{"index", "status", "id"?, "errors"?}]} in the order of items;
 * NULL with err only when nothing could be done (database down, ...).
 * items must be an array of at most CRM_TOUCHPOINT_BATCH_MAX. */
json_t *crm_touchpoint_record_batch(json_t *items, const crm_write_ctx *ctx, crm_error *err);

/* Checks one touchpoint (a single body or one item of a batch) against the
 * rules, without the database (customer references are not resolved):
 * false with CRM_E_INVALID and the field errors in err when it breaks one.
 * The item validation of crm_touchpoint_record(_batch), for the fuzz target
 * tests/fuzz/fuzz_touchpoint_item.c. */
bool crm_touchpoint_check(json_t *doc, crm_error *err);

/* Records one touchpoint: its representation, *created false when it was a
 * duplicate (then the stored one). A rejected body is CRM_E_INVALID with
 * the field errors. */
json_t *crm_touchpoint_record(json_t *body, const crm_write_ctx *ctx, bool *created,
                              crm_error *err);

/* Reads one touchpoint, split for the event loop: the query, then the
 * representation as JSON text (NULL with CRM_E_NOT_FOUND when none). */
void crm_touchpoint_get_query(crm_query *q, long long id);
char *crm_touchpoint_get_render(const PGresult *res, size_t *len, crm_error *err);

/* A customer's timeline, newest first. Strings are borrowed. */
typedef struct crm_timeline_filter {
    long long customer_id;
    const char *channel, *type;
    const char *occurred_after, *occurred_before; /* RFC 3339 */
    const char *after;                            /* a cursor from an earlier page */
    int limit;
} crm_timeline_filter;

/* The page's single statement (values in arena), then the page as JSON
 * text: {"data": [...], "next_cursor": string|null}. A customer that does
 * not exist is CRM_E_NOT_FOUND; a merged one answers with its survivor's. */
bool crm_timeline_query(const crm_timeline_filter *f, crm_arena *arena, crm_query *q,
                        crm_error *err);
char *crm_timeline_render(const PGresult *res, const crm_timeline_filter *f, size_t *len,
                          crm_error *err);

/* For lib/ files that read touchpoints with statements of their own (the
 * sync feed): the select list the representation is written from (table
 * alias t) with its number of columns, and the writer of the representation
 * from a row whose select list starts at column c0. */
const char *crm_touchpoint_columns(int *ncolumns);
void crm_touchpoint_write(crm_jbuf *b, const PGresult *res, int r, int c0);

/* What the customer files need, inside their transactions on c; ids is a
 * PostgreSQL bigint array literal ("{1,2}"). */
/* The export writes the person's touchpoints to out as one JSON array,
 * oldest first, a row at a time. */
bool crm_touchpoints_export_write(crm_conn *c, const char *ids, FILE *out, crm_error *err);
bool crm_touchpoints_erase(crm_conn *c, const char *ids, crm_error *err);
bool crm_touchpoints_move(crm_conn *c, const char *survivor, const char *ids, crm_error *err);

/* The touchpoints crmd writes itself (a campaign's contacts) have sources
 * beginning with this prefix; a client's may not (its event ids could
 * otherwise take the place of crmd's). */
#define CRM_TOUCHPOINT_SOURCE_PREFIX "crmd:"
bool crm_touchpoint_source_reserved(const char *source);

#endif
