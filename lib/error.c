/*
 * error.c — filling and clearing crm_error values.
 */
#include "error.h"
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool crm_error_set(crm_error *err, crm_errcode code, const char *fmt, ...)
{
    if (err == NULL)
        return false;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    return false;
}

void crm_error_add_field(crm_error *err, const char *field, const char *message)
{
    if (err == NULL)
        return;
    if (err->errors == NULL)
        err->errors = json_array();
    /* A field named after client bytes (a query key, a JSON key) may not be
     * UTF-8, and Jansson refuses such a string: the entry would be lost. */
    size_t flen = strlen(field), mlen = strlen(message);
    char *f = malloc(3 * flen + 1), *m = malloc(3 * mlen + 1);
    if (f != NULL && m != NULL) {
        crm_utf8_sanitize(field, flen, f, 3 * flen + 1);
        crm_utf8_sanitize(message, mlen, m, 3 * mlen + 1);
        json_array_append_new(err->errors, json_pack("{s:s, s:s}", "field", f, "message", m));
    }
    free(f);
    free(m);
}

void crm_error_clear(crm_error *err)
{
    if (err == NULL)
        return;
    json_decref(err->errors);
    err->errors = NULL;
    err->code = CRM_OK;
    err->detail[0] = '\0';
}

void crm_error_move(crm_error *dst, crm_error *src)
{
    if (dst == NULL) {
        crm_error_clear(src);
        return;
    }
    crm_error_clear(dst);
    *dst = *src;
    *src = (crm_error)CRM_ERROR_INIT;
}

const char *crm_errcode_name(crm_errcode code)
{
    switch (code) {
    case CRM_OK: return "ok";
    case CRM_E_MALFORMED: return "malformed-request";
    case CRM_E_INVALID: return "validation-failed";
    case CRM_E_NOT_FOUND: return "not-found";
    case CRM_E_CONFLICT: return "conflict";
    case CRM_E_UNAUTHORIZED: return "unauthorized";
    case CRM_E_FORBIDDEN: return "forbidden";
    case CRM_E_TOO_LARGE: return "payload-too-large";
    case CRM_E_UNSUPPORTED: return "unsupported-media-type";
    case CRM_E_PRECONDITION: return "precondition-failed";
    case CRM_E_GONE: return "gone";
    case CRM_E_UNAVAILABLE: return "service-unavailable";
    case CRM_E_INTERNAL: return "internal-error";
    }
    return "internal-error";
}
