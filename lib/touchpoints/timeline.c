/*
 * touchpoints/timeline.c — a customer's timeline: its touchpoints, newest
 * first, filtered by channel, type and time, a page at a time.
 */
#include "touchpoints.h"
#include "customers/internal.h"
#include "list/cursor.h"
#include "list/page.h"
#include "touchpoints/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the timeline ------------------------------------------------------------------ */

/* Column 0 is the live customer (NULL: none); a customer without touchpoints
 * is one row of NULLs after it. The last column is occurred_at as
 * PostgreSQL prints it (UTC sessions), exact to the microsecond, for the
 * cursor.
 *
 * Every bound is always bound, with sentinels when the request has none
 * ('-infinity', 'infinity', the largest id): under the generic plans the
 * connections use, "$n IS NULL OR ..." would be a filter, and every page
 * would read the timeline from its newest row down to the cursor. Bound,
 * the range and the row comparison are index conditions, so any page
 * costs the same. */
static crm_stmt timeline =
    CRM_STMT_PAGE("touchpoint_timeline", CRM_SQL_RESOLVE_CUSTOMER
                  " SELECT (SELECT id FROM target), " TP_COLUMNS ", t.occurred_at"
                  " FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT * FROM touchpoints t"
                  "  WHERE t.customer_id = (SELECT id FROM target)"
                  "  AND ($2::text IS NULL OR t.channel = $2) AND ($3::text IS NULL OR t.type = $3)"
                  "  AND t.occurred_at >= $4::timestamptz AND t.occurred_at < $5::timestamptz"
                  "  AND (t.occurred_at, t.id) < ($6::timestamptz, $7::bigint)"
                  "  ORDER BY t.occurred_at DESC, t.id DESC LIMIT $8) t ON true");

#define TIMELINE_KEY (1 + TP_NCOLUMNS)

static char *arena_int(crm_arena *arena, long long v)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", v);
    return crm_arena_strndup(arena, text, strlen(text));
}

/* A date-time query parameter as UTC text in the arena (NULL when absent),
 * or a field error naming it. */
static char *utc_param(const char *value, const char *name, crm_arena *arena, crm_error *err)
{
    char utc[CRM_RFC3339_UTC_SIZE];
    if (value == NULL)
        return NULL;
    if (!crm_rfc3339_valid(value))
        crm_error_add_field(err, name, "must be an RFC 3339 date-time");
    else if (!crm_rfc3339_to_utc(value, utc, sizeof utc))
        crm_error_add_field(err, name, "must lie in the years 0001 to 9999 once moved to UTC");
    else
        return crm_arena_strndup(arena, utc, strlen(utc));
    return NULL;
}

/* Decodes a timeline cursor (signed: {occurred_at µs, id}) into the
 * parameters that start the next page: the instant as PostgreSQL reads it
 * exactly, and the id, both in arena. False when it is not one of ours or
 * its values could not come from a row. */
static bool read_timeline_cursor(const char *after, crm_arena *arena, const char **key,
                                 const char **id)
{
    crm_cursor c;
    if (!crm_cursor_decode(after, CRM_CURSOR_TIMELINE, 0, 2, false, &c) ||
        !crm_cursor_us_valid(c.ints[0]) || c.ints[1] <= 0)
        return false;
    char text[48];
    crm_cursor_format_us(c.ints[0], text);
    *key = crm_arena_strndup(arena, text, strlen(text));
    *id = arena_int(arena, c.ints[1]);
    return *key != NULL && *id != NULL;
}

bool crm_timeline_query(const crm_timeline_filter *f, crm_arena *arena, crm_query *q,
                        crm_error *err)
{
    if (f->channel != NULL && !crm_one_of(f->channel, crm_touchpoint_channels))
        crm_error_add_field(err, "channel", "not a known channel");
    if (f->type != NULL && !crm_one_of(f->type, crm_touchpoint_types))
        crm_error_add_field(err, "type", "not a known touchpoint type");
    char *after = utc_param(f->occurred_after, "occurred_after", arena, err);
    char *before = utc_param(f->occurred_before, "occurred_before", arena, err);
    const char *key = "infinity", *id = "9223372036854775807"; /* before every row */
    if (f->after != NULL && !read_timeline_cursor(f->after, arena, &key, &id))
        crm_error_add_field(err, "after", "not a cursor of this timeline");
    if (json_array_size(err->errors) > 0)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    if ((f->occurred_after != NULL && after == NULL) ||
        (f->occurred_before != NULL && before == NULL))
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_query_init(q, &timeline);
    crm_query_add(q, arena_int(arena, f->customer_id));
    crm_query_add(q, f->channel);
    crm_query_add(q, f->type);
    /* in UTC: PostgreSQL refuses offsets past +-15:59 */
    crm_query_add(q, after ? after : "-infinity");
    crm_query_add(q, before ? before : "infinity");
    crm_query_add(q, key);
    crm_query_add(q, id);
    crm_query_add(q, arena_int(arena, crm_page_fetch(f->limit)));
    return true;
}

char *crm_timeline_render(const PGresult *res, const crm_timeline_filter *f, size_t *len,
                          crm_error *err)
{
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    int n = PQgetisnull(res, 0, 1) ? 0 : PQntuples(res), limit = f->limit < 1 ? 1 : f->limit;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_page_begin(&b);
    for (int r = 0; r < crm_page_shown(n, limit); r++)
        crm_touchpoint_write(&b, res, r, 1);
    bool more = crm_page_has_next(n, limit);
    crm_cursor next; /* after the last row shown: its occurred_at (exact µs) and id */
    crm_cursor_init(&next, CRM_CURSOR_TIMELINE, 0);
    long long us;
    if (more && !(crm_parse_pg_timestamp(PQgetvalue(res, limit - 1, TIMELINE_KEY), &us) &&
                  crm_cursor_add_int(&next, us) &&
                  crm_cursor_add_int(&next, atoll(PQgetvalue(res, limit - 1, 1)))))
        b.out.failed = true;
    crm_page_end(&b, more ? &next : NULL);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}
