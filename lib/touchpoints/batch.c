/*
 * touchpoints/batch.c — recording touchpoints, one or a batch: each item
 * checked, duplicates within the batch found, the whole stored in one
 * transaction (store.c) and retried when it lost a race or met a rule of
 * the database the checks do not know; then the answer, item by item.
 */
#include "touchpoints.h"
#include "auth.h"
#include "clock.h"
#include "customers/internal.h"
#include "touchpoints/internal.h"
#include "customers.h"
#include "segment_store.h"

#include <stdlib.h>
#include <string.h>

/* ---- the batch ------------------------------------------------------------------ */

static int compare_events(const void *a, const void *b)
{
    const tp_item *x = *(tp_item *const *)a, *y = *(tp_item *const *)b;
    int c = strcmp(x->source, y->source);
    if (c == 0)
        c = strcmp(x->event_id, y->event_id);
    if (c == 0)
        c = (x > y) - (x < y); /* the earlier item first */
    return c;
}

/* A later item with the (source, event_id) of an earlier valid one is a
 * duplicate of it: only the first is stored. */
static bool mark_duplicates_within(batch *B)
{
    free(B->by_event);
    B->n_by_event = 0;
    tp_item **order = B->by_event = malloc(sizeof *order * (B->n ? B->n : 1));
    if (order == NULL)
        return false;
    size_t m = 0;
    for (size_t i = 0; i < B->n; i++)
        if (B->items[i].status == CRM_TP_CREATED)
            order[m++] = &B->items[i];
    qsort(order, m, sizeof *order, compare_events);
    size_t kept = 0;
    for (size_t k = 0; k < m; k++) {
        tp_item *cur = order[k], *prev = kept ? order[kept - 1] : NULL;
        if (prev != NULL && strcmp(prev->source, cur->source) == 0 &&
            strcmp(prev->event_id, cur->event_id) == 0) {
            cur->status = CRM_TP_DUPLICATE;
            cur->first = (int)(prev - B->items);
        } else {
            order[kept++] = cur; /* the first of its event, in event order */
        }
    }
    B->n_by_event = kept;
    return true;
}

void tp_field_error(tp_item *it, const char *field, const char *message)
{
    crm_error e = {.errors = it->field_errors}; /* the shared way to add one */
    crm_error_add_field(&e, field, message);
    it->field_errors = e.errors;
}

void tp_reject(tp_item *it, const char *field, const char *message)
{
    it->status = CRM_TP_REJECTED;
    tp_field_error(it, field, message);
    it->code = CRM_E_INVALID;
}

void tp_item_error(const tp_item *it, crm_error *err)
{
    crm_error_clear(err);
    if (it->code == CRM_E_FORBIDDEN)
        crm_error_set(err, CRM_E_FORBIDDEN, "the key's scopes do not allow this touchpoint");
    else
        crm_error_set(err, CRM_E_INVALID, "the touchpoint breaks the rules named below");
    err->errors = json_incref(it->field_errors);
}

void tp_item_reset(tp_item *it)
{
    json_t *doc = it->doc;
    json_decref(it->field_errors);
    free(it->email_normalized);
    memset(it, 0, sizeof *it);
    it->doc = doc;
}

static json_t *batch_report(batch *B)
{
    json_t *items = json_array();
    int counts[3] = {0, 0, 0};
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status == CRM_TP_DUPLICATE && it->first >= 0) {
            tp_item *first = &B->items[it->first];
            it->id = first->id;
            if (first->status == CRM_TP_REJECTED) { /* its first copy's fate */
                it->status = CRM_TP_REJECTED;
                json_decref(it->field_errors);
                it->code = first->code;
                it->field_errors = json_incref(first->field_errors);
            }
        }
        counts[it->status]++;
        static const char *const names[] = {"created", "duplicate", "rejected"};
        json_t *o = json_pack("{s:I, s:s}", "index", (json_int_t)i, "status", names[it->status]);
        if (it->status == CRM_TP_REJECTED)
            json_object_set_new(o, "errors",
                                it->field_errors ? json_incref(it->field_errors) : json_array());
        else
            json_object_set_new(o, "id", json_integer(it->id));
        json_array_append_new(items, o);
    }
    return json_pack("{s:i, s:i, s:i, s:o}", "created", counts[CRM_TP_CREATED], "duplicates",
                     counts[CRM_TP_DUPLICATE], "rejected", counts[CRM_TP_REJECTED], "items", items);
}

