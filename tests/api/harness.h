/*
 * harness.h — what the API suites share: a real crmd child process, HTTP
 * over libcurl, JSON bodies, API keys made with `crmd keys create`, and the
 * test database's stop/start commands.
 *
 * The environment (set by scripts/test, or by hand):
 *   CRMD_BIN                the crmd binary under test
 *   CRMD_TEST_DATABASE_URL  the database every crmd of the run uses
 *   CRMD_TEST_PG_STOP / CRMD_TEST_PG_START
 *                           shell commands that stop/start that database
 *                           (outage suite only)
 *
 * Processes: every crmd is started with PR_SET_PDEATHSIG, and each one is
 * remembered with the pid of the process that started it, whose atexit
 * handler kills what is still running. A test that fails half-way (Check
 * ends the forked test process at the failed assertion, skipping teardown)
 * therefore never leaves a crmd behind.
 */
#ifndef API_HARNESS_H
#define API_HARNESS_H

#include <check.h>
#include <libpq-fe.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Every TCase gets this much time (seconds); every HTTP call far less. */
#define HARNESS_TCASE_TIMEOUT_S 60
#define HARNESS_HTTP_TIMEOUT_MS 5000

/* ---- the crmd process -------------------------------------------------- */

typedef struct crmd_server {
    pid_t pid; /* 0 when not running (or already reaped) */
    int port;
    char base_url[64];  /* "http://127.0.0.1:<port>" */
    char log_path[256]; /* the child's stderr: log lines and access log */
    int exit_status;    /* after crmd_stop: see there */
} crmd_server;

/* Starts `crmd serve` on a free loopback port with CRMD_DATABASE_URL and
 * CRMD_LISTEN set, plus extra_env: a NULL-terminated list of "NAME=value"
 * that may override either (extra_env may be NULL). CRMD_* variables of the
 * test process itself are not passed on. Returns once /healthz answers 200;
 * false (with the reason on stderr, the child killed) when it does not
 * within the startup limit. */
bool crmd_start(crmd_server *srv, const char *const *extra_env);

/* Sends SIGTERM and waits up to timeout_s for the process to exit. Returns
 * its exit status (0..255), 128 + the signal when a signal ended it, or -1
 * when it was still running at the deadline (it is then killed). Also kept
 * in srv->exit_status. Returns the earlier result when already stopped. */
int crmd_stop(crmd_server *srv, int timeout_s);

/* Kills the process with SIGKILL and reaps it, when still running. */
void crmd_kill(crmd_server *srv);

/* True while the process has not exited (only the process that started it
 * can tell). */
bool crmd_running(crmd_server *srv);

/* Reads the child's whole log so far; the caller frees it. */
char *crmd_read_log(const crmd_server *srv);

/* Waits up to timeout_ms for an access-log line whose request_id is id and
 * returns it parsed (caller json_decref's it) or NULL. When raw_line is not
 * NULL it receives a malloc'd copy of the line as written. */
json_t *crmd_wait_access_log(const crmd_server *srv, const char *id, int timeout_ms,
                             char **raw_line);

/* Sets up the common per-test fixture: starts srv with extra_env and fails
 * the test when it does not come up. */
void crmd_fixture_start(crmd_server *srv, const char *const *extra_env);

/* Tears it down: stops srv and checks that crmd exited with status 0 (a
 * sanitizer report or a hang on SIGTERM is a failure of the test). */
void crmd_fixture_stop(crmd_server *srv);

/* ---- HTTP -------------------------------------------------------------- */

typedef struct http_response {
    CURLcode curl_code; /* CURLE_OK when a complete response arrived */
    char curl_error[CURL_ERROR_SIZE];
    long status;
    char *body; /* NUL-terminated (the NUL is not counted in body_len) */
    size_t body_len;
    size_t body_cap; /* allocated for body */
    size_t nheaders;
    char **header_names, **header_values;
    long num_connects; /* new connections this transfer needed */
} http_response;

typedef struct http_call {
    const char *method;         /* NULL: GET, or POST when there is a body */
    const char *path;           /* appended to the server's base URL */
    const char *api_key;        /* sent as "Authorization: Bearer <key>" */
    const char *body;           /* NULL: no body */
    size_t body_len;            /* 0: strlen(body) */
    const char *content_type;   /* default application/json when there is a body */
    bool chunked;               /* send the body with Transfer-Encoding: chunked */
    const char *const *headers; /* extra "Name: value" lines, NULL-terminated */
    /* A body produced by a callback instead (body must be NULL). With
     * read_len >= 0 it is announced with Content-Length, else chunked. */
    curl_read_callback read_cb;
    void *read_data;
    curl_off_t read_len;
    CURL *curl;      /* a handle to reuse (keep-alive); NULL: a fresh one */
    long timeout_ms; /* 0: HARNESS_HTTP_TIMEOUT_MS */
} http_call;

