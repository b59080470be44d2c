/*
 * metrics/internal.h — what the files of lib/metrics/ share.
 */
#ifndef CRM_METRICS_INTERNAL_H
#define CRM_METRICS_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "btyd.h"
#include "db.h"
#include "error.h"
#include "customer_metrics.h"

/* This process's configuration (crm_metrics_configure), by value. */
crm_metrics_config metrics_config(void);

/* The parameters as JSON objects ({"r", "alpha", "a", "b"}, {"p", "q", "gamma"}). */
json_t *metrics_bgnbd_json(const crm_bgnbd *m);
json_t *metrics_gg_json(const crm_gg *m);

/* Records a fit of model ("bg_nbd", "gamma_gamma") with params (stolen),
 * over nrows collapsed rows, on c; a converged fit goes in force, replacing the one before. */
bool metrics_model_store(crm_conn *c, const char *model, json_t *params,
                         const crm_fit_report *report, size_t nrows, bool converged,
                         const char *as_of, long long job_id, crm_error *err);

/* The fits in force on c; *have_* false when a model has none. */
bool metrics_models_in_force(crm_conn *c, crm_bgnbd *bg, bool *have_bg, crm_gg *gg, bool *have_gg,
                             crm_error *err);

#endif
