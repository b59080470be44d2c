/*
 * fuzz_currency_rate.c — a PUT of /v1/metrics/currency-rates/{currency}
 * as a client sends it: the path's code and the body, checked by
 * crm_metrics_rate_check (crm_currency_known's binary search included)
 * before anything reaches SQL.
 *
 * Input: the code up to the first newline, the body after it (parsed as
 * crmd parses bodies). Properties: the code is known exactly when a plain
 * scan of crm_currency_codes finds it; the check passes exactly when the
 * code is known and not the reporting currency (EUR, the default) and the
 * body is {"rate": number above 0 and below 1e9} and nothing else; a rate
 * that passes is written as text that reads back the same double; a refusal
 * is CRM_E_INVALID naming at least one field, each "currency", "" or a JSON
 * pointer.
 */
#include "fuzz.h"

#include "currency.h"
#include "customer_metrics.h"
#include "jbuf.h"
#include "json.h"

#include <math.h>

static bool listed(const char *code)
{
    for (size_t i = 0; i < crm_currency_count; i++)
        if (strcmp(code, crm_currency_codes[i]) == 0)
            return true;
    return false;
}

static bool body_ok(json_t *body)
{
    if (!json_is_object(body) || json_object_size(body) != 1)
        return false;
    json_t *rate = json_object_get(body, "rate");
    if (!json_is_number(rate))
        return false;
    double d = json_number_value(rate);
    return isfinite(d) && d > 0 && d < 1e9;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t code_len = nl ? (size_t)(nl - data) : size;
    char *code = fuzz_string(data, code_len);
    FUZZ_CHECK(crm_currency_known(code) == listed(code));

    crm_error err = CRM_ERROR_INIT;
    json_t *body = nl ? crm_json_parse((const char *)nl + 1, size - code_len - 1, &err) : NULL;
    if (nl != NULL && body == NULL) {
        FUZZ_CHECK(err.code == CRM_E_MALFORMED);
        crm_error_clear(&err);
        free(code);
        return 0;
    }
    double rate = 0;
    bool ok = crm_metrics_rate_check(code, body, &rate, &err);
    FUZZ_CHECK(ok == (listed(code) && strcmp(code, "EUR") != 0 && body_ok(body)));
    if (ok) {
        FUZZ_CHECK(err.code == CRM_OK && rate > 0 && rate < CRM_RATE_MAX);
        char text[CRM_REAL_TEXT_SIZE];
        crm_format_real(rate, text);
        FUZZ_CHECK(strtod(text, NULL) == rate);
    } else {
        FUZZ_CHECK(err.code == CRM_E_INVALID && json_array_size(err.errors) > 0);
        size_t i;
        json_t *e;
        json_array_foreach(err.errors, i, e) {
            const char *field = json_string_value(json_object_get(e, "field"));
            FUZZ_CHECK(field != NULL);
            FUZZ_CHECK(strcmp(field, "currency") == 0 || field[0] == '\0' || field[0] == '/');
        }
    }
    crm_error_clear(&err);
    json_decref(body);
    free(code);
    return 0;
}
