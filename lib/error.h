/*
 * error.h — the one error type that travels from lib/ to the HTTP edge.
 *
 * A function that can fail takes a `crm_error *err` as its last argument and
 * returns false (or NULL) after filling it with crm_error_set(). The HTTP edge
 * turns the code into a status and the whole value into problem+json. Nothing
 * in lib/ knows about HTTP; the code says what kind of failure it is.
 */
#ifndef CRM_ERROR_H
#define CRM_ERROR_H

#include <stdbool.h>
#include <jansson.h>

typedef enum crm_errcode {
    CRM_OK = 0,
    CRM_E_MALFORMED,     /* the input could not be parsed at all */
    CRM_E_INVALID,       /* parsed, but the content breaks a rule */
    CRM_E_NOT_FOUND,     /* the named thing does not exist */
    CRM_E_CONFLICT,      /* the write collides with stored state */
    CRM_E_UNAUTHORIZED,  /* no credential, or one we do not accept */
    CRM_E_FORBIDDEN,     /* a valid credential without the right scope */
    CRM_E_TOO_LARGE,     /* input over a configured limit */
    CRM_E_UNSUPPORTED,   /* media type we do not speak */
    CRM_E_PRECONDITION,  /* If-Match did not match */
    CRM_E_GONE,          /* it was there once and no longer is (an expired sync cursor) */
    CRM_E_UNAVAILABLE,   /* the database cannot be reached right now */
    CRM_E_INTERNAL,      /* our fault; details go to the log, not the client */
} crm_errcode;

#define CRM_ERROR_DETAIL_MAX 512

typedef struct crm_error {
    crm_errcode code;
    char detail[CRM_ERROR_DETAIL_MAX];
    json_t *errors; /* optional array of {"field","message"}; owned here */
} crm_error;

#define CRM_ERROR_INIT {CRM_OK, {0}, NULL}

/* Sets code and a printf-style detail. Always returns false, so a failing
 * function can end with `return crm_error_set(err, ...);`. err may be NULL. */
bool crm_error_set(crm_error *err, crm_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds one {"field": JSON pointer, "message"} entry for a validation error. */
void crm_error_add_field(crm_error *err, const char *field, const char *message);

/* Releases what the error owns and resets it to CRM_OK. */
void crm_error_clear(crm_error *err);

/* Hands src's error to dst (whose own is released first; NULL: src's is
 * dropped); src is left CRM_OK. For an error made on another thread or
 * before the caller's err could be known. */
void crm_error_move(crm_error *dst, crm_error *src);

/* A stable short name for the code, used as the tail of the problem type URI. */
const char *crm_errcode_name(crm_errcode code);

#endif
