/*
 * test_outage.c — crmd while its database goes away and comes back: fast
 * 503s with Retry-After (never a hang), liveness unaffected, and service
 * resuming by itself without a restart.
 *
 * Run alone (`api_tests outage`): it stops the test database with
 * CRMD_TEST_PG_STOP. The database is started again before every test, after
 * every test that completes, in the parent process once the test case is
 * over (which a failed or timed-out test cannot skip), and at exit.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define UNAVAILABLE_WITHIN_MS 1000
#define RECOVERED_WITHIN_MS 10000
#define POLL_MS 25

static crmd_server srv;

static void database_start(void)
{
    int rc = harness_run_env_command("CRMD_TEST_PG_START");
    if (rc != 0)
        fprintf(stderr, "api_tests: could not start the test database (status %d)\n", rc);
}

static void database_stop(void)
{
    ck_assert_msg(harness_run_env_command("CRMD_TEST_PG_STOP") == 0, "CRMD_TEST_PG_STOP failed");
}

static void setup(void)
{
    static const char *const env[] = {"CRMD_DB_RETRY_MS=250", NULL};
    database_start();
    crmd_fixture_start(&srv, env);
}

static void teardown(void)
{
    database_start();
    crmd_fixture_stop(&srv);
}

/* Requests path until it answers want or limit_ms pass. Every answer must
 * arrive (a hang or a dropped connection fails the test). Returns the last
 * response (the caller frees it) and the time taken in *elapsed_ms. */
static http_response poll_until(const char *path, const char *key, long want, long long limit_ms,
                                long long *elapsed_ms)
{
    long long start = harness_now_ms();
    for (;;) {
        http_response r = http_get(&srv, path, key);
        ck_assert_msg(r.curl_code == CURLE_OK, "GET %s got no answer: %s", path, r.curl_error);
        *elapsed_ms = harness_now_ms() - start;
        if (r.status == want || *elapsed_ms > limit_ms)
            return r;
        http_response_free(&r);
        harness_sleep_ms(POLL_MS);
    }
}

static void assert_retry_after(const http_response *r)
{
    const char *retry = http_response_header(r, "Retry-After");
    ck_assert_msg(retry != NULL && atoi(retry) >= 1 && strspn(retry, "0123456789") == strlen(retry),
                  "Retry-After: %s", retry ? retry : "(none)");
}

static void assert_healthz_200(void)
{
    http_response r = http_get(&srv, "/healthz", NULL);
    ck_assert_msg(r.status == 200, "/healthz answered %ld (%s)", r.status, r.curl_error);
    http_response_free(&r);
}

START_TEST(readyz_answers_503_with_retry_after_within_1_s_of_the_database_stopping)
{
    long long ms;
    http_response before = poll_until("/readyz", NULL, 200, 0, &ms);
    ck_assert_int_eq(before.status, 200);
    http_response_free(&before);

    database_stop();
    http_response r = poll_until("/readyz", NULL, 503, UNAVAILABLE_WITHIN_MS, &ms);
    ck_assert_msg(r.status == 503 && ms <= UNAVAILABLE_WITHIN_MS,
                  "/readyz answered %ld after %lld ms with the database stopped", r.status, ms);
    json_decref(assert_problem(&r, 503));
    assert_retry_after(&r);
    http_response_free(&r);
}
END_TEST

START_TEST(uncached_key_answers_503_problem_while_the_database_is_down)
{
    api_key fresh; /* never used, so no crmd has it cached */
    ck_assert(api_key_create("admin", &fresh));
    database_stop();
    long long ms;
    http_response ready = poll_until("/readyz", NULL, 503, UNAVAILABLE_WITHIN_MS, &ms);
    ck_assert_int_eq(ready.status, 503);
    http_response_free(&ready);

    http_response r = http_get(&srv, "/v1/api-keys", fresh.secret);
    ck_assert_msg(r.curl_code == CURLE_OK, "no answer: %s", r.curl_error);
    json_decref(assert_problem(&r, 503));
    assert_retry_after(&r);
    http_response_free(&r);
}
END_TEST

START_TEST(healthz_answers_200_and_crmd_stays_up_while_the_database_is_down)
{
    database_stop();
    long long until = harness_now_ms() + 1500;
    while (harness_now_ms() < until) {
        assert_healthz_200();
        http_response ready = http_get(&srv, "/readyz", NULL);
        ck_assert_msg(ready.curl_code == CURLE_OK, "/readyz: %s", ready.curl_error);
        http_response_free(&ready);
        harness_sleep_ms(50);
    }
    ck_assert_msg(crmd_running(&srv), "crmd exited with status %d", srv.exit_status);
}
END_TEST

START_TEST(service_resumes_without_a_restart_when_the_database_returns)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    pid_t pid = srv.pid;
    database_stop();
    http_response down = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_int_eq(down.status, 503);
    http_response_free(&down);
    assert_healthz_200();

    database_start();
    long long ms;
    http_response ready = poll_until("/readyz", NULL, 200, RECOVERED_WITHIN_MS, &ms);
    ck_assert_msg(ready.status == 200,
                  "/readyz still answered %ld %lld ms after the database "
                  "came back",
                  ready.status, ms);
    http_response_free(&ready);
    ck_assert_msg(crmd_running(&srv) && srv.pid == pid, "crmd was restarted or exited");
    assert_healthz_200();

    http_response list = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_msg(list.status == 200, "HTTP %ld: %.300s", list.status, list.body);
    http_response_free(&list);
}
END_TEST