/* What the segments need to know of item it's touchpoint; its skus go to
 * skus (owned by the caller, at least as many as its items). */
static void touchpoint_facts(const tp_item *it, const char **skus, crm_segment_touchpoint *out)
{
    const json_t *doc = it->doc;
    long long ms = 0;
    crm_rfc3339_epoch_ms(it->occurred_at, &ms);
    int n = 0;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(doc, "items"), i, item)
    {
        const char *sku = json_string_value(json_object_get(item, "sku"));
        if (sku != NULL)
            skus[n++] = sku;
    }
    *out = (crm_segment_touchpoint){
        .customer_id = it->customer_id,
        .facts = {.type = json_string_value(json_object_get(doc, "type")),
                  .channel = json_string_value(json_object_get(doc, "channel")),
                  .campaign_id = json_string_value(json_object_get(doc, "campaign_id")),
                  .offer_code = json_string_value(json_object_get(doc, "offer_code")),
                  .skus = skus,
                  .nskus = n,
                  .occurred_us = ms * 1000}};
}

/* A batch of several: its touchpoints queued for the segments' upkeep,
 * which judges their customers right after the batch commits; the
 * customers it made judged now, by every segment, as any customer made is. */
static bool queue_segments(crm_conn *c, const batch *B, crm_error *err)
{
    long long *ids = malloc(sizeof *ids * (B->n ? B->n : 1));
    long long *made = malloc(sizeof *made * (B->n ? B->n : 1));
    size_t n = 0, nmade = 0;
    for (size_t i = 0; ids != NULL && made != NULL && i < B->n; i++) {
        const tp_item *it = &B->items[i];
        if (it->made_customer && it->customer_id > 0)
            made[nmade++] = it->customer_id;
        if (it->status == CRM_TP_CREATED && it->customer_id > 0)
            ids[n++] = it->id;
    }
    bool ok = ids != NULL && made != NULL
                  ? crm_segments_queue_touchpoints(c, ids, n, err) &&
                        crm_segments_refresh_touchpoints(c, NULL, 0, made, nmade, "touchpoints",
                                                         NULL, err)
                  : crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    free(made);
    free(ids);
    return ok;
}

/* The live segments, in the write's transaction: each re-evaluated for
 * the customers whose new touchpoints its rule would count, and for the
 * customers the write made. A batch of several queues instead. */
static bool refresh_segments(crm_conn *c, const batch *B, crm_error *err)
{
    if (B->n > 1)
        return queue_segments(c, B, err);
    size_t n = 0, nskus = 0;
    for (size_t i = 0; i < B->n; i++) {
        const tp_item *it = &B->items[i];
        if (it->status == CRM_TP_CREATED && it->customer_id > 0) {
            n++;
            nskus += json_array_size(json_object_get(it->doc, "items"));
        }
    }
    crm_segment_touchpoint *t = malloc(sizeof *t * (n ? n : 1));
    const char **skus = malloc(sizeof *skus * (nskus ? nskus : 1));
    long long *made = malloc(sizeof *made * (B->n ? B->n : 1));
    size_t m = 0, k = 0, nmade = 0;
    long long single = 0;
    for (size_t i = 0; t != NULL && skus != NULL && made != NULL && i < B->n; i++) {
        const tp_item *it = &B->items[i];
        if (it->made_customer && it->customer_id > 0)
            made[nmade++] = it->customer_id;
        if (it->status != CRM_TP_CREATED || it->customer_id <= 0)
            continue;
        touchpoint_facts(it, skus + k, &t[m]);
        k += (size_t)t[m].facts.nskus;
        single = it->id;
        m++;
    }
    bool ok;
    if (t == NULL || skus == NULL || made == NULL) {
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    } else {
        char ref[24];
        snprintf(ref, sizeof ref, "%lld", single);
        ok = crm_segments_refresh_touchpoints(c, t, m, made, nmade,
                                              B->n == 1 ? "touchpoint" : "touchpoints",
                                              B->n == 1 && single > 0 ? ref : NULL, err);
    }
    free(made);
    free(skus);
    free(t);
    return ok;
}

