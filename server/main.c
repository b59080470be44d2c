/*
 * main.c — crmd's entry point: commands, configuration, startup, signals.
 *
 *   crmd [serve]                      migrate, then serve HTTP until SIGTERM/SIGINT
 *   crmd migrate                      apply pending migrations and exit
 *   crmd keys create --name N --scopes a,b
 *                                     create an API key; the secret is line 1
 *   crmd routes [--query]             print the route table (for the contract test)
 */
#include "config.h"
#include "cors.h"
#include "customer_metrics.h"
#include "db.h"
#include "embedded.h"
#include "http.h"
#include "idempotency.h"
#include "campaigns.h"
#include "jobs.h"
#include "jobs_runner.h"
#include "metrics_follower.h"
#include "segment_store.h"
#include "segments.h"
#include "clock.h"
#include "segments_worker.h"
#include "list/cursor.h"
#include "log.h"
#include "migrate.h"
#include "router.h"
#include "sync.h"
#include "throttle.h"
#include "touchpoints.h"

#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STARTUP_DB_WAIT_S 30

static void usage(FILE *out)
{
    fprintf(out,
            "crmd %s — CRM API server\n\n"
            "Usage:\n"
            "  crmd [serve]          apply migrations, then serve HTTP\n"
            "  crmd migrate          apply pending migrations and exit\n"
            "  crmd keys create --name NAME --scopes SCOPE[,SCOPE...] [--if-none]\n"
            "                        create an API key; its secret is the first output line\n"
            "                        (--if-none: only when no active key exists yet)\n"
            "  crmd routes [--query] print the route table (with --query: the query\n"
            "                        parameters each route accepts)\n"
            "  crmd rule-sql         read a segment rule (JSON) on standard input and print\n"
            "                        the SQL expression it compiles to over customers c, then\n"
            "                        its parameters, one a line (for benchmarks and support)\n"
            "  crmd --help | --version\n\n"
            "Scopes: admin (everything), customers:read, customers:write, touchpoints:read,\n"
            "  touchpoints:write, segments:read, segments:write, rules:read, rules:write,\n"
            "  campaigns:read, campaigns:write, metrics:read, metrics:write, sync:read,\n"
            "  customers:export\n\n",
            CRMD_VERSION);
    crmd_config_print_help(out);
}

static void configure_metrics(const crmd_config *cfg)
{
    crm_metrics_config m = crm_metrics_defaults();
    m.window_days = cfg->metrics_window_days;
    m.horizon_days = cfg->metrics_horizon_days;
    m.annual_discount = cfg->metrics_discount_percent / 100.0;
    m.tier_top = cfg->metrics_tier_top_permille / 1000.0;
    m.tier_high = cfg->metrics_tier_high_permille / 1000.0;
    m.basket_min_orders = cfg->metrics_basket_min_orders;
    snprintf(m.currency, sizeof m.currency, "%s", cfg->reporting_currency);
    m.new_days = cfg->lifecycle_new_days;
    m.at_risk_days = cfg->lifecycle_at_risk_days;
    m.at_risk_p_alive = cfg->lifecycle_at_risk_p_alive_percent / 100.0;
    m.lapsed_days = cfg->lifecycle_lapsed_days;
    crm_metrics_configure(&m);
}

static crm_db_config db_config_from(const crmd_config *cfg)
{
    crm_db_config d = {
        .url = cfg->database_url,
        .pool_size = cfg->pool_size,
        .acquire_timeout_ms = cfg->pool_timeout_ms,
        .connect_timeout_s = cfg->db_connect_timeout_s,
        .statement_timeout_ms = cfg->statement_timeout_ms,
        .retry_backoff_ms = cfg->db_retry_backoff_ms,
    };
    return d;
}

/* The metrics' follower of this process (CRMD_METRICS_FOLLOW_MS; none when
 * 0). NULL when there is none or it could not start (logged: the metrics
 * then wait for the next full recompute). */
static metrics_follower *start_metrics_follower(const crmd_config *cfg)
{
    if (cfg->metrics_follow_ms == 0) {
        crm_log(CRM_LOG_INFO, "metrics: CRMD_METRICS_FOLLOW_MS=0, this process does not follow");
        return NULL;
    }
    metrics_follower_config fc = {
        .db = db_config_from(cfg),
        .poll_ms = cfg->metrics_follow_ms,
        .batch = cfg->metrics_follow_batch,
        .duty_percent = cfg->metrics_follow_duty_percent,
        .schedule_hours = cfg->metrics_schedule_hours,
    };
    fc.db.statement_timeout_ms = cfg->job_statement_timeout_ms;
    crm_error err = CRM_ERROR_INIT;
    metrics_follower *f = metrics_follower_start(&fc, &err);
    if (f == NULL)
        crm_log(CRM_LOG_ERROR, "metrics: %s", err.detail);
    crm_error_clear(&err);
    return f;
}