/* ---- a database host that turns into a black hole ------------------------
 *
 * A TCP proxy in front of the test database: it forwards until told to
 * turn silent, then cuts the connections it carries and accepts new ones
 * without ever answering, as a host behind a dead VIP or a dropped route
 * does to crmd (the TCP handshake completes; nothing else happens). */

#define PROXY_MAX_PAIRS 64
#define PROXY_MAX_HELD 256

typedef struct proxy {
    int listen_fd, port;
    struct sockaddr_storage target;
    socklen_t target_len;
    atomic_bool silent, stop;
    int client[PROXY_MAX_PAIRS], server[PROXY_MAX_PAIRS];
    int held[PROXY_MAX_HELD];
    int nheld;
    pthread_t thread;
} proxy;

/* Where CRMD_TEST_DATABASE_URL's server listens (a unix socket or TCP). */
static void proxy_resolve_target(proxy *p)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(harness_env("CRMD_TEST_DATABASE_URL"), &errmsg);
    ck_assert_msg(opts != NULL, "cannot parse CRMD_TEST_DATABASE_URL");
    const char *host = "/var/run/postgresql", *port = "5432";
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val != NULL && o->val[0] != '\0')
            host = o->val;
        if (strcmp(o->keyword, "port") == 0 && o->val != NULL && o->val[0] != '\0')
            port = o->val;
    }
    if (host[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&p->target;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%s/.s.PGSQL.%s", host, port);
        p->target_len = sizeof *un;
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        ck_assert_int_eq(getaddrinfo(host, port, &hints, &ai), 0);
        memcpy(&p->target, ai->ai_addr, ai->ai_addrlen);
        p->target_len = ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    PQconninfoFree(opts);
}

/* Copies what is readable on from to to; false when from closed or failed. */
static bool proxy_pump(int from, int to)
{
    char buf[16384];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return false;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void proxy_close_pair(proxy *p, int i)
{
    close(p->client[i]);
    close(p->server[i]);
    p->client[i] = p->server[i] = -1;
}

static void proxy_accept(proxy *p)
{
    int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (atomic_load(&p->silent)) {
        if (p->nheld < PROXY_MAX_HELD)
            p->held[p->nheld++] = fd; /* accepted, never read, never answered */
        else
            close(fd);
        return;
    }
    int up = socket(p->target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (up < 0 || connect(up, (struct sockaddr *)&p->target, p->target_len) != 0) {
        close(fd);
        if (up >= 0)
            close(up);
        return;
    }
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        if (p->client[i] < 0) {
            p->client[i] = fd;
            p->server[i] = up;
            return;
        }
    close(fd);
    close(up);
}

static void *proxy_main(void *arg)
{
    proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd fds[1 + 2 * PROXY_MAX_PAIRS];
        int map[1 + 2 * PROXY_MAX_PAIRS];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        bool silent = atomic_load(&p->silent);
        for (int i = 0; i < PROXY_MAX_PAIRS; i++) {
            if (p->client[i] < 0)
                continue;
            if (silent) { /* the route died: what it carried is cut */
                proxy_close_pair(p, i);
                continue;
            }
            map[n] = i;
            fds[n++] = (struct pollfd){.fd = p->client[i], .events = POLLIN};
            map[n] = i;
            fds[n++] = (struct pollfd){.fd = p->server[i], .events = POLLIN};
        }
        if (poll(fds, (nfds_t)n, 20) <= 0)
            continue;
        if (fds[0].revents & POLLIN)
            proxy_accept(p);
        for (int k = 1; k < n; k++) {
            int i = map[k];
            if (fds[k].revents == 0 || p->client[i] < 0)
                continue;
            bool from_client = fds[k].fd == p->client[i];
            if (!proxy_pump(fds[k].fd, from_client ? p->server[i] : p->client[i]))
                proxy_close_pair(p, i);
        }
    }
    return NULL;
}

static void proxy_start(proxy *p)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        p->client[i] = p->server[i] = -1;
    proxy_resolve_target(p);
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p->listen_fd, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    ck_assert_int_eq(bind(p->listen_fd, (struct sockaddr *)&addr, sizeof addr), 0);
    ck_assert_int_eq(listen(p->listen_fd, 128), 0);
    ck_assert_int_eq(getsockname(p->listen_fd, (struct sockaddr *)&addr, &len), 0);
    p->port = ntohs(addr.sin_port);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, proxy_main, p), 0);
}

static void proxy_stop(proxy *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        if (p->client[i] >= 0)
            proxy_close_pair(p, i);
    for (int i = 0; i < p->nheld; i++)
        close(p->held[i]);
    close(p->listen_fd);
}

