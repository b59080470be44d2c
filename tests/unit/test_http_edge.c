/*
 * test_http_edge.c — pieces of the HTTP edge that need no client: an error
 * answer without an error code, the route table's body limits, and a start
 * that fails half-way.
 */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_internal.h"
#include "suites.h"

/* A request as admission leaves it, without a connection: enough for the
 * reply functions, which only fill the answer. */
static http_request *bare_request(http_server *srv, const crmd_config *cfg)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    http_request *req = calloc(1, sizeof *req);
    ck_assert_ptr_nonnull(req);
    req->srv = srv;
    req->method = "GET";
    strcpy(req->request_id, "unit-test");
    atomic_init(&req->state, REQ_RUNNING_IO);
    crm_arena_init(&req->arena);
    return req;
}

static void free_request(http_request *req)
{
    free(req->resp_body);
    crm_arena_free(&req->arena);
    free(req);
}

START_TEST(an_error_without_a_code_answers_500_not_200)
{
    crmd_config cfg = {.retry_after_s = 1};
    http_server srv;
    http_request *req = bare_request(&srv, &cfg);
    crm_error err = CRM_ERROR_INIT; /* a lib function failed without saying why */
    http_reply_error(req, &err);
    ck_assert_int_eq(req->status, 500);
    ck_assert_int_eq(req_get_state(req), REQ_ANSWERED);
    ck_assert_str_eq(req->content_type, "application/problem+json");
    ck_assert_ptr_nonnull(strstr(req->resp_body, "\"status\":500"));
    free_request(req);
}
END_TEST

START_TEST(a_second_reply_keeps_the_first_answer)
{
    crmd_config cfg = {.retry_after_s = 1};
    http_server srv;
    http_request *req = bare_request(&srv, &cfg);
    http_reply_problem(req, 404, "first");
    http_reply_problem(req, 500, "second");
    ck_assert_int_eq(req->status, 404);
    ck_assert_ptr_nonnull(strstr(req->resp_body, "first"));
    free_request(req);
}
END_TEST

START_TEST(routes_without_a_body_take_none_and_only_the_batch_takes_megabytes)
{
    size_t n;
    const http_route *routes = router_table(&n);
    for (size_t i = 0; i < n; i++) {
        const http_route *r = &routes[i];
        if (r->json_body)
            ck_assert_msg(r->max_body > 0, "%s %s takes a JSON body but no bytes", r->method,
                          r->pattern);
        else
            ck_assert_msg(r->max_body == 0, "%s %s takes no body but accepts %zu bytes",
                          r->method, r->pattern, r->max_body);
        if (r->max_body > 256 * 1024)
            ck_assert_str_eq(r->pattern, "/v1/touchpoints/batch");
    }
}
END_TEST

START_TEST(a_start_that_fails_half_way_leaves_fd_0_open)
{
    /* Two I/O threads; the first cannot bind (an address of TEST-NET-1 is
     * not local), so the second's descriptors were never made. */
    if (fcntl(0, F_GETFD) == -1) {
        int fd = open("/dev/null", O_RDONLY);
        ck_assert_int_eq(fd, 0);
    }
    crmd_config cfg;
    char errbuf[256];
    ck_assert(crmd_config_load(&cfg, errbuf, sizeof errbuf));
    strcpy(cfg.listen_host, "192.0.2.1");
    cfg.listen_port = 0;
    cfg.io_threads = 2;
    cfg.threads = 1;
    crm_db_config dbcfg = {.url = "", .pool_size = 1};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(http_server_start(&cfg, &dbcfg, &err));
    ck_assert_int_ne(err.code, CRM_OK);
    crm_error_clear(&err);
    ck_assert_msg(fcntl(0, F_GETFD) != -1, "the failed start closed fd 0");
}
END_TEST

Suite *http_edge_suite(void)
{
    Suite *s = suite_create("http_edge");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, an_error_without_a_code_answers_500_not_200);
    tcase_add_test(tc, a_second_reply_keeps_the_first_answer);
    tcase_add_test(tc, routes_without_a_body_take_none_and_only_the_batch_takes_megabytes);
    tcase_add_test(tc, a_start_that_fails_half_way_leaves_fd_0_open);
    suite_add_tcase(s, tc);
    return s;
}
