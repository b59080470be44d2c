/*
 * sqlbuf.h — SQL text assembled at run time, with its parameters.
 *
 * The one way crmd builds a statement whose shape depends on the request (a
 * list's filters, a search's terms, and later the segments' compiled rules).
 * Text comes only from the caller's constant fragments, appended as plain
 * bytes (never used as a printf format); every value goes into the parameter
 * vector, and the builder writes its placeholder ($1, $2, ...) itself, so the
 * text and the parameters can never disagree.
 *
 * Both halves grow as needed. When memory runs out or a limit is passed the
 * builder remembers it (failed) and ignores later calls, so a builder checks
 * once, at the end; nothing here aborts.
 *
 * Parameter values are borrowed: each must outlive the builder's use (the
 * list code keeps them in the request's arena).
 */
#ifndef CRM_LIST_SQLBUF_H
#define CRM_LIST_SQLBUF_H

#include <stdbool.h>
#include <stddef.h>

#define CRM_SQLBUF_MAX_TEXT (1024 * 1024) /* bytes of SQL text at most */
#define CRM_SQLBUF_MAX_PARAMS 65535       /* the protocol's own limit */

typedef struct crm_sqlbuf {
    char *text; /* NUL-terminated once anything was appended */
    size_t len, cap;
    const char **params;
    int nparams, cap_params;
    bool failed; /* out of memory or past a limit: the statement is unusable */
} crm_sqlbuf;

void crm_sqlbuf_init(crm_sqlbuf *s);

/* Frees the text and the vector (not the values); s is empty afterwards. */
void crm_sqlbuf_free(crm_sqlbuf *s);

/* Appends a constant fragment as it is ('%' included). */
void crm_sqlbuf_append(crm_sqlbuf *s, const char *fragment);

/* Adds value (NULL for SQL NULL) as the next parameter; returns its number
 * (1, 2, ...), or 0 when the builder has failed. Appends no text: the
 * caller writes the number with crm_sqlbuf_placeholder (for a value used
 * more than once). */
int crm_sqlbuf_param(crm_sqlbuf *s, const char *value);

/* Appends "$n" for parameter n (1..nparams). */
void crm_sqlbuf_placeholder(crm_sqlbuf *s, int n);

/* crm_sqlbuf_param then its placeholder: the usual way to put a value in.
 * Returns the parameter's number, or 0 when the builder has failed. */
int crm_sqlbuf_bind(crm_sqlbuf *s, const char *value);

/* True while nothing has failed: the text and the parameters agree. */
bool crm_sqlbuf_ok(const crm_sqlbuf *s);

/* The text ("" when empty), valid until the next append or free. */
const char *crm_sqlbuf_text(const crm_sqlbuf *s);

#endif
