/*
 * touchpoints/internal.h — what the files of lib/touchpoints/ share and
 * nothing outside them uses: the select list of a stored touchpoint, an item
 * of a batch being recorded and the batch itself, and the steps of recording
 * that live in one file and run from another. The public interface is
 * lib/touchpoints.h.
 */
#ifndef CRM_TOUCHPOINTS_INTERNAL_H
#define CRM_TOUCHPOINTS_INTERNAL_H

#include "touchpoints.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* The columns of a stored touchpoint, in the order crm_touchpoint_write
 * reads them (alias t). */
#define TP_COLUMNS                                                                                 \
    "t.id, t.customer_id, t.channel, t.type, t.direction, "                                        \
    "(date_part('epoch', t.occurred_at) * 1000)::bigint, "                                         \
    "(date_part('epoch', t.received_at) * 1000)::bigint, t.source, t.event_id, t.campaign_id, "    \
    "t.amount::text, t.currency, t.items::text, t.feedback::text, t.properties::text, t.erased, "  \
    "t.purpose, t.offer_code"
#define TP_NCOLUMNS 18

typedef enum { REF_NONE, REF_ID, REF_EXTERNAL, REF_EMAIL } ref_kind;

typedef struct tp_item {
    json_t *doc; /* borrowed from the request */
    crm_tp_status status;
    /* Why it was rejected: CRM_E_INVALID or CRM_E_FORBIDDEN, and the
     * [{"field", "message"}] (owned; NULL while there are none). Kept this
     * small, with no inline detail text, because a batch holds 10,000. */
    crm_errcode code;
    json_t *field_errors;
    ref_kind ref;
    long long ref_id;
    const char *ref_source, *ref_external_id, *ref_email;
    char *email_normalized; /* of an e-mail reference; owned */
    bool create_customer;
    bool made_customer;    /* this write created customer_id for it */
    long long customer_id; /* resolved */
    const char *source, *event_id;
    char occurred_at[CRM_RFC3339_UTC_SIZE]; /* in UTC: what goes to SQL */
    int first;    /* for an in-batch duplicate: the index of the first */
    long long id; /* the touchpoint stored, or the one already there */
    long long copy_id; /* the id copy_pending took for it */
} tp_item;

/* A reference that items ask to create a customer for, by its key. */
typedef struct ref_slot {
    char *key;
    size_t item;
} ref_slot;

typedef struct batch {
    tp_item *items;
    size_t n;
    const crm_write_ctx *ctx;
    tp_item **by_event; /* the valid items that come first with their event, sorted */
    size_t n_by_event;
    ref_slot *slots; /* while customers are made: sorted by key, then item */
    size_t n_slots;
    /* A bulk statement broke a database rule the validator does not know
     * (drift): the attempt is given up and the next one is careful, storing
     * by halves behind savepoints so that only the offending items fail. */
    bool drift, careful;
} batch;

/* What a caller that cannot read customers is told when a reference does
 * not name exactly one live customer, whatever the reason: nothing that
 * tells an unknown reference from one several customers share. */
#define REFERENCE_REFUSED "does not name exactly one live customer"

/* validate.c: checks doc into it (status, errors, the parsed reference). */
void tp_check_item(json_t *doc, tp_item *it, long long now_ms);

/* batch.c: marks it rejected for field, with message. */
void tp_reject(tp_item *it, const char *field, const char *message);

/* Adds a field error to it (which the end of tp_check_item, or tp_reject,
 * turns into a rejection). */
void tp_field_error(tp_item *it, const char *field, const char *message);

/* it's rejection as the error of a request, in err (emptied first). */
void tp_item_error(const tp_item *it, crm_error *err);

/* Frees what it owns and zeroes it, keeping its document. */
void tp_item_reset(tp_item *it);

/* resolve.c: the caller's rights, and finding or making the customers. */
bool tp_caller_may(const batch *B, unsigned scope);
void tp_check_scopes(const batch *B, tp_item *it);
bool tp_run_rows(crm_conn *c, crm_stmt *stmt, const char *json, const char *extra, batch *B,
                 void (*apply)(batch *, const PGresult *, int), crm_error *err);
char *tp_take_rows(crm_jbuf *b, size_t count);
bool tp_resolve(crm_conn *c, batch *B, ref_kind kind, crm_error *err);
bool tp_create_missing(crm_conn *c, batch *B, crm_error *err);
void tp_free_slots(batch *B);

/* store.c: stores the checked items of B on c, in its transaction. */
bool tp_store_batch(crm_conn *c, batch *B, crm_error *err);

#endif