/* Checks and stores the items of B; a failure of the database (not of an
 * item) is err. Retried once when the transaction lost a race, and once,
 * carefully, when an item broke a rule of the database (drift). */
static bool record(batch *B, crm_error *err)
{
    bool raced = false;
    B->careful = false;
    for (;;) {
        B->drift = false;
        long long now = crm_wall_ms();
        for (size_t i = 0; i < B->n; i++) {
            tp_item *it = &B->items[i];
            json_t *doc = it->doc;
            tp_item_reset(it);
            tp_check_item(doc, it, now);
            tp_check_scopes(B, it);
        }
        if (!mark_duplicates_within(B))
            return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        crm_conn *c = crm_db_acquire(err);
        if (c == NULL)
            return false;
        bool ok = crm_db_begin(c, err) && tp_store_batch(c, B, err) &&
                  refresh_segments(c, B, err) && crm_db_commit(c, err);
        if (!ok)
            crm_db_rollback(c);
        bool retry_race = !ok && !B->drift && err->code == CRM_E_CONFLICT && !raced;
        bool retry_careful = !ok && B->drift && !B->careful;
        crm_db_release(c);
        if (ok || !(retry_race || retry_careful))
            return ok;
        raced = raced || retry_race;
        B->careful = B->careful || retry_careful;
        crm_error_clear(err); /* start over: the failed attempt left nothing */
    }
}

static void free_batch(batch *B)
{
    for (size_t i = 0; i < B->n; i++)
        tp_item_reset(&B->items[i]);
    free(B->items);
    free(B->by_event);
    tp_free_slots(B);
}

json_t *crm_touchpoint_record_batch(json_t *items, const crm_write_ctx *ctx, crm_error *err)
{
    batch B = {.n = json_array_size(items), .ctx = ctx};
    B.items = calloc(B.n ? B.n : 1, sizeof *B.items);
    if (B.items == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < B.n; i++)
        B.items[i].doc = json_array_get(items, i);
    json_t *report = record(&B, err) ? batch_report(&B) : NULL;
    free_batch(&B);
    return report;
}

json_t *crm_touchpoint_record(json_t *body, const crm_write_ctx *ctx, bool *created, crm_error *err)
{
    tp_item item;
    memset(&item, 0, sizeof item);
    batch B = {.items = &item, .n = 1, .ctx = ctx};
    item.doc = body;
    bool ok = record(&B, err);
    free(B.by_event);
    tp_free_slots(&B);
    if (!ok) {
        tp_item_reset(&item);
        return NULL;
    }
    bool rejected = item.status == CRM_TP_REJECTED;
    if (rejected)
        tp_item_error(&item, err); /* the item's reasons are the request's */
    *created = item.status == CRM_TP_CREATED;
    long long stored = item.id;
    tp_item_reset(&item);
    if (rejected)
        return NULL;
    /* A key that may not read both customers and touchpoints gets a
     * receipt: the stored touchpoint names its customer (an oracle over
     * e-mail addresses and external ids), and a duplicate is whoever sent
     * that event first. */
    if (!tp_caller_may(&B, CRM_SCOPE_CUSTOMERS_READ | CRM_SCOPE_TOUCHPOINTS_READ))
        return json_pack("{s:I, s:s}", "id", (json_int_t)stored, "status",
                         *created ? "created" : "duplicate");
    crm_query q;
    crm_touchpoint_get_query(&q, stored);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    size_t len;
    char *text = crm_touchpoint_get_render(res, &len, err);
    PQclear(res);
    json_t *rep = text ? crm_json_load_stored(text) : NULL;
    free(text);
    return rep;
}