/* The job workers of this process (CRMD_JOB_WORKERS; none when 0): the
 * jobs' own connections get CRMD_JOB_STATEMENT_TIMEOUT_MS. NULL when there
 * are none or they could not start (logged). */
static jobs_runner *start_job_runner(const crmd_config *cfg)
{
    if (cfg->job_workers == 0) {
        crm_log(CRM_LOG_INFO, "jobs: CRMD_JOB_WORKERS=0, this process runs none");
        return NULL;
    }
    char worker[128];
    jobs_runner_worker_name(worker, sizeof worker);
    crm_jobs_config jobs = {
        .db = db_config_from(cfg),
        .lease_s = cfg->job_lease_s,
        .worker = worker,
    };
    jobs.db.statement_timeout_ms = cfg->job_statement_timeout_ms;
    crm_error err = CRM_ERROR_INIT;
    jobs_runner *runner = jobs_runner_start(&jobs, cfg->job_workers, cfg->job_poll_ms, &err);
    if (runner == NULL)
        crm_log(CRM_LOG_ERROR, "jobs: %s", err.detail);
    else
        crm_log(CRM_LOG_INFO, "jobs: %d workers as %s", cfg->job_workers, worker);
    crm_error_clear(&err);
    return runner;
}

/* Applies migrations on a dedicated connection. With wait_s > 0 an
 * unreachable database is retried every second for that long. */
static bool run_migrations(const crmd_config *cfg, int wait_s)
{
    crm_db_config d = db_config_from(cfg);
    crm_error err = CRM_ERROR_INIT;
    PGconn *conn = NULL;
    for (int waited = 0;; waited++) {
        conn = crm_db_connect_direct(&d, &err);
        if (conn != NULL || waited >= wait_s)
            break;
        if (waited == 0)
            crm_log(CRM_LOG_WARN, "waiting up to %d s for the database", wait_s);
        crm_error_clear(&err);
        sleep(1);
    }
    if (conn == NULL) {
        crm_log(CRM_LOG_ERROR, "cannot reach the database: %s", err.detail);
        crm_error_clear(&err);
        return false;
    }
    int applied = 0;
    bool ok = crm_migrate_apply(conn, crm_migration_files, crm_migration_files_count, &applied,
                                &err);
    PQfinish(conn);
    if (!ok) {
        crm_log(CRM_LOG_ERROR, "migrations failed: %s", err.detail);
        crm_error_clear(&err);
        return false;
    }
    crm_log(CRM_LOG_INFO, "schema at version %d (%d migrations applied now)",
            crm_migrate_latest_version(crm_migration_files, crm_migration_files_count), applied);
    return true;
}

/* With --query: "METHOD PATTERN name,name" (or "-"), the query parameters
 * each route declares, which the contract test compares with openapi.yaml. */
/* crmd rule-sql: the rule on standard input, compiled as a segment's
 * build compiles it (now: the current time). Line 1 is the expression with
 * $n placeholders; each parameter follows on a line of its own (one that
 * holds a newline is refused: the output would be ambiguous). */
static int cmd_rule_sql(void)
{
    json_error_t jerr;
    json_t *json = json_loadf(stdin, 0, &jerr);
    if (json == NULL) {
        fprintf(stderr, "crmd: the rule is not JSON: %s (line %d)\n", jerr.text, jerr.line);
        return 2;
    }
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = crm_rule_parse(json, &err);
    json_decref(json);
    if (r == NULL) {
        char *why = err.errors ? json_dumps(err.errors, JSON_COMPACT) : NULL;
        fprintf(stderr, "crmd: %s %s\n", err.detail, why ? why : "");
        free(why);
        crm_error_clear(&err);
        return 2;
    }
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    int status = 0;
    if (!crm_rule_sql(r, &s, crm_wall_ms(), &arena, &err)) {
        fprintf(stderr, "crmd: %s\n", err.detail);
        status = 1;
    } else {
        printf("%s\n", crm_sqlbuf_text(&s));
        for (int i = 0; i < s.nparams; i++) {
            const char *v = s.params[i] ? s.params[i] : "";
            if (strchr(v, '\n') != NULL) {
                fprintf(stderr, "crmd: parameter %d holds a newline\n", i + 1);
                status = 1;
                break;
            }
            printf("%s\n", v);
        }
    }
    crm_error_clear(&err);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    crm_rule_free(r);
    return status;
}

