/*
 * test_http.c — the HTTP layer itself: keep-alive connections, graceful
 * shutdown on SIGTERM, and the one-line JSON access log.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEEP_ALIVE_REQUESTS 20
/* The slow upload takes about 3 s (42 bytes, 4 at a time, 300 ms apart): long
 * enough to outlast the up to 1 s a test waits for crmd to stop listening
 * after SIGTERM on a loaded machine. At 10 bytes a chunk (1.2 s) the upload
 * sometimes ended first, crmd exited, and the kept-alive test found no
 * server. */
#define SLOW_CHUNK_BYTES 4
#define SLOW_CHUNK_PAUSE_MS 300
#define LOG_WAIT_MS 2000

static crmd_server srv;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* ---- keep-alive ------------------------------------------------------------- */

/* Sends call KEEP_ALIVE_REQUESTS times on one curl handle and checks that
 * only the first needed a new connection. */
static void assert_one_connection_for(http_call call, long expected_status)
{
    CURL *curl = curl_easy_init();
    ck_assert_ptr_nonnull(curl);
    call.curl = curl;
    for (int i = 0; i < KEEP_ALIVE_REQUESTS; i++) {
        http_response r = http_send(&srv, &call);
        ck_assert_msg(r.curl_code == CURLE_OK, "request %d: %s", i + 1, r.curl_error);
        ck_assert_msg(r.status == expected_status, "request %d answered %ld: %.300s", i + 1,
                      r.status, r.body);
        ck_assert_msg(r.num_connects == (i == 0 ? 1 : 0), "request %d opened %ld new connections",
                      i + 1, r.num_connects);
        http_response_free(&r);
    }
    curl_easy_cleanup(curl);
}

START_TEST(keep_alive_serves_20_healthz_requests_on_one_connection)
{
    http_call call = {.path = "/healthz"};
    assert_one_connection_for(call, 200);
}
END_TEST

START_TEST(keep_alive_holds_across_404_answers)
{
    http_call call = {.path = "/v1/no-such-resource"};
    assert_one_connection_for(call, 404);
}
END_TEST

START_TEST(keep_alive_holds_across_posts_with_a_body)
{
    http_call call = {.path = "/v1/api-keys",
                      .api_key = harness_admin_key.secret,
                      .body = "{\"name\":\"kept alive\",\"scopes\":[\"admin\"]}"};
    assert_one_connection_for(call, 201);
}
END_TEST

START_TEST(keep_alive_holds_across_422_answers_to_posts)
{
    http_call call = {.path = "/v1/api-keys",
                      .api_key = harness_admin_key.secret,
                      .body = "{\"name\":\"kept alive\",\"scopes\":[\"nope\"]}"};
    assert_one_connection_for(call, 422);
}
END_TEST

/* ---- graceful shutdown ---------------------------------------------------------- */

static const char slow_body[] = "{\"name\":\"slow upload\",\"scopes\":[\"admin\"]}";

/* A create request whose body trickles in SLOW_CHUNK_BYTES at a time with
 * a pause before every chunk but the first, sent from its own thread. */
typedef struct slow_upload {
    const crmd_server *server;
    pthread_t thread;
    size_t pos;
    atomic_int chunks_sent;
    atomic_bool done;
    http_response response;
} slow_upload;

static size_t slow_read(char *dest, size_t size, size_t nitems, void *userdata)
{
    slow_upload *u = userdata;
    if (u->pos > 0)
        harness_sleep_ms(SLOW_CHUNK_PAUSE_MS);
    size_t n = sizeof slow_body - 1 - u->pos;
    if (n > SLOW_CHUNK_BYTES)
        n = SLOW_CHUNK_BYTES;
    if (n > size * nitems)
        n = size * nitems;
    memcpy(dest, slow_body + u->pos, n);
    u->pos += n;
    atomic_fetch_add(&u->chunks_sent, 1);
    return n;
}

static void *slow_upload_run(void *arg)
{
    slow_upload *u = arg;
    http_call call = {.path = "/v1/api-keys",
                      .api_key = harness_admin_key.secret,
                      .read_cb = slow_read,
                      .read_data = u,
                      .read_len = (curl_off_t)(sizeof slow_body - 1),
                      .timeout_ms = 15000};
    u->response = http_send(u->server, &call);
    atomic_store(&u->done, true);
    return NULL;
}

