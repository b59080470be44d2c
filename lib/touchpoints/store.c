/*
 * touchpoints/store.c — storing the checked items of a batch: by INSERT, by
 * COPY, or carefully, item by item, when the schema refused one.
 *
 * A batch is one transaction of a fixed number of statements, whatever its
 * size: the customer references are resolved three at a time (ids,
 * external ids, e-mails: one statement each), the customers that items may
 * create are made by one statement, the ids that name a customer no longer
 * active are found by one, and the touchpoints go in by one COPY, as fast
 * as PostgreSQL takes rows. Rows are copied in (source, event_id) order, so
 * two batches that share events wait for each other instead of
 * deadlocking. When an event was stored before (a batch sent again) or a
 * customer id names nobody, the COPY fails; it is undone to a savepoint and
 * the rows go in by INSERT ... SELECT FROM json_to_recordset ... ON
 * CONFLICT DO NOTHING, which skips them. A crmd that dies mid-batch leaves
 * nothing: the transaction never committed, and sending the batch again
 * stores it.
 */
#include "touchpoints.h"
#include "auth.h"
#include "copytext.h"
#include "touchpoints/internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- storing ---- */

static crm_stmt insert_touchpoints = CRM_STMT(
    "touchpoint_insert",
    "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
    " event_id, campaign_id, amount, currency, items, feedback, properties, purpose, offer_code)"
    " SELECT customer_id, channel, type, direction, occurred_at, source, event_id, campaign_id,"
    " amount, currency, items, feedback, coalesce(properties, '{}'), purpose, offer_code"
    " FROM json_to_recordset($1::json) AS r (customer_id bigint, channel text, type text,"
    " direction text, occurred_at timestamptz, source text, event_id text, campaign_id text,"
    " amount numeric, currency text, items jsonb, feedback jsonb, properties jsonb,"
    " purpose text, offer_code text)"
    " WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = r.customer_id AND c.status = 'active'"
    "  FOR KEY SHARE)"
    " ORDER BY source, event_id"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id");

static crm_stmt find_stored = CRM_STMT(
    "touchpoint_find_stored",
    "SELECT t.id, t.source, t.event_id FROM json_to_recordset($1::json) AS u (source text,"
    " event_id text) JOIN touchpoints t ON t.source = u.source AND t.event_id = u.event_id");

/* A member the item has; json_to_recordset reads a missing one as NULL, so
 * absent and null members are left out (less JSON to parse). */
static void write_member(crm_jbuf *b, json_t *doc, const char *name)
{
    json_t *v = json_object_get(doc, name);
    if (v == NULL || json_is_null(v))
        return;
    crm_jbuf_key(b, name);
    crm_jbuf_json(b, v);
}

/* One item as a json_to_recordset row of insert_touchpoints. */
static void write_insert_row(crm_jbuf *b, const tp_item *it)
{
    static const char *const members[] = {
        "channel",  "type",  "direction", "source",     "event_id", "campaign_id", "amount",
        "currency", "items", "feedback",  "properties", "purpose",  "offer_code"};
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "customer_id");
    crm_jbuf_int(b, it->customer_id);
    for (size_t m = 0; m < sizeof members / sizeof members[0]; m++)
        write_member(b, it->doc, members[m]);
    crm_jbuf_key(b, "occurred_at"); /* in UTC, which PostgreSQL always reads */
    crm_jbuf_cstring(b, it->occurred_at);
    crm_jbuf_end_object(b);
}

/* An item insert_pending stores: valid, first of its event, not stored yet,
 * customer known. */
static bool to_insert(const tp_item *it)
{
    return it->status == CRM_TP_CREATED && it->id == 0 && it->customer_id != 0;
}

/* The items to insert as json_to_recordset rows. */
static char *rows_to_insert(batch *B, size_t *count)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    *count = 0;
    for (size_t i = 0; i < B->n; i++)
        if (to_insert(&B->items[i])) {
            (*count)++;
            write_insert_row(&b, &B->items[i]);
        }
    crm_jbuf_end_array(&b);
    return crm_jbuf_take(&b, NULL);
}