/* Performs one request against srv. Never fails the test by itself: a
 * transport failure is reported in curl_code. Free with http_response_free. */
http_response http_send(const crmd_server *srv, const http_call *call);

http_response http_get(const crmd_server *srv, const char *path, const char *key);
http_response http_post_json(const crmd_server *srv, const char *path, const char *key,
                             const char *body);
http_response http_delete(const crmd_server *srv, const char *path, const char *key);

void http_response_free(http_response *r);

/* The value of the (last) response header called name, any case; or NULL. */
const char *http_response_header(const http_response *r, const char *name);

/* The body parsed as JSON, or NULL; the caller json_decref's it. */
json_t *http_response_json(const http_response *r);

/* Sends request bytes on a fresh TCP connection to srv, reads until the
 * server closes it (or timeout_ms passes) and returns what came back,
 * NUL-terminated, length in *len. The caller frees it. NULL when the
 * connection could not be made. */
char *http_raw_exchange(const crmd_server *srv, const char *request, size_t *len, int timeout_ms);

/* True when a TCP connect to the server's port is refused. */
bool http_connect_refused(const crmd_server *srv);

/* ---- API keys ---------------------------------------------------------- */

typedef struct api_key {
    char secret[64]; /* the whole key: what goes after "Bearer " */
    char prefix[16];
    long long id;
} api_key;

/* Creates a key with `$CRMD_BIN keys create --name t --scopes scopes`
 * against the test database. False (reason on stderr) on failure. */
bool api_key_create(const char *scopes, api_key *out);

/* The admin key made once per run before any suite (see main.c). */
extern api_key harness_admin_key;

/* Makes the directory this run's crmd logs go to (under $TMPDIR or /tmp);
 * false when it cannot. */
bool harness_log_dir_create(void);

/* Removes the log directory and what is left in it (the logs of tests that
 * failed, whose teardown did not run) when keep is false; otherwise says
 * on stderr where they are. */
void harness_log_dir_finish(bool keep);

/* ---- assertions and small things ---------------------------------------- */

/* Fails the test unless r is a complete problem+json response with the
 * given HTTP status whose body has type, title, detail, instance, a
 * request_id equal to the X-Request-Id header, and "status" equal to the
 * HTTP status. Returns the parsed body (caller json_decref's it). Failure
 * messages name the caller's file and line. */
#define assert_problem(r, status) assert_problem_at((r), (status), __FILE__, __LINE__)
json_t *assert_problem_at(const http_response *r, long status, const char *file, int line);

/* True when the problem document's errors[] names field. */
bool problem_names_field(json_t *problem, const char *field);

/* Milliseconds on the monotonic clock. */
long long harness_now_ms(void);

void harness_sleep_ms(long ms);

/* Runs a shell command from the environment variable var (the test
 * database's stop/start); returns its exit status, -1 when var is unset. */
int harness_run_env_command(const char *var);

/* The value of a required environment variable; exits the run when unset. */
const char *harness_env(const char *name);

/* A string no other test or run uses: what, the pid, a serial and random
 * bits. */
void harness_unique(char *buf, size_t size, const char *what);

/* A connection to CRMD_TEST_DATABASE_URL for setting up and checking
 * state; fails the test when it cannot connect. PQfinish() it. */
PGconn *harness_db_connect(void);

/* Runs sql with one text parameter (or none when param is NULL) and returns
 * the first column of its one row as a number; fails the test otherwise. */
long long harness_sql_number(PGconn *db, const char *sql, const char *param);

/* Makes this process sign and verify cursors as the crmd of this test run
 * does: loads the secret that crmd stored in the database (the fixture's
 * crmd must have started once). Lets tests forge *signed* cursors to check
 * the server's own range checks and retention. */
void harness_cursor_secret_load(void);

/* Suites (one file each). */
Suite *ops_suite(void);
Suite *treatments_suite(void);
Suite *errors_suite(void);
Suite *apikeys_suite(void);
Suite *http_suite(void);
Suite *outage_suite(void);
Suite *customers_suite(void);
Suite *customer_search_suite(void);
Suite *consents_suite(void);
Suite *customer_merge_suite(void);
Suite *customer_privacy_suite(void);
Suite *sync_suite(void);
Suite *touchpoints_suite(void);
Suite *scopes_suite(void);
Suite *hostile_values_suite(void);
Suite *query_suite(void);
Suite *cors_suite(void);
Suite *ratelimit_suite(void);
Suite *metrics_suite(void);
Suite *metrics_patterns_suite(void);
Suite *metrics_base_suite(void);
Suite *jobs_suite(void);
Suite *currency_rates_suite(void);
Suite *segments_suite(void);
Suite *treatment_rules_suite(void);
Suite *contacts_suite(void);
Suite *campaigns_suite(void);
Suite *campaign_execution_suite(void);

#endif
