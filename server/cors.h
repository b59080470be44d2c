/*
 * cors.h — Cross-Origin Resource Sharing for browser front ends.
 *
 * CRMD_CORS_ORIGINS lists the origins allowed to call the API from a
 * browser ("https://app.example.com,https://admin.example.com"), or is "*"
 * for any origin; empty (the default) sends no CORS headers at all. The list
 * is read once, before serving, and only read afterwards.
 *
 * crmd authenticates with bearer keys, never cookies, so it never sends
 * Access-Control-Allow-Credentials: "*" is safe to offer and a browser
 * sends the key only when the page's own code puts it in Authorization.
 */
#ifndef HTTP_CORS_H
#define HTTP_CORS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct http_request http_request;

/* Parses the allow-list (see above); on a bad entry writes why to errbuf
 * and returns false. Call once before serving; an empty or NULL list turns
 * CORS off. */
bool cors_configure(const char *origins, char *errbuf, size_t errsize);

/* True when origin (an Origin header's value) may call the API. */
bool cors_origin_allowed(const char *origin);

/* On every request, before anything can answer it: when CORS is on, adds
 * Vary: Origin, and for an allowed Origin, Access-Control-Allow-Origin and
 * Access-Control-Expose-Headers, so that errors are readable too. */
void http_cors_annotate(http_request *req);

/* For a request whose path exists but whose method no route has: when it
 * is a CORS preflight (OPTIONS with Origin and Access-Control-Request-
 * Method) and CORS is on, answers it (204 for an allowed origin, with the
 * path's methods from allow; 403 otherwise) and returns true. No key is
 * needed: browsers send none with a preflight. */
bool http_cors_preflight(http_request *req, const char *method, const char *allow);

#endif