/* The item (valid, first of its event) for (source, event_id). */
static tp_item *item_for_event(batch *B, const char *source, const char *event_id)
{
    size_t lo = 0, hi = B->n_by_event;
    while (lo < hi) { /* binary search of the items in event order */
        size_t mid = lo + (hi - lo) / 2;
        tp_item *it = B->by_event[mid];
        int c = strcmp(it->source, source);
        if (c == 0)
            c = strcmp(it->event_id, event_id);
        if (c == 0)
            return it->status == CRM_TP_CREATED && it->id == 0 ? it : NULL;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void apply_inserted(batch *B, const PGresult *res, int r)
{
    tp_item *it = item_for_event(B, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2));
    if (it != NULL)
        it->id = atoll(PQgetvalue(res, r, 0));
}

static void apply_stored(batch *B, const PGresult *res, int r)
{
    tp_item *it = item_for_event(B, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2));
    if (it != NULL) {
        it->id = atoll(PQgetvalue(res, r, 0));
        it->status = CRM_TP_DUPLICATE;
        it->first = -1;
    }
}

/* Valid items that the insert did not store: already there. */
static char *events_not_inserted(batch *B)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status != CRM_TP_CREATED || it->id != 0)
            continue;
        count++;
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "source");
        crm_jbuf_cstring(&b, it->source);
        crm_jbuf_key(&b, "event_id");
        crm_jbuf_cstring(&b, it->event_id);
        crm_jbuf_end_object(&b);
    }
    crm_jbuf_end_array(&b);
    return tp_take_rows(&b, count);
}

/* The whole batch on c, in its transaction. */
static void reject_unresolved(batch *B)
{
    bool reader = tp_caller_may(B, CRM_SCOPE_CUSTOMERS_READ);
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status == CRM_TP_CREATED && it->id == 0 && it->customer_id == 0)
            tp_reject(
                it,
                it->ref == REF_ID         ? "/customer_id"
                : it->ref == REF_EXTERNAL ? "/customer_external_id"
                                          : "/customer_email",
                !reader ? REFERENCE_REFUSED
                : it->create_customer || it->ref == REF_ID
                    ? "no live customer with this reference"
                    : "no live customer with this reference (create_customer: true makes one)");
    }
}

/* True for a SQLSTATE that says one row broke a rule of the database that
 * the validator let through (a CHECK, NOT NULL, or a data error such as a
 * value out of range): C and the schema have drifted apart. The item is at
 * fault, not the batch. (23505 and 23503 are handled where they arise.) */
static bool item_breaks_db_rule(const char *sqlstate)
{
    return strcmp(sqlstate, "23514") == 0 || strcmp(sqlstate, "23502") == 0 ||
           strncmp(sqlstate, "22", 2) == 0;
}

/* Inserts items[0..n) behind a savepoint; when the database refuses them
 * for a rule an item breaks, undoes that and tries each half, down to the
 * single items, which are rejected (422 in their item result). A bisection:
 * k offending items among n cost about 2k log n statements, and none when
 * all are fine. */