static int cmd_routes(bool query)
{
    size_t n;
    const http_route *routes = router_table(&n);
    for (size_t i = 0; i < n; i++) {
        printf("%s %s ", routes[i].method, routes[i].pattern);
        if (!query) {
            printf("%s\n", router_scope_name(routes[i].scope));
            continue;
        }
        const char *const *q = routes[i].query;
        for (int k = 0; q != NULL && q[k] != NULL; k++)
            printf("%s%s", k > 0 ? "," : "", q[k]);
        printf("%s\n", q == NULL || q[0] == NULL ? "-" : "");
    }
    return 0;
}

/* crmd keys create --name NAME --scopes a,b: prints the secret alone on the
 * first line so scripts can take it with `head -n1`. */
static int cmd_keys(const crmd_config *cfg, int argc, char **argv)
{
    const char *name = NULL, *scopes = NULL;
    bool if_none = false;
    if (argc < 1 || strcmp(argv[0], "create") != 0) {
        fprintf(stderr, "usage: crmd keys create --name NAME --scopes SCOPE[,SCOPE...]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(argv[i], "--scopes") == 0 && i + 1 < argc)
            scopes = argv[++i];
        else if (strcmp(argv[i], "--if-none") == 0)
            if_none = true;
        else {
            fprintf(stderr, "crmd keys create: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (name == NULL || scopes == NULL) {
        fprintf(stderr, "crmd keys create: --name and --scopes are required\n");
        return 2;
    }
    if (!run_migrations(cfg, 0))
        return 1;

    json_t *list = json_array();
    char *copy = strdup(scopes), *save = NULL;
    if (list == NULL || copy == NULL) {
        fprintf(stderr, "crmd keys create: out of memory\n");
        json_decref(list);
        free(copy);
        return 1;
    }
    for (char *s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save))
        json_array_append_new(list, json_string(s));
    free(copy);
    json_t *body = json_pack("{s:s, s:o}", "name", name, "scopes", list);

    crm_error err = CRM_ERROR_INIT;
    json_t *key = NULL;
    crm_db_config d = db_config_from(cfg);
    d.pool_size = 1;
    bool any = false;
    if (body != NULL && crm_db_init(&d, &err) && (!if_none || crm_apikey_any_active(&any, &err)) &&
        !any)
        key = crm_apikey_create(body, &err);
    json_decref(body);
    crm_db_shutdown();
    if (any) /* --if-none and a key exists: nothing to do, nothing printed */
        return 0;
    if (key == NULL) {
        fprintf(stderr, "crmd keys create: %s\n", err.detail[0] ? err.detail : "invalid name");
        if (err.errors != NULL) {
            size_t i;
            json_t *e;
            json_array_foreach(err.errors, i, e) fprintf(
                stderr, "  %s: %s\n", json_string_value(json_object_get(e, "field")),
                json_string_value(json_object_get(e, "message")));
        }
        crm_error_clear(&err);
        return 1;
    }
    printf("%s\n", json_string_value(json_object_get(key, "secret")));
    printf("id: %lld\nprefix: %s\nname: %s\nscopes: %s\n",
           (long long)json_integer_value(json_object_get(key, "id")),
           json_string_value(json_object_get(key, "prefix")), name, scopes);
    json_decref(key);
    return 0;
}

/* Periodic upkeep of what the database keeps only for a while. Every crmd
 * does it (they are stateless and equal); the deletes are idempotent. */
static void housekeeping(void)
{
    crm_error err = CRM_ERROR_INIT;
    long purged = crm_idempotency_purge(&err);
    if (purged < 0)
        crm_log(CRM_LOG_WARN, "housekeeping: %s", err.detail);
    else if (purged > 0)
        crm_log(CRM_LOG_INFO, "housekeeping: deleted %ld expired idempotency responses", purged);
    crm_error_clear(&err);
    /* Bounded: 20 batches of 500 a round, so a backlog never delays a stop
     * signal for long; the next round goes on. */
    long tombstones = crm_sync_purge_tombstones(500, 20, &err);
    if (tombstones < 0)
        crm_log(CRM_LOG_WARN, "housekeeping: %s", err.detail);
    else if (tombstones > 0)
        crm_log(CRM_LOG_INFO, "housekeeping: purged %ld sync tombstones past the retention",
                tombstones);
    crm_error_clear(&err);
}

/* The main thread's life while crmd serves: housekeeping every interval_s
 * seconds until a stop signal arrives; returns the signal. */
static int wait_for_stop(const sigset_t *stop, int interval_s)
{
    for (;;) {
        struct timespec wait = {.tv_sec = interval_s};
        int sig = sigtimedwait(stop, NULL, &wait);
        if (sig > 0)
            return sig;
        if (errno == EAGAIN)
            housekeeping();
    }
}

static int cmd_serve(const crmd_config *cfg)
{
    /* Block the stop signals in every thread; main waits for them below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    char cors_error[256];
    if (!cors_configure(cfg->cors_origins, cors_error, sizeof cors_error)) {
        crm_log(CRM_LOG_ERROR, "%s", cors_error);
        return 2;
    }
    if (!run_migrations(cfg, STARTUP_DB_WAIT_S))
        return 1;
    crm_db_config d = db_config_from(cfg);
    crm_error err = CRM_ERROR_INIT;
    if (!crm_db_init(&d, &err)) {
        crm_log(CRM_LOG_ERROR, "%s", err.detail);
        return 1;
    }
    /* Before any request: the I/O threads must never block loading it. */
    if (!crm_cursor_secret_load(&err)) {
        crm_log(CRM_LOG_ERROR, "cursor secret: %s", err.detail);
        crm_error_clear(&err);
        crm_db_shutdown();
        return 1;
    }
    crm_auth_set_cache_ttl(cfg->key_cache_ttl_ms);
    crm_sync_set_retention_days(cfg->sync_retention_days);
    crm_touchpoint_set_future_tolerance(cfg->touchpoint_future_tolerance_s);
    configure_metrics(cfg);
    crm_jobs_register(&crm_metrics_recompute_kind); /* before the runner starts */
    crm_jobs_register(&crm_metrics_patterns_kind);
    crm_jobs_register(&crm_metrics_base_kind);
    crm_jobs_register(&crm_campaign_execute_kind);
    crm_campaigns_set_currency(cfg->reporting_currency);
    crm_segments_register_jobs();
    if (!http_throttle_configure(cfg->rate_limit_rps, cfg->rate_limit_burst)) {
        crm_log(CRM_LOG_ERROR, "cannot make the rate limit's table");
        crm_db_shutdown();
        return 1;
    }
    http_server *srv = http_server_start(cfg, &d, &err);
    if (srv == NULL) {
        crm_log(CRM_LOG_ERROR, "%s", err.detail);
        http_throttle_shutdown();
        crm_db_shutdown();
        return 1;
    }
    if (!crm_log_start_writer())
        crm_log(CRM_LOG_WARN, "log writer thread not started; writing lines directly");
    jobs_runner *runner = start_job_runner(cfg);
    if (cfg->job_workers > 0 && runner == NULL) {
        http_server_stop(srv);
        http_throttle_shutdown();
        crm_db_shutdown();
        crm_log_stop_writer();
        return 1;
    }
    metrics_follower *follower = start_metrics_follower(cfg);
    segments_worker_config scfg = {.tick_ms = cfg->segments_tick_ms,
                                   .flip_batch = cfg->segments_flip_batch,
                                   .queue_ms = cfg->segments_queue_ms,
                                   .queue_batches = cfg->segments_queue_batches,
                                   .campaigns_ms = cfg->campaigns_tick_ms,
                                   .currency = cfg->reporting_currency};
    segments_worker *segments = segments_worker_start(&scfg);
    crm_log(CRM_LOG_INFO,
            "crmd %s listening on http://%s:%d (%d I/O threads with %d pipelined connections "
            "each, %d workers, pool of %d)",
            CRMD_VERSION, cfg->listen_host, http_server_port(srv), cfg->io_threads,
            cfg->async_pool_size, cfg->threads, cfg->pool_size);

    int sig = wait_for_stop(&stop, cfg->housekeeping_s);
    crm_log(CRM_LOG_INFO, "received %s; finishing in-flight requests",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    /* First: a running job saves its checkpoint at its next progress and
     * goes back to the queue, its progress and ending still on the pool. */
    segments_worker_stop(segments);
    metrics_follower_stop(follower);
    jobs_runner_stop(runner);
    http_server_stop(srv);
    http_throttle_shutdown();
    crm_db_shutdown();
    crm_log(CRM_LOG_INFO, "stopped");
    crm_log_stop_writer();
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("crmd %s\n", CRMD_VERSION);
        return 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "crmd: libsodium failed to initialise\n");
        return 1;
    }
    if (strcmp(cmd, "routes") == 0)
        return cmd_routes(argc > 2 && strcmp(argv[2], "--query") == 0);
    if (strcmp(cmd, "rule-sql") == 0)
        return cmd_rule_sql();

    crmd_config cfg;
    char errbuf[256];
    if (!crmd_config_load(&cfg, errbuf, sizeof errbuf)) {
        fprintf(stderr, "crmd: %s\n", errbuf);
        return 2;
    }
    crm_log_set_level((crm_log_level)cfg.log_level);

    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(&cfg);
    if (strcmp(cmd, "migrate") == 0)
        return run_migrations(&cfg, 0) ? 0 : 1;
    if (strcmp(cmd, "keys") == 0)
        return cmd_keys(&cfg, argc - 2, argv + 2);
    fprintf(stderr, "crmd: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
