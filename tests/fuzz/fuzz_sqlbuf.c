/*
 * fuzz_sqlbuf.c — random sequences of SQL builder operations
 * (lib/list/sqlbuf.h) checked against a plain model: the text is always
 * exactly the fragments and placeholders appended, every placeholder names
 * a parameter that exists, and the parameter count is the number added,
 * until the builder reports failure (never a crash or an abort).
 *
 * Each operation is one byte (its low two bits pick append, param,
 * placeholder or bind) and its argument: a fragment's length and bytes
 * (any bytes, '%' included, up to a NUL), or a parameter number.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "list/sqlbuf.h"

typedef struct model {
    char *text;
    size_t len, cap;
    int nparams;
} model;

static void model_put(model *m, const char *s, size_t n)
{
    if (m->len + n + 1 > m->cap) {
        size_t cap = (m->len + n + 1) * 2;
        char *text = realloc(m->text, cap);
        if (text == NULL)
            abort();
        m->text = text;
        m->cap = cap;
    }
    memcpy(m->text + m->len, s, n);
    m->len += n;
    m->text[m->len] = '\0';
}

static void model_placeholder(model *m, int n)
{
    char text[16];
    int len = snprintf(text, sizeof text, "$%d", n);
    model_put(m, text, (size_t)len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    model m = {0};
    model_put(&m, "", 0);
    size_t at = 0;
    while (at < size && crm_sqlbuf_ok(&s)) {
        uint8_t op = data[at++];
        switch (op & 3) {
        case 0: { /* append a fragment of (op >> 2) bytes, cut at a NUL */
            size_t n = op >> 2;
            if (n > size - at)
                n = size - at;
            char fragment[64];
            memcpy(fragment, data + at, n);
            fragment[n] = '\0';
            at += n;
            crm_sqlbuf_append(&s, fragment);
            model_put(&m, fragment, strlen(fragment));
            break;
        }
        case 1: /* a parameter without text */
            if (crm_sqlbuf_param(&s, (op & 4) ? NULL : "v") != ++m.nparams)
                __builtin_trap();
            break;
        case 2: { /* a placeholder for parameter (op >> 2), maybe one never given */
            int n = op >> 2;
            crm_sqlbuf_placeholder(&s, n);
            if (n >= 1 && n <= m.nparams) {
                model_placeholder(&m, n);
                if (!crm_sqlbuf_ok(&s))
                    __builtin_trap();
            } else if (crm_sqlbuf_ok(&s)) {
                __builtin_trap(); /* a number it never gave must fail */
            }
            break;
        }
        default: /* bind: a parameter and its placeholder */
            if (crm_sqlbuf_bind(&s, "v") != ++m.nparams)
                __builtin_trap();
            model_placeholder(&m, m.nparams);
            break;
        }
        if (crm_sqlbuf_ok(&s) &&
            (s.nparams != m.nparams || strcmp(crm_sqlbuf_text(&s), m.text) != 0 ||
             strlen(crm_sqlbuf_text(&s)) != s.len))
            __builtin_trap();
    }
    crm_sqlbuf_free(&s);
    free(m.text);
    return 0;
}