static bool insert_careful(crm_conn *c, batch *B, tp_item **items, size_t n, crm_error *err)
{
    if (n == 0)
        return true;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    for (size_t i = 0; i < n; i++)
        write_insert_row(&b, items[i]);
    crm_jbuf_end_array(&b);
    char *rows = crm_jbuf_take(&b, NULL);
    if (rows == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = crm_db_command(c, "SAVEPOINT touchpoint_part", err);
    bool stored = ok && tp_run_rows(c, &insert_touchpoints, rows, NULL, B, apply_inserted, err);
    free(rows);
    if (stored)
        return crm_db_command(c, "RELEASE SAVEPOINT touchpoint_part", err);
    if (!ok || !item_breaks_db_rule(crm_db_sqlstate(c)))
        return false;
    crm_error_clear(err);
    if (!crm_db_command(c, "ROLLBACK TO SAVEPOINT touchpoint_part", err) ||
        !crm_db_command(c, "RELEASE SAVEPOINT touchpoint_part", err))
        return false;
    for (size_t i = 0; i < n; i++)
        items[i]->id = 0; /* apply_inserted saw none of them: undone */
    if (n == 1) {
        tp_reject(items[0], "", "the database refused this touchpoint (a rule of its schema)");
        return true;
    }
    return insert_careful(c, B, items, n / 2, err) &&
           insert_careful(c, B, items + n / 2, n - n / 2, err);
}

/* insert_careful over every item to insert. */
static bool insert_pending_careful(crm_conn *c, batch *B, crm_error *err)
{
    tp_item **list = malloc(sizeof *list * (B->n ? B->n : 1));
    if (list == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < B->n; i++)
        if (to_insert(&B->items[i]))
            list[n++] = &B->items[i];
    bool ok = insert_careful(c, B, list, n, err);
    free(list);
    return ok;
}

/* Inserts the valid items not stored yet whose customer is known, then
 * marks those whose event was stored before as duplicates. */
static bool insert_pending(crm_conn *c, batch *B, crm_error *err)
{
    bool ok;
    if (B->careful) {
        ok = insert_pending_careful(c, B, err);
    } else {
        size_t count;
        char *rows = rows_to_insert(B, &count);
        if (rows == NULL)
            return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        ok = count == 0 || tp_run_rows(c, &insert_touchpoints, rows, NULL, B, apply_inserted, err);
        free(rows);
        if (!ok && item_breaks_db_rule(crm_db_sqlstate(c)))
            B->drift = true;
    }
    char *rest = ok ? events_not_inserted(B) : NULL;
    if (rest != NULL)
        ok = tp_run_rows(c, &find_stored, rest, NULL, B, apply_stored, err);
    free(rest);
    return ok;
}

/* The way insert_pending stores: INSERT ... ON CONFLICT DO NOTHING, which
 * skips events stored before and customers not active, then a second round
 * for the items whose customer id named a merged or unknown customer. The
 * INSERT locks each customer it finds active (KEY SHARE) until this
 * transaction ends; a merge or erase holding the customer FOR UPDATE makes
 * it wait and look again, so it never stores a touchpoint on a customer
 * that has just been merged away. */
static bool insert_with_conflicts(crm_conn *c, batch *B, crm_error *err)
{
    if (!insert_pending(c, B, err))
        return false;
    bool leftover = false;
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status == CRM_TP_CREATED && it->id == 0 && it->ref == REF_ID) {
            it->customer_id = 0;
            leftover = true;
        }
    }
    if (!leftover)
        return true;
    if (!tp_resolve(c, B, REF_ID, err))
        return false;
    reject_unresolved(B);
    return insert_pending(c, B, err);
}

/* The items copy_pending stores: valid, first of their event, customer known. */
static bool pending(const tp_item *it)
{
    return it->status == CRM_TP_CREATED && it->id == 0 && it->customer_id != 0;
}

static size_t count_pending(const batch *B)
{
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++)
        count += pending(&B->items[i]);
    return count;
}

/* Which of the customer ids ($1) name a customer that is not active; the
 * partial index of migration 0010 answers without reading the customers. */
static crm_stmt find_inactive =
    CRM_STMT("touchpoint_find_inactive",
             "SELECT id FROM customers WHERE id = ANY($1::bigint[]) AND status <> 'active'");

static crm_stmt take_ids =
    CRM_STMT("touchpoint_take_ids",
             "SELECT nextval(s) FROM pg_get_serial_sequence('touchpoints', 'id') AS s,"
             " generate_series(1, $1::int)");

#define COPY_TOUCHPOINTS                                                                           \
    "COPY touchpoints (id, customer_id, channel, type, direction, occurred_at, source, event_id,"  \
    " campaign_id, amount, currency, items, feedback, properties, purpose, offer_code) FROM STDIN"