/* CRMD_TEST_DATABASE_URL's settings with the host and port of the proxy. */
static void proxy_url(const proxy *p, char *out, size_t size)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(harness_env("CRMD_TEST_DATABASE_URL"), &errmsg);
    ck_assert_msg(opts != NULL, "cannot parse CRMD_TEST_DATABASE_URL");
    size_t n = (size_t)snprintf(out, size, "host=127.0.0.1 port=%d sslmode=disable", p->port);
    for (PQconninfoOption *o = opts; o->keyword != NULL && n < size; o++)
        if (o->val != NULL && o->val[0] != '\0' && strpbrk(o->val, "\\' ") == NULL &&
            (strcmp(o->keyword, "dbname") == 0 || strcmp(o->keyword, "user") == 0 ||
             strcmp(o->keyword, "password") == 0))
            n += (size_t)snprintf(out + n, size - n, " %s=%s", o->keyword, o->val);
    PQconninfoFree(opts);
}

/* Sends /readyz until told to stop, so that crmd keeps trying to connect. */
typedef struct prober {
    crmd_server *srv;
    atomic_bool stop;
    atomic_int answered_503;
} prober;

static void *probe_main(void *arg)
{
    prober *pr = arg;
    while (!atomic_load(&pr->stop)) {
        http_response r = http_get(pr->srv, "/readyz", NULL);
        if (r.status == 503)
            atomic_fetch_add(&pr->answered_503, 1);
        http_response_free(&r);
        harness_sleep_ms(20);
    }
    return NULL;
}

/* A database host that accepts TCP and never answers does not freeze the
 * I/O thread (crmd's connects are asynchronous, with their own deadline):
 * /healthz keeps answering at once (each of 50 within a generous 200 ms
 * while /readyz keeps crmd connecting), /readyz answers 503 with
 * Retry-After, and service resumes by itself when the route comes back. */
START_TEST(healthz_stays_fast_while_the_database_host_is_a_black_hole)
{
    proxy px;
    proxy_start(&px);
    char url[512], db_var[600];
    proxy_url(&px, url, sizeof url);
    snprintf(db_var, sizeof db_var, "CRMD_DATABASE_URL=%s", url);
    const char *env[] = {db_var, "CRMD_IO_THREADS=1", "CRMD_DB_CONNECT_TIMEOUT_S=1",
                         "CRMD_DB_RETRY_MS=250", NULL};
    crmd_server hole;
    crmd_fixture_start(&hole, env);
    long long ms;
    srv = hole; /* poll_until asks srv */
    http_response ready = poll_until("/readyz", NULL, 200, 5000, &ms);
    ck_assert_int_eq(ready.status, 200);
    http_response_free(&ready);

    atomic_store(&px.silent, true);
    prober pr = {.srv = &hole};
    pthread_t prober_thread;
    ck_assert_int_eq(pthread_create(&prober_thread, NULL, probe_main, &pr), 0);
    harness_sleep_ms(100);
    long long slowest = 0;
    for (int i = 0; i < 50; i++) {
        long long t0 = harness_now_ms();
        http_response r = http_get(&hole, "/healthz", NULL);
        long long took = harness_now_ms() - t0;
        ck_assert_msg(r.status == 200, "/healthz answered %ld (%s)", r.status, r.curl_error);
        http_response_free(&r);
        slowest = took > slowest ? took : slowest;
        harness_sleep_ms(40);
    }
    atomic_store(&pr.stop, true);
    pthread_join(prober_thread, NULL);
    ck_assert_msg(slowest < 200, "/healthz took %lld ms with the database host silent", slowest);
    ck_assert_msg(atomic_load(&pr.answered_503) > 0, "/readyz never answered 503");

    http_response down = poll_until("/readyz", NULL, 503, 3000, &ms);
    ck_assert_int_eq(down.status, 503);
    json_decref(assert_problem(&down, 503));
    assert_retry_after(&down);
    http_response_free(&down);

    atomic_store(&px.silent, false);
    http_response back = poll_until("/readyz", NULL, 200, RECOVERED_WITHIN_MS, &ms);
    ck_assert_msg(back.status == 200,
                  "/readyz still answered %ld %lld ms after the route came back", back.status, ms);
    http_response_free(&back);
    crmd_fixture_stop(&hole);
    memset(&srv, 0, sizeof srv);
    proxy_stop(&px);
}
END_TEST

Suite *outage_suite(void)
{
    atexit(database_start); /* also in forked tests: whoever ends, the database is up */
    Suite *s = suite_create("outage");
    TCase *tc = tcase_create("outage");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_unchecked_fixture(tc, NULL, database_start);
    tcase_add_test(tc, readyz_answers_503_with_retry_after_within_1_s_of_the_database_stopping);
    tcase_add_test(tc, uncached_key_answers_503_problem_while_the_database_is_down);
    tcase_add_test(tc, healthz_answers_200_and_crmd_stays_up_while_the_database_is_down);
    tcase_add_test(tc, service_resumes_without_a_restart_when_the_database_returns);
    suite_add_tcase(s, tc);

    TCase *hole = tcase_create("black hole");
    tcase_set_timeout(hole, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_test(hole, healthz_stays_fast_while_the_database_host_is_a_black_hole);
    suite_add_tcase(s, hole);
    return s;
}
