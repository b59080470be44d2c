/*
 * sqlbuf.c — the run-time SQL builder (see sqlbuf.h).
 */
#include "list/sqlbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void crm_sqlbuf_init(crm_sqlbuf *s)
{
    memset(s, 0, sizeof *s);
}

void crm_sqlbuf_free(crm_sqlbuf *s)
{
    free(s->text);
    free(s->params);
    crm_sqlbuf_init(s);
}

/* Room for n more bytes of text and a NUL; false (and failed) past the
 * limit or when memory runs out. */
static bool reserve_text(crm_sqlbuf *s, size_t n)
{
    if (s->failed)
        return false;
    if (n > CRM_SQLBUF_MAX_TEXT - s->len) {
        s->failed = true;
        return false;
    }
    size_t need = s->len + n + 1;
    if (need <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : 512;
    while (cap < need)
        cap *= 2;
    char *text = realloc(s->text, cap);
    if (text == NULL) {
        s->failed = true;
        return false;
    }
    s->text = text;
    s->cap = cap;
    return true;
}

static void append_bytes(crm_sqlbuf *s, const char *bytes, size_t n)
{
    if (!reserve_text(s, n))
        return;
    memcpy(s->text + s->len, bytes, n);
    s->len += n;
    s->text[s->len] = '\0';
}

void crm_sqlbuf_append(crm_sqlbuf *s, const char *fragment)
{
    if (fragment == NULL) { /* a programming error, but never a crash */
        s->failed = true;
        return;
    }
    append_bytes(s, fragment, strlen(fragment));
}

int crm_sqlbuf_param(crm_sqlbuf *s, const char *value)
{
    if (s->failed)
        return 0;
    if (s->nparams == CRM_SQLBUF_MAX_PARAMS) {
        s->failed = true;
        return 0;
    }
    if (s->nparams == s->cap_params) {
        int cap = s->cap_params ? s->cap_params * 2 : 16;
        if (cap > CRM_SQLBUF_MAX_PARAMS)
            cap = CRM_SQLBUF_MAX_PARAMS;
        const char **params = realloc(s->params, sizeof *params * (size_t)cap);
        if (params == NULL) {
            s->failed = true;
            return 0;
        }
        s->params = params;
        s->cap_params = cap;
    }
    s->params[s->nparams++] = value;
    return s->nparams;
}

void crm_sqlbuf_placeholder(crm_sqlbuf *s, int n)
{
    if (s->failed)
        return;
    if (n < 1 || n > s->nparams) { /* a number this builder never gave */
        s->failed = true;
        return;
    }
    char text[16];
    int len = snprintf(text, sizeof text, "$%d", n);
    append_bytes(s, text, (size_t)len);
}

int crm_sqlbuf_bind(crm_sqlbuf *s, const char *value)
{
    int n = crm_sqlbuf_param(s, value);
    if (n > 0)
        crm_sqlbuf_placeholder(s, n);
    return s->failed ? 0 : n;
}

bool crm_sqlbuf_ok(const crm_sqlbuf *s)
{
    return !s->failed;
}

const char *crm_sqlbuf_text(const crm_sqlbuf *s)
{
    return s->text ? s->text : "";
}