static int compare_ids(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Forgets the customer of every pending item whose customer is not active
 * (deleted, erased, or merged: tp_resolve() then follows the merge), and
 * counts them in *forgotten. */
static bool forget_inactive(crm_conn *c, batch *B, size_t *forgotten, crm_error *err)
{
    *forgotten = 0;
    crm_jbuf ids;
    crm_jbuf_init(&ids);
    crm_jbuf_begin_array(&ids);
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++)
        if (pending(&B->items[i])) {
            crm_jbuf_int(&ids, B->items[i].customer_id);
            count++;
        }
    crm_jbuf_end_array(&ids);
    char *text = tp_take_rows(&ids, count);
    if (text == NULL)
        return count == 0 || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    text[0] = '{'; /* the JSON array as a PostgreSQL array: [1,2] is {1,2} */
    text[strlen(text) - 1] = '}';
    const char *params[] = {text};
    PGresult *res = crm_db_exec(c, &find_inactive, 1, params, err);
    free(text);
    if (res == NULL)
        return false;
    int rows = PQntuples(res);
    long long *inactive = malloc(sizeof *inactive * (size_t)(rows ? rows : 1));
    if (inactive == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (int r = 0; r < rows; r++)
        inactive[r] = atoll(PQgetvalue(res, r, 0));
    PQclear(res);
    qsort(inactive, (size_t)rows, sizeof *inactive, compare_ids);
    for (size_t i = 0; i < B->n && rows > 0; i++) {
        tp_item *it = &B->items[i];
        if (pending(it) && bsearch(&it->customer_id, inactive, (size_t)rows, sizeof *inactive,
                                   compare_ids) != NULL) {
            it->customer_id = 0;
            (*forgotten)++;
        }
    }
    free(inactive);
    return true;
}

/* A member of the item as a COPY column: a string as it is, a number or
 * an object as JSON text, absent or null as NULL (or dflt when given). */
static void copy_member(crm_copybuf *rows, crm_jbuf *scratch, json_t *doc, const char *name,
                        const char *dflt)
{
    json_t *v = json_object_get(doc, name);
    if (v == NULL || json_is_null(v)) {
        crm_copy_cstring(rows, dflt);
    } else if (json_is_string(v)) {
        crm_copy_text(rows, json_string_value(v), json_string_length(v));
    } else {
        crm_jbuf_json(scratch, v);
        size_t len;
        char *text = crm_jbuf_take(scratch, &len);
        if (text == NULL)
            rows->out.failed = true;
        else
            crm_copy_text(rows, text, len);
        free(text);
        crm_jbuf_init(scratch);
    }
}

/* The pending items as COPY_TOUCHPOINTS rows, in event order (so that two
 * batches sharing events wait for each other instead of deadlocking). */
static char *copy_rows(batch *B, size_t *len)
{
    crm_copybuf rows;
    crm_copy_init(&rows);
    crm_jbuf scratch;
    crm_jbuf_init(&scratch);
    for (size_t k = 0; k < B->n_by_event; k++) {
        tp_item *it = B->by_event[k];
        if (!pending(it))
            continue;
        json_t *doc = it->doc;
        crm_copy_int(&rows, it->copy_id);
        crm_copy_int(&rows, it->customer_id);
        static const char *const members[] = {"channel", "type", "direction"};
        for (size_t m = 0; m < sizeof members / sizeof members[0]; m++)
            copy_member(&rows, &scratch, doc, members[m], NULL);
        crm_copy_cstring(&rows, it->occurred_at); /* in UTC, which PostgreSQL always reads */
        static const char *const more[] = {"source", "event_id", "campaign_id", "amount",
                                           "currency", "items", "feedback"};
        for (size_t m = 0; m < sizeof more / sizeof more[0]; m++)
            copy_member(&rows, &scratch, doc, more[m], NULL);
        copy_member(&rows, &scratch, doc, "properties", "{}");
        copy_member(&rows, &scratch, doc, "purpose", NULL);
        copy_member(&rows, &scratch, doc, "offer_code", NULL);
        crm_copy_end_row(&rows);
    }
    crm_jbuf_free(&scratch);
    return crm_copy_take(&rows, len);
}

/* Takes an id for each pending item, in item order. */
static bool take_pending_ids(crm_conn *c, batch *B, size_t count, crm_error *err)
{
    crm_query q;
    crm_query_init(&q, &take_ids);
    crm_query_add_int(&q, (long long)count);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    if (res == NULL)
        return false;
    bool ok = (size_t)PQntuples(res) == count;
    for (size_t i = 0, r = 0; ok && i < B->n; i++)
        if (pending(&B->items[i]))
            B->items[i].copy_id = atoll(PQgetvalue(res, (int)r++, 0));
    PQclear(res);
    return ok || crm_error_set(err, CRM_E_INTERNAL, "the database gave too few touchpoint ids");
}

typedef enum { COPY_FAILED, COPY_DONE, COPY_REFUSED, COPY_RACED } copy_outcome;

/* Stores the pending items with one COPY, behind a savepoint. The COPY's
 * foreign-key check locks each customer (KEY SHARE) until this transaction
 * ends, and merging or erasing a customer locks it FOR UPDATE first: so a
 * merge or erase that the check before missed has committed by now, and
 * the look after the COPY sees it (COPY_RACED: undone, the caller resolves
 * those customers again). An event stored meanwhile or a customer id that
 * names nobody fails the COPY (COPY_REFUSED: undone). */
static copy_outcome copy_pending(crm_conn *c, batch *B, crm_error *err)
{
    size_t count = count_pending(B);
    if (count == 0)
        return COPY_DONE;
    if (!take_pending_ids(c, B, count, err))
        return COPY_FAILED;
    size_t len;
    char *rows = copy_rows(B, &len);
    if (rows == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return COPY_FAILED;
    }
    bool ok = crm_db_command(c, "SAVEPOINT touchpoint_copy", err) &&
              crm_db_copy_in(c, COPY_TOUCHPOINTS, rows, len, err);
    free(rows);
    if (!ok) {
        const char *state = crm_db_sqlstate(c);
        if (item_breaks_db_rule(state))
            B->drift = true; /* the caller starts over, carefully */
        if (strcmp(state, "23505") != 0 && strcmp(state, "23503") != 0)
            return COPY_FAILED;
        crm_error_clear(err);
        return crm_db_command(c, "ROLLBACK TO SAVEPOINT touchpoint_copy", err) ? COPY_REFUSED
                                                                               : COPY_FAILED;
    }
    size_t forgotten;
    if (!forget_inactive(c, B, &forgotten, err))
        return COPY_FAILED;
    if (forgotten > 0)
        return crm_db_command(c, "ROLLBACK TO SAVEPOINT touchpoint_copy", err) ? COPY_RACED
                                                                               : COPY_FAILED;
    for (size_t i = 0; i < B->n; i++)
        if (pending(&B->items[i]))
            B->items[i].id = B->items[i].copy_id;
    return COPY_DONE;
}

/* Resolves the references, makes the customers items ask for, and stores
 * the items: a few by insert_with_conflicts; many by COPY, unless an event
 * was stored before or a customer id names nobody, and then by
 * insert_with_conflicts too. */
bool tp_store_batch(crm_conn *c, batch *B, crm_error *err)
{
    for (size_t i = 0; i < B->n; i++)
        if (B->items[i].status == CRM_TP_CREATED && B->items[i].ref == REF_ID)
            B->items[i].customer_id = B->items[i].ref_id;
    if (!tp_resolve(c, B, REF_EXTERNAL, err) || !tp_resolve(c, B, REF_EMAIL, err) ||
        !tp_create_missing(c, B, err))
        return false;
    reject_unresolved(B);
    if (B->careful || count_pending(B) < CRM_TOUCHPOINT_COPY_FROM_ITEMS)
        return insert_with_conflicts(c, B, err);
    for (int round = 0; round < 3; round++) {
        size_t forgotten; /* resolved again below (each resolve asks only when it has some) */
        if (!forget_inactive(c, B, &forgotten, err) || !tp_resolve(c, B, REF_ID, err) ||
            !tp_resolve(c, B, REF_EXTERNAL, err) || !tp_resolve(c, B, REF_EMAIL, err))
            return false;
        reject_unresolved(B);
        switch (copy_pending(c, B, err)) {
        case COPY_DONE:
            return true;
        case COPY_FAILED:
            return false;
        case COPY_REFUSED:
            return insert_with_conflicts(c, B, err);
        case COPY_RACED:
            break;
        }
    }
    return crm_error_set(err, CRM_E_CONFLICT, "the batch's customers kept changing; send it again");
}