/* crmd_http_requests_in_flight from /metrics, this request included. */
static long requests_in_flight(const crmd_server *server)
{
    http_response r = http_get(server, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    const char *line = strstr(r.body, "\ncrmd_http_requests_in_flight ");
    ck_assert_ptr_nonnull(line);
    long n = strtol(line + strlen("\ncrmd_http_requests_in_flight "), NULL, 10);
    http_response_free(&r);
    return n;
}

/* Starts the upload to server and returns once crmd counts it in flight.
 * That its first chunk left curl is not enough: on a slow machine (TSan) the
 * connection could still wait in the listen backlog when the test sent
 * SIGTERM, and closing the listener resets those (CI, stop 17). */
static void slow_upload_start(slow_upload *u, const crmd_server *server)
{
    memset(u, 0, sizeof *u);
    u->server = server;
    ck_assert_int_eq(pthread_create(&u->thread, NULL, slow_upload_run, u), 0);
    long long deadline = harness_now_ms() + 3000;
    while (atomic_load(&u->chunks_sent) == 0 && harness_now_ms() < deadline)
        harness_sleep_ms(5);
    ck_assert_msg(atomic_load(&u->chunks_sent) > 0, "the upload did not start");
    long in_flight;
    while ((in_flight = requests_in_flight(server)) < 2 && harness_now_ms() < deadline)
        harness_sleep_ms(5);
    ck_assert_msg(in_flight >= 2, "crmd never counted the upload in flight");
    ck_assert_msg(!atomic_load(&u->done), "the upload ended early: HTTP %ld %s", u->response.status,
                  u->response.curl_error);
}

static void slow_upload_finish(slow_upload *u)
{
    pthread_join(u->thread, NULL);
}

START_TEST(sigterm_lets_an_in_flight_request_finish_with_its_complete_response)
{
    slow_upload u;
    slow_upload_start(&u, &srv);
    ck_assert_int_eq(kill(srv.pid, SIGTERM), 0);
    slow_upload_finish(&u);

    ck_assert_msg(u.response.curl_code == CURLE_OK, "the request failed: %s",
                  u.response.curl_error);
    ck_assert_msg(u.response.status == 201, "HTTP %ld: %.300s", u.response.status, u.response.body);
    json_t *key = http_response_json(&u.response);
    ck_assert_msg(key != NULL, "incomplete body: %.300s", u.response.body);
    ck_assert_str_eq(json_string_value(json_object_get(key, "name")), "slow upload");
    ck_assert_int_eq(strlen(json_string_value(json_object_get(key, "secret"))), 58);
    json_decref(key);
    http_response_free(&u.response);
}
END_TEST

START_TEST(sigterm_with_a_request_in_flight_exits_0_and_then_refuses_connections)
{
    slow_upload u;
    slow_upload_start(&u, &srv);
    ck_assert_int_eq(crmd_stop(&srv, 15), 0);
    slow_upload_finish(&u);
    ck_assert_int_eq(u.response.status, 201);
    ck_assert(http_connect_refused(&srv));
    http_response_free(&u.response);
}
END_TEST

START_TEST(sigterm_stops_accepting_connections_while_requests_are_still_in_flight)
{
    slow_upload u;
    slow_upload_start(&u, &srv);
    ck_assert_int_eq(kill(srv.pid, SIGTERM), 0);
    long long deadline = harness_now_ms() + 1000;
    bool refused = false;
    while (!refused && harness_now_ms() < deadline) {
        refused = http_connect_refused(&srv);
        if (!refused)
            harness_sleep_ms(10);
    }
    bool upload_still_running = !atomic_load(&u.done);
    slow_upload_finish(&u);
    ck_assert_msg(refused, "new connections were still accepted 1 s after SIGTERM");
    ck_assert_msg(upload_still_running, "the in-flight upload ended before the test could tell");
    ck_assert_int_eq(u.response.status, 201);
    http_response_free(&u.response);
}
END_TEST

START_TEST(sigterm_still_answers_kept_alive_connections_with_connection_close)
{
    CURL *curl = curl_easy_init();
    http_call healthz = {.path = "/healthz", .curl = curl};
    http_response first = http_send(&srv, &healthz);
    ck_assert_int_eq(first.status, 200);
    http_response_free(&first);

    slow_upload u;
    slow_upload_start(&u, &srv);
    ck_assert_int_eq(kill(srv.pid, SIGTERM), 0);
    long long deadline = harness_now_ms() + 1000;
    while (!http_connect_refused(&srv) && harness_now_ms() < deadline)
        harness_sleep_ms(10);

    http_response during = http_send(&srv, &healthz);
    ck_assert_msg(during.status == 200, "HTTP %ld (%s)", during.status, during.curl_error);
    ck_assert_int_eq(during.num_connects, 0);
    const char *connection = http_response_header(&during, "Connection");
    ck_assert_msg(connection != NULL && strcasecmp(connection, "close") == 0, "Connection: %s",
                  connection ? connection : "(none)");
    http_response_free(&during);
    curl_easy_cleanup(curl);
    slow_upload_finish(&u);
    http_response_free(&u.response);
}
END_TEST

START_TEST(sigterm_abandons_requests_that_outlast_the_shutdown_timeout)
{
    static const char *const env[] = {"CRMD_SHUTDOWN_TIMEOUT_S=0", NULL};
    crmd_server impatient;
    crmd_fixture_start(&impatient, env);
    slow_upload u;
    slow_upload_start(&u, &impatient);
    long long start = harness_now_ms();
    int status = crmd_stop(&impatient, 10);
    long long took = harness_now_ms() - start;
    bool upload_was_running = !atomic_load(&u.done);
    slow_upload_finish(&u);
    ck_assert_int_eq(status, 0);
    ck_assert_msg(upload_was_running && took < 1000,
                  "with a 0 s shutdown timeout crmd took %lld ms to exit", took);
    ck_assert_msg(u.response.status != 201, "the abandoned request was answered 201");
    http_response_free(&u.response);
    crmd_fixture_stop(&impatient);
}
END_TEST

/* A read deferred to the database loop when SIGTERM's deadline passes: a
 * statement waits behind a lock the test holds. crmd must fail it (503, or
 * close the connection), resume the connection and exit 0, not abort in
 * libmicrohttpd with a suspended connection. */
typedef struct held_read {
    const crmd_server *server;
    char path[64];
    long timeout_ms;
    pthread_t thread;
    http_response response;
} held_read;

static void *held_read_run(void *arg)
{
    held_read *h = arg;
    http_call call = {.path = h->path, .api_key = harness_admin_key.secret,
                      .timeout_ms = h->timeout_ms};
    h->response = http_send(h->server, &call);
    return NULL;
}

/* client_timeout_ms: how long the client waits; shorter than the hold, it
 * has gone (closed its connection) before the SIGTERM. */
static void sigterm_fails_a_deferred_read_held_by_a_lock(const char *timeout_var,
                                                          long client_timeout_ms)
{
    const char *env[] = {timeout_var, NULL};
    crmd_server impatient;
    crmd_fixture_start(&impatient, env);
    /* A write first: it caches the key, so the read runs on the I/O thread
     * and defers its statement to the database loop. */
    http_response made =
        http_post_json(&impatient, "/v1/customers", harness_admin_key.secret,
                       "{\"first_name\": \"Held\", \"last_name\": \"Behind a lock\"}");
    ck_assert_msg(made.status == 201, "HTTP %ld: %.300s", made.status, made.body);
    json_t *customer = http_response_json(&made);
    long long id = json_integer_value(json_object_get(customer, "id"));
    json_decref(customer);
    http_response_free(&made);

    PGconn *db = harness_db_connect();
    PQclear(PQexec(db, "BEGIN"));
    PGresult *lock = PQexec(db, "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(lock), PGRES_COMMAND_OK);
    PQclear(lock);

    held_read h = {.server = &impatient, .timeout_ms = client_timeout_ms};
    snprintf(h.path, sizeof h.path, "/v1/customers/%lld", id);
    ck_assert_int_eq(pthread_create(&h.thread, NULL, held_read_run, &h), 0);
    harness_sleep_ms(500); /* the read is waiting on the lock */
    int status = crmd_stop(&impatient, 20);
    pthread_join(h.thread, NULL);
    PQclear(PQexec(db, "ROLLBACK"));
    PQfinish(db);

    ck_assert_msg(status == 0, "crmd exited with %d after SIGTERM (134 is an abort, -1 a hang)",
                  status);
    ck_assert_msg(h.response.status == 503 || h.response.curl_code != CURLE_OK,
                  "the held read was answered %ld: %.300s", h.response.status, h.response.body);
    if (h.response.status == 503)
        json_decref(assert_problem(&h.response, 503));
    http_response_free(&h.response);
    crmd_fixture_stop(&impatient);
}

/* Review C10: the read routes run on the event loops' sessions, whose
 * statement timeout is CRMD_READ_TIMEOUT_MS (5 s by default), not the 30 s
 * of the pool: a page held up (here by a lock) answers 503 once it is
 * spent, and the loop's connection serves the next read. */
START_TEST(a_read_that_outlasts_the_read_timeout_answers_503_and_the_next_read_is_served)
{
    const char *env[] = {"CRMD_READ_TIMEOUT_MS=300", NULL};
    crmd_server quick;
    crmd_fixture_start(&quick, env);
    http_response made = http_post_json(&quick, "/v1/customers", harness_admin_key.secret,
                                        "{\"first_name\": \"Timed\", \"last_name\": \"Out\"}");
    ck_assert_msg(made.status == 201, "HTTP %ld: %.300s", made.status, made.body);
    json_t *customer = http_response_json(&made);
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld",
             (long long)json_integer_value(json_object_get(customer, "id")));
    json_decref(customer);
    http_response_free(&made);

    PGconn *db = harness_db_connect();
    PQclear(PQexec(db, "BEGIN"));
    PGresult *lock = PQexec(db, "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(lock), PGRES_COMMAND_OK);
    PQclear(lock);
    long long start = harness_now_ms();
    http_response held = http_get(&quick, path, harness_admin_key.secret);
    long long took = harness_now_ms() - start;
    PQclear(PQexec(db, "ROLLBACK"));
    PQfinish(db);

    ck_assert_msg(held.status == 503, "the held read was answered %ld: %.300s", held.status,
                  held.body);
    json_decref(assert_problem(&held, 503));
    ck_assert_msg(took >= 250 && took < 3000, "the held read took %lld ms", took);
    http_response_free(&held);
    http_response next = http_get(&quick, path, harness_admin_key.secret);
    ck_assert_msg(next.status == 200, "the next read was answered %ld: %.300s", next.status,
                  next.body);
    http_response_free(&next);
    crmd_fixture_stop(&quick);
}
END_TEST

START_TEST(sigterm_fails_a_deferred_read_that_outlasts_a_0_s_shutdown_timeout)
{
    sigterm_fails_a_deferred_read_held_by_a_lock("CRMD_SHUTDOWN_TIMEOUT_S=0", 20000);
}
END_TEST

START_TEST(sigterm_after_the_client_of_a_deferred_read_has_gone_exits_0)
{
    /* The client gave up while its statement waited: the request still
     * answers (to nobody) and crmd still exits 0. */
    sigterm_fails_a_deferred_read_held_by_a_lock("CRMD_SHUTDOWN_TIMEOUT_S=0", 250);
}
END_TEST

START_TEST(sigterm_fails_a_deferred_read_that_outlasts_a_1_s_shutdown_timeout)
{
    sigterm_fails_a_deferred_read_held_by_a_lock("CRMD_SHUTDOWN_TIMEOUT_S=1", 20000);
}
END_TEST

/* ---- hostile clients: departures, deadlines, per-address cap ------------------ */

/* A TCP connection to server from the loopback address from (any address of
 * 127.0.0.0/8 is local on Linux, so tests can play several clients). */
static int raw_connect_from(const crmd_server *server, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in local = {.sin_family = AF_INET};
    ck_assert_int_eq(inet_pton(AF_INET, from, &local.sin_addr), 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof local), 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)server->port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    ck_assert_msg(connect(fd, (struct sockaddr *)&to, sizeof to) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

static void raw_send(int fd, const char *text)
{
    size_t len = strlen(text);
    ck_assert_int_eq(send(fd, text, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Sends text and the FIN in one segment (MSG_MORE holds the bytes back
 * until the shutdown), as a client that writes its last bytes and closes. */
static void raw_send_and_close(int fd, const char *text)
{
    size_t len = strlen(text);
    ck_assert_int_eq(send(fd, text, len, MSG_NOSIGNAL | MSG_MORE), (ssize_t)len);
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
}

/* Reads (and keeps, up to size - 1 bytes) until the server closes fd.
 * Returns the milliseconds that took, or -1 when still open at timeout_ms. */
static long long read_until_closed(int fd, char *buf, size_t size, int timeout_ms)
{
    long long start = harness_now_ms(), deadline = start + timeout_ms;
    size_t len = 0;
    for (;;) {
        long long left = deadline - harness_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        char scratch[512];
        char *into = len + 1 < size ? buf + len : scratch;
        size_t room = len + 1 < size ? size - 1 - len : sizeof scratch;
        ssize_t n = recv(fd, into, room, 0);
        if (n <= 0)
            break;
        if (into != scratch)
            len += (size_t)n;
    }
    if (size > 0)
        buf[len] = '\0';
    return harness_now_ms() - start;
}

START_TEST(a_client_that_closes_mid_body_is_dropped_at_once)
{
    /* The last body bytes and the FIN arrive together: libmicrohttpd, edge
     * triggered, read the bytes but never the end of the stream, and held
     * the request (in flight) until its 60 s idle timeout. */
    char request[512];
    snprintf(request, sizeof request,
             "POST /v1/customers HTTP/1.1\r\nHost: crmd\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"first_name\":",
             harness_admin_key.secret);
    int fd = raw_connect_from(&srv, "127.0.0.1");
    raw_send_and_close(fd, request);
    char answer[256];
    long long took = read_until_closed(fd, answer, sizeof answer, 3000);
    close(fd);
    ck_assert_msg(took >= 0, "the connection was still open 3 s after the client's FIN");
    long long deadline = harness_now_ms() + 3000;
    long n;
    while ((n = requests_in_flight(&srv)) > 1 && harness_now_ms() < deadline)
        harness_sleep_ms(20);
    ck_assert_msg(n == 1, "%ld requests in flight (only /metrics itself expected)", n);
}
END_TEST

START_TEST(a_client_that_closes_with_half_its_headers_is_dropped_at_once)
{
    int fd = raw_connect_from(&srv, "127.0.0.1");
    raw_send_and_close(fd, "GET /healthz HTTP/1.1\r\nHost: crmd\r\nX-Half: ");
    char answer[64];
    long long took = read_until_closed(fd, answer, sizeof answer, 3000);
    close(fd);
    ck_assert_msg(took >= 0, "the connection was still open 3 s after the client's FIN");
}
END_TEST

/* Sends text one byte every 100 ms until the server closes the connection
 * (returns the seconds it took) or limit_ms passes (returns -1). */
static double trickle_until_cut(int fd, const char *text, int limit_ms)
{
    long long start = harness_now_ms();
    for (size_t i = 0; harness_now_ms() - start < limit_ms; i++) {
        char byte = text[i % strlen(text)];
        if (send(fd, &byte, 1, MSG_NOSIGNAL) != 1)
            return (double)(harness_now_ms() - start) / 1000.0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1) {
            char buf[512];
            if (recv(fd, buf, sizeof buf, 0) <= 0)
                return (double)(harness_now_ms() - start) / 1000.0;
        }
    }
    return -1;
}

/* What the HTTP library refuses before crmd sees a request (openapi.yaml,
 * "Limits"): the right status, the connection closed at once (not held to
 * a deadline), and crmd still serving. The statuses are the contract; the
 * library's bodies are text/html. */
START_TEST(requests_the_http_parser_refuses_get_their_status_and_are_closed)
{
    char *big_header = malloc(48 * 1024), *long_line = malloc(48 * 1024);
    ck_assert(big_header != NULL && long_line != NULL);
    snprintf(big_header, 48 * 1024, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %0*d\r\n\r\n",
             40000, 0);
    snprintf(long_line, 48 * 1024, "GET /healthz?q=%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 40000, 0);
    const struct {
        const char *request;
        const char *status_line; /* NULL: no answer at all */
    } cases[] = {
        {big_header, "HTTP/1.1 431 "},
        {long_line, "HTTP/1.1 414 "},
        {"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", "HTTP/1.1 400 "},
        {"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505 "},
        {"GARBAGE\r\n\r\n", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        long long start = harness_now_ms();
        char *answer = http_raw_exchange(&srv, cases[i].request, &len, 5000);
        long long took = harness_now_ms() - start;
        ck_assert_ptr_nonnull(answer);
        if (cases[i].status_line == NULL)
            ck_assert_msg(len == 0, "case %zu answered: %.200s", i, answer);
        else
            ck_assert_msg(strncmp(answer, cases[i].status_line, strlen(cases[i].status_line)) == 0,
                          "case %zu answered: %.200s", i, answer);
        ck_assert_msg(len == 0 || strcasestr(answer, "\r\nConnection: close\r\n") != NULL,
                      "case %zu kept the connection: %.300s", i, answer);
        ck_assert_msg(took < 2000, "case %zu: the connection stayed open %lld ms", i, took);
        free(answer);
        http_response ok = http_get(&srv, "/healthz", NULL);
        ck_assert_int_eq(ok.status, 200);
        http_response_free(&ok);
    }
    free(big_header);
    free(long_line);
}
END_TEST

START_TEST(slowloris_headers_are_cut_off_at_the_header_deadline)
{
    static const char *const env[] = {"CRMD_HEADER_TIMEOUT_S=1", NULL};
    crmd_server strict;
    crmd_fixture_start(&strict, env);
    int fd = raw_connect_from(&strict, "127.0.0.1");
    raw_send(fd, "GET /healthz HTTP/1.1\r\nHost: crmd\r\n");
    double took = trickle_until_cut(fd, "X-Slow: a\r\n", 6000);
    close(fd);
    ck_assert_msg(took >= 0, "a header byte every 100 ms held the connection for 6 s");
    ck_assert_msg(took >= 0.5, "cut after %.2f s, before the 1 s deadline", took);
    http_response r = http_get(&strict, "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    crmd_fixture_stop(&strict);
}
END_TEST

START_TEST(a_trickled_body_is_cut_off_at_the_body_deadline)
{
    static const char *const env[] = {"CRMD_BODY_TIMEOUT_S=1", NULL};
    crmd_server strict;
    crmd_fixture_start(&strict, env);
    char request[512];
    snprintf(request, sizeof request,
             "POST /v1/api-keys HTTP/1.1\r\nHost: crmd\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n",
             harness_admin_key.secret);
    int fd = raw_connect_from(&strict, "127.0.0.1");
    raw_send(fd, request);
    double took = trickle_until_cut(fd, " ", 6000);
    close(fd);
    ck_assert_msg(took >= 0, "a body byte every 100 ms held the connection for 6 s");
    crmd_fixture_stop(&strict);
}
END_TEST

START_TEST(idle_connections_from_one_address_do_not_lock_out_another)
{
    /* Four connections per address (one I/O thread, so no share rounding),
     * far below the global maximum. The flood comes from 127.0.0.3, which
     * no other connection of the test uses. */
    static const char *const env[] = {"CRMD_IO_THREADS=1", "CRMD_MAX_CONNECTIONS_PER_IP=4",
                                      "CRMD_MAX_CONNECTIONS=64", "CRMD_HEADER_TIMEOUT_S=2",
                                      NULL};
    crmd_server capped;
    crmd_fixture_start(&capped, env);
    int idle[4];
    for (int i = 0; i < 4; i++)
        idle[i] = raw_connect_from(&capped, "127.0.0.3");
    harness_sleep_ms(200); /* accepted */

    static const char healthz[] = "GET /healthz HTTP/1.1\r\nHost: crmd\r\nConnection: close\r\n\r\n";
    char answer[1024];
    int extra = raw_connect_from(&capped, "127.0.0.3");
    send(extra, healthz, strlen(healthz), MSG_NOSIGNAL);
    long long took = read_until_closed(extra, answer, sizeof answer, 3000);
    close(extra);
    ck_assert_msg(took >= 0 && answer[0] == '\0',
                  "a fifth connection from the same address was served: %.100s", answer);

    int other = raw_connect_from(&capped, "127.0.0.2");
    raw_send(other, healthz);
    took = read_until_closed(other, answer, sizeof answer, 3000);
    close(other);
    ck_assert_msg(strncmp(answer, "HTTP/1.1 200", 12) == 0,
                  "another address was not served while the first held its cap: %.100s", answer);

    /* The idle ones send no headers: they are closed at the header deadline,
     * and the address is served again. */
    for (int i = 0; i < 4; i++) {
        took = read_until_closed(idle[i], answer, sizeof answer, 5000);
        ck_assert_msg(took >= 0, "idle connection %d still open 5 s after the 2 s deadline", i);
        close(idle[i]);
    }
    harness_sleep_ms(100);
    int again = raw_connect_from(&capped, "127.0.0.3");
    raw_send(again, healthz);
    read_until_closed(again, answer, sizeof answer, 3000);
    close(again);
    ck_assert_msg(strncmp(answer, "HTTP/1.1 200", 12) == 0,
                  "the address was not served after its idle connections were closed: %.100s",
                  answer);
    crmd_fixture_stop(&capped);
}
END_TEST

/* ---- bodies: per-route limits, the key first, the budget ------------------------ */

/* Sends a request's head (no body bytes) and returns what the server
 * answers before it closes the connection, within 3 s; "" when nothing. */
static void answer_to_head(const crmd_server *server, const char *head, char *answer,
                           size_t size)
{
    int fd = raw_connect_from(server, "127.0.0.1");
    raw_send(fd, head);
    long long took = read_until_closed(fd, answer, size, 3000);
    close(fd);
    ck_assert_msg(took >= 0, "no answer (or the connection still open) 3 s after the head; "
                             "got %.200s", answer);
}

START_TEST(a_body_on_healthz_is_refused_with_413)
{
    http_call call = {.method = "GET", .path = "/healthz", .body = "{}"};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 413));
    http_response_free(&r);
}
END_TEST

START_TEST(a_too_large_customer_gets_413_before_its_body_is_sent)
{
    /* 1 MiB is within the server's 8 MiB but not a customer's limit. */
    char head[512], answer[2048];
    snprintf(head, sizeof head,
             "POST /v1/customers HTTP/1.1\r\nHost: crmd\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n",
             harness_admin_key.secret);
    answer_to_head(&srv, head, answer, sizeof answer);
    ck_assert_msg(strncmp(answer, "HTTP/1.1 413", 12) == 0, "answered %.200s", answer);
    ck_assert_ptr_nonnull(strstr(answer, "application/problem+json"));
}
END_TEST

START_TEST(an_unknown_key_with_a_large_body_gets_401_without_the_body_being_read)
{
    /* Well-formed, unknown: the cache cannot tell, a worker asks the
     * database before a single body byte is read. */
    char head[512], answer[2048];
    snprintf(head, sizeof head,
             "POST /v1/touchpoints/batch HTTP/1.1\r\nHost: crmd\r\n"
             "Authorization: Bearer crm_0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ\r\n"
             "Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n");
    answer_to_head(&srv, head, answer, sizeof answer);
    ck_assert_msg(strncmp(answer, "HTTP/1.1 401", 12) == 0, "answered %.200s", answer);
    ck_assert_msg(strcasestr(answer, "\r\nConnection: close\r\n") != NULL,
                  "no Connection: close in %.300s", answer);
}
END_TEST

START_TEST(bodies_in_flight_beyond_the_budget_get_503)
{
    static const char *const env[] = {"CRMD_BODY_BUDGET_BYTES=100000", NULL};
    crmd_server tight;
    crmd_fixture_start(&tight, env);
    char head[512], answer[2048];
    snprintf(head, sizeof head,
             "POST /v1/touchpoints/batch HTTP/1.1\r\nHost: crmd\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: 80000\r\n\r\n",
             harness_admin_key.secret);
    /* The first upload holds 80,000 of the 100,000 bytes while it lasts. */
    int first = raw_connect_from(&tight, "127.0.0.1");
    raw_send(first, head);
    raw_send(first, "{\"items\": [");
    harness_sleep_ms(300);

    answer_to_head(&tight, head, answer, sizeof answer);
    ck_assert_msg(strncmp(answer, "HTTP/1.1 503", 12) == 0, "answered %.200s", answer);
    ck_assert_ptr_nonnull(strcasestr(answer, "\r\nRetry-After: "));

    close(first); /* its share comes back */
    long long deadline = harness_now_ms() + 3000;
    long status = 0;
    while (harness_now_ms() < deadline) {
        http_response r = http_post_json(&tight, "/v1/touchpoints/batch",
                                         harness_admin_key.secret, "{\"items\": []}");
        status = r.status;
        http_response_free(&r);
        if (status != 503)
            break;
        harness_sleep_ms(50);
    }
    ck_assert_msg(status != 503 && status != 0, "after the upload ended: HTTP %ld", status);
    crmd_fixture_stop(&tight);
}
END_TEST

/* ---- libmicrohttpd's own limits answer problem+json ---------------------------- */

START_TEST(five_hundred_query_parameters_get_a_problem_answer)
{
    /* 3.4 KB of URL, within the 8 KiB limit: libmicrohttpd ran out of its
     * per-connection pool parsing them and closed without an answer. */
    char *path = malloc(8192);
    ck_assert_ptr_nonnull(path);
    size_t len = (size_t)snprintf(path, 8192, "/v1/customers?");
    for (int i = 0; i < 500; i++)
        len += (size_t)snprintf(path + len, 8192 - len, "%sa%d=1", i ? "&" : "", i);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_msg(r.curl_code == CURLE_OK, "no answer: %s", r.curl_error);
    json_decref(assert_problem(&r, 414));
    http_response_free(&r);
    free(path);
}
END_TEST

START_TEST(eight_thousand_empty_query_parameters_get_a_problem_answer)
{
    char *path = malloc(8100);
    ck_assert_ptr_nonnull(path);
    strcpy(path, "/healthz?");
    memset(path + 9, '&', 8000);
    path[8009] = '\0';
    http_response r = http_get(&srv, path, NULL);
    ck_assert_msg(r.curl_code == CURLE_OK, "no answer: %s", r.curl_error);
    json_decref(assert_problem(&r, 414));
    http_response_free(&r);
    free(path);
}
END_TEST

/* ---- access log ------------------------------------------------------------------ */

/* Sends call with X-Request-Id id and returns its parsed access-log line. */
static json_t *logged_line_for(http_call call, const char *id, long expected_status)
{
    char header[96];
    snprintf(header, sizeof header, "X-Request-Id: %s", id);
    const char *headers[] = {header, NULL};
    call.headers = headers;
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == expected_status, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
    json_t *line = crmd_wait_access_log(&srv, id, LOG_WAIT_MS, NULL);
    ck_assert_msg(line != NULL, "no access-log line with request_id %s in %s", id, srv.log_path);
    return line;
}

static bool log_contains(const char *text)
{
    char *log = crmd_read_log(&srv);
    bool found = strstr(log, text) != NULL;
    free(log);
    return found;
}

START_TEST(access_log_line_has_request_id_method_route_status_duration_and_key_prefix)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_call call = {.path = path, .api_key = key.secret};
    json_t *line = logged_line_for(call, "access-log-fields-1", 200);

    ck_assert_str_eq(json_string_value(json_object_get(line, "request_id")), "access-log-fields-1");
    ck_assert_str_eq(json_string_value(json_object_get(line, "method")), "GET");
    ck_assert_str_eq(json_string_value(json_object_get(line, "route")), "/v1/api-keys/{id}");
    ck_assert(json_is_integer(json_object_get(line, "status")));
    ck_assert_int_eq(json_integer_value(json_object_get(line, "status")), 200);
    json_t *duration = json_object_get(line, "duration_ms");
    ck_assert(json_is_number(duration));
    ck_assert(json_number_value(duration) >= 0);
    ck_assert_str_eq(json_string_value(json_object_get(line, "key_prefix")), key.prefix);
    json_decref(line);
}
END_TEST

START_TEST(access_log_writes_exactly_one_line_per_request)
{
    http_call call = {.path = "/healthz"};
    json_decref(logged_line_for(call, "access-log-once-1", 200));
    harness_sleep_ms(100);
    char *log = crmd_read_log(&srv);
    int count = 0;
    for (const char *p = log; (p = strstr(p, "\"request_id\":\"access-log-once-1\"")) != NULL; p++)
        count++;
    free(log);
    ck_assert_int_eq(count, 1);
}
END_TEST

START_TEST(access_log_leaves_out_the_request_body)
{
    http_call call = {.path = "/v1/api-keys",
                      .api_key = harness_admin_key.secret,
                      .body = "{\"name\":\"body-marker-7f3a91\",\"scopes\":[\"admin\"]}"};
    json_decref(logged_line_for(call, "access-log-body-1", 201));
    ck_assert_msg(!log_contains("body-marker-7f3a91"), "the request body reached the log");
}
END_TEST

START_TEST(access_log_names_the_route_pattern_and_leaves_out_the_concrete_id)
{
    http_call call = {.path = "/v1/api-keys/path-marker-5e2b07",
                      .api_key = harness_admin_key.secret};
    json_t *line = logged_line_for(call, "access-log-path-1", 404);
    ck_assert_str_eq(json_string_value(json_object_get(line, "route")), "/v1/api-keys/{id}");
    json_decref(line);
    ck_assert_msg(!log_contains("path-marker-5e2b07"), "the concrete path reached the log");
}
END_TEST

START_TEST(access_log_leaves_out_an_unmatched_path_and_has_no_route_for_it)
{
    http_call call = {.path = "/v1/customers/by-email/jane.doe%40example.com"};
    json_t *line = logged_line_for(call, "access-log-unmatched-1", 404);
    ck_assert(json_is_null(json_object_get(line, "route")));
    ck_assert(json_is_null(json_object_get(line, "key_prefix")));
    json_decref(line);
    ck_assert_msg(!log_contains("jane.doe"), "personal data from the path reached the log");
}
END_TEST

START_TEST(access_log_never_contains_the_key_secret)
{
    api_key key;
    ck_assert(api_key_create("customers:read", &key));
    http_call call = {.path = "/v1/api-keys", .api_key = key.secret};
    json_t *line = logged_line_for(call, "access-log-secret-1", 403);
    ck_assert_str_eq(json_string_value(json_object_get(line, "key_prefix")), key.prefix);
    json_decref(line);
    ck_assert_msg(!log_contains(key.secret + 15), "the key's secret reached the log");
}
END_TEST

/* ---- the port ----------------------------------------------------------------- */

/* Runs `crmd serve` with env and returns its exit status, or -1 when it is
 * still running after timeout_s (it is then killed). */
static int run_crmd_until_exit(const char *const *env, int timeout_s)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execle(harness_env("CRMD_BIN"), "crmd", "serve", (char *)NULL, (char *const *)env);
        _exit(127);
    }
    long long deadline = harness_now_ms() + (long long)timeout_s * 1000;
    int wstatus;
    while (harness_now_ms() < deadline) {
        if (waitpid(pid, &wstatus, WNOHANG) == pid)
            return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
        harness_sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &wstatus, 0);
    return -1;
}

START_TEST(a_second_crmd_on_a_port_in_use_refuses_to_start)
{
    /* The I/O threads share their port through SO_REUSEPORT; a second crmd
     * must not silently take half of the first one's connections. */
    char listen_var[64], db_var[1024];
    snprintf(listen_var, sizeof listen_var, "CRMD_LISTEN=127.0.0.1:%d", srv.port);
    snprintf(db_var, sizeof db_var, "CRMD_DATABASE_URL=%s", harness_env("CRMD_TEST_DATABASE_URL"));
    const char *env[] = {listen_var, db_var, "CRMD_ACCESS_LOG=0", "CRMD_LOG_LEVEL=error", NULL};
    int status = run_crmd_until_exit(env, 30);
    ck_assert_msg(status > 0, "the second crmd exited with %d (expected a failure)", status);
    http_response r = http_get(&srv, "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
}
END_TEST

/* ---- several I/O threads ---------------------------------------------------- */

/* The default is one I/O thread per two cores, so on a small machine the
 * hand-over between I/O threads and workers would go unexercised: here
 * crmd runs three I/O threads, and clients on kept-alive connections mix
 * writes (run on workers, answered back on the connection's I/O thread)
 * with reads (run on the I/O thread itself). */
#define IO_CLIENTS 6
#define IO_ROUNDS 25

static crmd_server io_srv;

typedef struct io_client {
    int n;
    int failures;
    char failure[256];
} io_client;

static void *io_client_run(void *arg)
{
    io_client *c = arg;
    CURL *curl = curl_easy_init();
    for (int i = 0; i < IO_ROUNDS && c->failures == 0; i++) {
        char body[96], path[64];
        snprintf(body, sizeof body, "{\"first_name\": \"Io%d\", \"last_name\": \"Round%d\"}", c->n,
                 i);
        http_call create = {.method = "POST",
                            .path = "/v1/customers",
                            .api_key = harness_admin_key.secret,
                            .body = body,
                            .curl = curl};
        http_response r = http_send(&io_srv, &create);
        json_t *made = r.status == 201 ? http_response_json(&r) : NULL;
        long long id = json_integer_value(json_object_get(made, "id"));
        if (id <= 0) {
            c->failures++;
            snprintf(c->failure, sizeof c->failure, "create answered %ld", r.status);
        }
        json_decref(made);
        http_response_free(&r);
        if (c->failures != 0)
            break;
        snprintf(path, sizeof path, "/v1/customers/%lld", id);
        http_call read = {.path = path, .api_key = harness_admin_key.secret, .curl = curl};
        r = http_send(&io_srv, &read);
        json_t *got = r.status == 200 ? http_response_json(&r) : NULL;
        const char *name = json_string_value(json_object_get(got, "last_name"));
        char want[32];
        snprintf(want, sizeof want, "Round%d", i);
        if (json_integer_value(json_object_get(got, "id")) != id || name == NULL ||
            strcmp(name, want) != 0) {
            c->failures++;
            snprintf(c->failure, sizeof c->failure, "read of %lld answered %ld", id, r.status);
        }
        json_decref(got);
        http_response_free(&r);
    }
    curl_easy_cleanup(curl);
    return NULL;
}

START_TEST(three_io_threads_serve_kept_alive_clients_mixing_writes_and_reads)
{
    const char *env[] = {"CRMD_IO_THREADS=3", NULL};
    crmd_fixture_start(&io_srv, env);
    pthread_t threads[IO_CLIENTS];
    io_client clients[IO_CLIENTS];
    for (int i = 0; i < IO_CLIENTS; i++) {
        clients[i] = (io_client){.n = i};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, io_client_run, &clients[i]), 0);
    }
    for (int i = 0; i < IO_CLIENTS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < IO_CLIENTS; i++)
        ck_assert_msg(clients[i].failures == 0, "client %d: %s", i, clients[i].failure);
    char *log = crmd_read_log(&io_srv);
    ck_assert_ptr_nonnull(strstr(log, "(3 I/O threads"));
    free(log);
    crmd_fixture_stop(&io_srv);
}
END_TEST

Suite *http_suite(void)
{
    Suite *s = suite_create("http");

    TCase *keep = tcase_create("keep-alive");
    tcase_set_timeout(keep, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(keep, setup, teardown);
    tcase_add_test(keep, keep_alive_serves_20_healthz_requests_on_one_connection);
    tcase_add_test(keep, keep_alive_holds_across_404_answers);
    tcase_add_test(keep, keep_alive_holds_across_posts_with_a_body);
    tcase_add_test(keep, keep_alive_holds_across_422_answers_to_posts);
    suite_add_tcase(s, keep);

    TCase *shutdown = tcase_create("shutdown");
    tcase_set_timeout(shutdown, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(shutdown, setup, teardown);
    tcase_add_test(shutdown, sigterm_lets_an_in_flight_request_finish_with_its_complete_response);
    tcase_add_test(shutdown, sigterm_with_a_request_in_flight_exits_0_and_then_refuses_connections);
    tcase_add_test(shutdown,
                   sigterm_stops_accepting_connections_while_requests_are_still_in_flight);
    tcase_add_test(shutdown, sigterm_still_answers_kept_alive_connections_with_connection_close);
    tcase_add_test(shutdown, sigterm_abandons_requests_that_outlast_the_shutdown_timeout);
    tcase_add_test(shutdown, sigterm_fails_a_deferred_read_that_outlasts_a_0_s_shutdown_timeout);
    tcase_add_test(shutdown, a_read_that_outlasts_the_read_timeout_answers_503_and_the_next_read_is_served);
    tcase_add_test(shutdown, sigterm_fails_a_deferred_read_that_outlasts_a_1_s_shutdown_timeout);
    tcase_add_test(shutdown, sigterm_after_the_client_of_a_deferred_read_has_gone_exits_0);
    suite_add_tcase(s, shutdown);

    TCase *hostile = tcase_create("hostile-clients");
    tcase_set_timeout(hostile, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(hostile, setup, teardown);
    tcase_add_test(hostile, a_client_that_closes_mid_body_is_dropped_at_once);
    tcase_add_test(hostile, a_client_that_closes_with_half_its_headers_is_dropped_at_once);
    tcase_add_test(hostile, slowloris_headers_are_cut_off_at_the_header_deadline);
    tcase_add_test(hostile, requests_the_http_parser_refuses_get_their_status_and_are_closed);
    tcase_add_test(hostile, a_trickled_body_is_cut_off_at_the_body_deadline);
    tcase_add_test(hostile, idle_connections_from_one_address_do_not_lock_out_another);
    suite_add_tcase(s, hostile);

    TCase *bodies = tcase_create("bodies");
    tcase_set_timeout(bodies, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(bodies, setup, teardown);
    tcase_add_test(bodies, a_body_on_healthz_is_refused_with_413);
    tcase_add_test(bodies, a_too_large_customer_gets_413_before_its_body_is_sent);
    tcase_add_test(bodies, an_unknown_key_with_a_large_body_gets_401_without_the_body_being_read);
    tcase_add_test(bodies, bodies_in_flight_beyond_the_budget_get_503);
    suite_add_tcase(s, bodies);

    TCase *limits = tcase_create("mhd-limits");
    tcase_set_timeout(limits, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, five_hundred_query_parameters_get_a_problem_answer);
    tcase_add_test(limits, eight_thousand_empty_query_parameters_get_a_problem_answer);
    suite_add_tcase(s, limits);

    TCase *log = tcase_create("access-log");
    tcase_set_timeout(log, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(log, setup, teardown);
    tcase_add_test(log, access_log_line_has_request_id_method_route_status_duration_and_key_prefix);
    tcase_add_test(log, access_log_writes_exactly_one_line_per_request);
    tcase_add_test(log, access_log_leaves_out_the_request_body);
    tcase_add_test(log, access_log_names_the_route_pattern_and_leaves_out_the_concrete_id);
    tcase_add_test(log, access_log_leaves_out_an_unmatched_path_and_has_no_route_for_it);
    tcase_add_test(log, access_log_never_contains_the_key_secret);
    suite_add_tcase(s, log);

    TCase *port = tcase_create("port");
    tcase_set_timeout(port, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(port, setup, teardown);
    tcase_add_test(port, a_second_crmd_on_a_port_in_use_refuses_to_start);
    suite_add_tcase(s, port);

    TCase *io = tcase_create("io-threads");
    tcase_set_timeout(io, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_test(io, three_io_threads_serve_kept_alive_clients_mixing_writes_and_reads);
    suite_add_tcase(s, io);
    return s;
}
