/*
 * config.c — environment variables, their defaults and their checks.
 */
#include "config.h"
#include "currency.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { VAR_STRING, VAR_INT, VAR_SIZE, VAR_BOOL, VAR_LISTEN, VAR_LOGLEVEL } var_kind;

typedef struct env_var {
    const char *name;
    var_kind kind;
    const char *def;
    long long min, max;
    size_t offset;
    const char *help;
} env_var;

#define OFF(f) offsetof(crmd_config, f)

static const env_var vars[] = {
    {"CRMD_DATABASE_URL", VAR_STRING, "", 0, 0, OFF(database_url),
     "PostgreSQL connection URI or key=value string; empty uses libpq's PG* variables"},
    {"CRMD_LISTEN", VAR_LISTEN, "127.0.0.1:8080", 0, 0, 0, "address:port to serve HTTP on"},
    {"CRMD_IO_THREADS", VAR_INT, "0", 0, 256, OFF(io_threads),
     "threads that serve HTTP and run single-statement reads; 0 means one per two CPU cores"},
    {"CRMD_THREADS", VAR_INT, "0", 0, 1024, OFF(threads),
     "worker threads for handlers that may block (writes); 0 means the pool size"},
    {"CRMD_MAX_CONNECTIONS", VAR_INT, "4096", 1, 1000000, OFF(max_connections),
     "concurrent client connections at most"},
    {"CRMD_CONNECTION_TIMEOUT_S", VAR_INT, "60", 1, 86400, OFF(connection_timeout_s),
     "idle keep-alive connections are closed after this many seconds"},
    {"CRMD_HEADER_TIMEOUT_S", VAR_INT, "10", 1, 3600, OFF(header_timeout_s),
     "a request's headers must arrive within this many seconds (after the idle timeout on a "
     "kept-alive connection); slower clients are disconnected"},
    {"CRMD_BODY_TIMEOUT_S", VAR_INT, "60", 1, 86400, OFF(body_timeout_s),
     "a request's body must arrive within this many seconds of its headers"},
    {"CRMD_MAX_CONNECTIONS_PER_IP", VAR_INT, "256", 0, 1000000, OFF(max_connections_per_ip),
     "concurrent connections from one client address at most; 0: no cap (behind a proxy)"},
    {"CRMD_MAX_BODY_BYTES", VAR_SIZE, "8388608", 1024, 1LL << 32, OFF(max_body_bytes),
     "largest request body accepted on any route (each route has its own, smaller for most); "
     "larger gets 413"},
    {"CRMD_BODY_BUDGET_BYTES", VAR_SIZE, "268435456", 4096, 1LL << 40, OFF(body_budget_bytes),
     "request bodies being received, summed over all connections, at most; beyond, 503"},
    {"CRMD_MAX_URL_BYTES", VAR_SIZE, "8192", 256, 1 << 20, OFF(max_url_bytes),
     "longest request URL accepted; longer gets 414"},
    {"CRMD_MAX_HEADER_BYTES", VAR_SIZE, "16384", 1024, 1 << 20, OFF(max_header_bytes),
     "largest total of request header names and values; larger gets 431"},
    {"CRMD_POOL_SIZE", VAR_INT, "16", 1, 1000, OFF(pool_size), "PostgreSQL connections at most"},
    {"CRMD_ASYNC_POOL_SIZE", VAR_INT, "3", 1, 1000, OFF(async_pool_size),
     "pipelined PostgreSQL connections of each I/O thread, for single-statement reads"},
    {"CRMD_POOL_TIMEOUT_MS", VAR_INT, "2000", 0, 600000, OFF(pool_timeout_ms),
     "how long a request waits for a free database connection before 503"},
    {"CRMD_DB_CONNECT_TIMEOUT_S", VAR_INT, "2", 1, 600, OFF(db_connect_timeout_s),
     "connect timeout for new database connections (unless the URL sets one)"},
    {"CRMD_DB_RETRY_MS", VAR_INT, "250", 0, 60000, OFF(db_retry_backoff_ms),
     "after a failed connect, requests fail fast with 503 for this long"},
    {"CRMD_STATEMENT_TIMEOUT_MS", VAR_INT, "30000", 0, 86400000, OFF(statement_timeout_ms),
     "PostgreSQL statement_timeout for crmd's sessions (0: none)"},
    {"CRMD_READ_TIMEOUT_MS", VAR_INT, "5000", 0, 86400000, OFF(read_timeout_ms),
     "statement_timeout of the event loops' sessions, which run the read routes "
     "(pages, searches, timelines): a heavy page ends there, 503 (0: none)"},
    {"CRMD_TOUCHPOINT_FUTURE_TOLERANCE_S", VAR_INT, "300", 0, 86400,
     OFF(touchpoint_future_tolerance_s),
     "how far into the future a touchpoint's (and a contact request's) occurred_at may lie "
     "(clocks drift)"},
    {"CRMD_KEY_CACHE_TTL_MS", VAR_INT, "5000", 0, 600000, OFF(key_cache_ttl_ms),
     "how long a checked API key is trusted without reading the database again"},
    {"CRMD_SHUTDOWN_TIMEOUT_S", VAR_INT, "10", 0, 3600, OFF(shutdown_timeout_s),
     "on SIGTERM/SIGINT, how long in-flight requests get to finish"},
    {"CRMD_RETRY_AFTER_S", VAR_INT, "1", 1, 3600, OFF(retry_after_s),
     "Retry-After value sent with 503 responses"},
    {"CRMD_ACCESS_LOG", VAR_BOOL, "1", 0, 1, OFF(access_log),
     "1 to write one JSON line per request to stderr, 0 to stay quiet"},
    {"CRMD_LOG_LEVEL", VAR_LOGLEVEL, "info", 0, 0, OFF(log_level), "debug, info, warn or error"},
    {"CRMD_SYNC_RETENTION_DAYS", VAR_INT, "90", 1, 36500, OFF(sync_retention_days),
     "how long the sync feeds keep deletions; an older cursor gets 410 (full resync)"},
    {"CRMD_CORS_ORIGINS", VAR_STRING, "", 0, 0, OFF(cors_origins),
     "origins that may call the API from a browser, comma-separated, or * for any; empty: "
     "no CORS headers"},
    {"CRMD_RATE_LIMIT_RPS", VAR_INT, "100", 0, 1000000, OFF(rate_limit_rps),
     "requests a second each API key may make, per crmd process (0: no limit)"},
    {"CRMD_RATE_LIMIT_BURST", VAR_INT, "200", 1, 1000000, OFF(rate_limit_burst),
     "requests a key may make at once before the per-second rate applies"},
    {"CRMD_HOUSEKEEPING_S", VAR_INT, "300", 1, 86400, OFF(housekeeping_s),
     "how often expired Idempotency-Key responses (older than 24 hours) are deleted"},
    {"CRMD_REPORTING_CURRENCY", VAR_STRING, "EUR", 0, 0, OFF(reporting_currency),
     "the currency of every metric's amounts (ISO 4217); others are converted by the rate table"},
    {"CRMD_METRICS_WINDOW_DAYS", VAR_INT, "365", 1, 36500, OFF(metrics_window_days),
     "the RFM window: frequency and monetary count the purchases of these last days"},
    {"CRMD_METRICS_HORIZON_DAYS", VAR_INT, "365", 1, 3650, OFF(metrics_horizon_days),
     "how far ahead predicted purchases and value look"},
    {"CRMD_METRICS_DISCOUNT_PERCENT", VAR_INT, "10", 0, 100, OFF(metrics_discount_percent),
     "the annual discount rate of predicted value"},
    {"CRMD_METRICS_TIER_TOP_PERMILLE", VAR_INT, "10", 1, 1000, OFF(metrics_tier_top_permille),
     "value tier top: this share of customers by predicted value, in thousandths"},
    {"CRMD_METRICS_TIER_HIGH_PERMILLE", VAR_INT, "200", 1, 1000, OFF(metrics_tier_high_permille),
     "value tier high: the rest of this share (top included), in thousandths"},
    {"CRMD_LIFECYCLE_NEW_DAYS", VAR_INT, "90", 1, 36500, OFF(lifecycle_new_days),
     "lifecycle: a customer whose first purchase is at most this many days old is new"},
    {"CRMD_LIFECYCLE_AT_RISK_DAYS", VAR_INT, "180", 1, 36500, OFF(lifecycle_at_risk_days),
     "lifecycle: a customer without a purchase for longer is at risk"},
    {"CRMD_LIFECYCLE_AT_RISK_P_ALIVE_PERCENT", VAR_INT, "30", 0, 100,
     OFF(lifecycle_at_risk_p_alive_percent),
     "lifecycle: a customer whose P(alive) is below this (percent) is at risk"},
    {"CRMD_LIFECYCLE_LAPSED_DAYS", VAR_INT, "365", 1, 36500, OFF(lifecycle_lapsed_days),
     "lifecycle: a customer without a purchase for longer has lapsed; one who buys again after "
     "a longer gap is won back"},
    {"CRMD_METRICS_FOLLOW_MS", VAR_INT, "500", 0, 600000, OFF(metrics_follow_ms),
     "how often the metrics' follower looks for purchases, refunds, feedback, merges and "
     "erasures to bring into customer_metrics (0: this process never follows)"},
    {"CRMD_SEGMENTS_TICK_MS", VAR_INT, "1000", 0, 600000, OFF(segments_tick_ms),
     "how often the segments' upkeep moves the customers whose standing changed with time, "
     "folds the segments' counts and records their daily size (0: this process runs none); "
     "a time-window membership changes at most about this late"},
    {"CRMD_CAMPAIGNS_TICK_MS", VAR_INT, "1000", 0, 600000, OFF(campaigns_tick_ms),
     "how often the campaigns' upkeep attributes new touchpoints to campaigns as responses "
     "and recomputes the results that moved (0: this process runs none); results are "
     "current about this long after a response"},
    {"CRMD_SEGMENTS_FLIP_BATCH", VAR_INT, "1000", 1, 100000, OFF(segments_flip_batch),
     "customers the segments' upkeep re-evaluates in one transaction"},
    {"CRMD_SEGMENTS_QUEUE_MS", VAR_INT, "100", 0, 600000, OFF(segments_queue_ms),
     "how often the segments' upkeep looks for batches of touchpoints to judge (0: this "
     "process judges none); a batch's memberships are current about this long after it "
     "answers, when the upkeep keeps up"},
    {"CRMD_SEGMENTS_QUEUE_BATCHES", VAR_INT, "10", 1, 1000, OFF(segments_queue_batches),
     "batches of touchpoints the segments' upkeep judges in one transaction"},
    {"CRMD_METRICS_FOLLOW_BATCH", VAR_INT, "5000", 1, 1000000, OFF(metrics_follow_batch),
     "changes of each feed the follower takes in one sweep (one transaction)"},
    {"CRMD_METRICS_FOLLOW_DUTY_PERCENT", VAR_INT, "20", 1, 100, OFF(metrics_follow_duty_percent),
     "with changes waiting, the share of time the follower works (it rests in between, so that "
     "bulk ingest keeps most of the machine; 100: it never rests)"},
    {"CRMD_METRICS_SCHEDULE_HOURS", VAR_INT, "24", 0, 8760, OFF(metrics_schedule_hours),
     "a full recompute is queued when none was queued in these last hours (0: only on demand); "
     "the process that follows queues it"},
    {"CRMD_METRICS_BASKET_MIN_ORDERS", VAR_INT, "2", 1, 1000000, OFF(metrics_basket_min_orders),
     "market basket: pairs bought together in fewer orders than this are not kept"},
    {"CRMD_JOB_WORKERS", VAR_INT, "1", 0, 64, OFF(job_workers),
     "threads that run jobs (long work: recomputes, builds), one job each at a time; 0: this "
     "process runs none (others do)"},
    {"CRMD_JOB_LEASE_S", VAR_INT, "30", 5, 3600, OFF(job_lease_s),
     "a running job's lease, renewed as it reports progress; a job of a process that died is "
     "taken over this long after its last report"},
    {"CRMD_JOB_POLL_MS", VAR_INT, "1000", 10, 600000, OFF(job_poll_ms),
     "how often an idle job worker looks for queued jobs (a job queued by this process wakes it "
     "at once)"},
    {"CRMD_JOB_STATEMENT_TIMEOUT_MS", VAR_INT, "0", 0, 86400000, OFF(job_statement_timeout_ms),
     "statement_timeout of the jobs' own connections (0: none)"},
};

void crmd_config_print_help(FILE *out)
{
    fprintf(out, "Environment:\n");
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        fprintf(out, "  %-26s %s (default: %s)\n", vars[i].name, vars[i].help,
                vars[i].def[0] ? vars[i].def : "empty");
}

static bool parse_listen(crmd_config *cfg, const char *value, char *errbuf, size_t errsize)
{
    const char *colon = strrchr(value, ':');
    if (colon == NULL || colon == value || (size_t)(colon - value) >= sizeof cfg->listen_host) {
        snprintf(errbuf, errsize, "CRMD_LISTEN must be host:port, got '%s'", value);
        return false;
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port < 0 || port > 65535) {
        snprintf(errbuf, errsize, "CRMD_LISTEN has a bad port: '%s'", value);
        return false;
    }
    memcpy(cfg->listen_host, value, (size_t)(colon - value));
    cfg->listen_host[colon - value] = '\0';
    cfg->listen_port = (int)port;
    return true;
}

static bool parse_number(const env_var *v, const char *value, long long *out, char *errbuf,
                         size_t errsize)
{
    char *end;
    errno = 0;
    long long n = strtoll(value, &end, 10);
    if (errno != 0 || *end != '\0' || end == value || n < v->min || n > v->max) {
        snprintf(errbuf, errsize, "%s must be an integer from %lld to %lld, got '%s'", v->name,
                 v->min, v->max, value);
        return false;
    }
    *out = n;
    return true;
}

bool crmd_config_load(crmd_config *cfg, char *errbuf, size_t errsize)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const env_var *v = &vars[i];
        const char *value = getenv(v->name);
        if (value == NULL || (value[0] == '\0' && v->kind != VAR_STRING))
            value = v->def;
        char *field = (char *)cfg + v->offset;
        long long n = 0;
        switch (v->kind) {
        case VAR_STRING:
            *(const char **)field = value;
            break;
        case VAR_LISTEN:
            if (!parse_listen(cfg, value, errbuf, errsize))
                return false;
            break;
        case VAR_LOGLEVEL:
            if ((*(int *)field = crm_log_level_parse(value)) < 0) {
                snprintf(errbuf, errsize, "%s must be debug, info, warn or error", v->name);
                return false;
            }
            break;
        case VAR_INT:
        case VAR_BOOL:
            if (!parse_number(v, value, &n, errbuf, errsize))
                return false;
            if (v->kind == VAR_BOOL)
                *(bool *)field = n != 0;
            else
                *(int *)field = (int)n;
            break;
        case VAR_SIZE:
            if (!parse_number(v, value, &n, errbuf, errsize))
                return false;
            *(size_t *)field = (size_t)n;
            break;
        }
    }
    /* One of the codes amounts may carry (currency.h): any other would
     * leave every purchase unrated. */
    if (!crm_currency_known(cfg->reporting_currency)) {
        snprintf(errbuf, errsize, "CRMD_REPORTING_CURRENCY must be an ISO 4217 code such as EUR");
        return false;
    }
    if (cfg->lifecycle_at_risk_days > cfg->lifecycle_lapsed_days) {
        snprintf(errbuf, errsize,
                 "CRMD_LIFECYCLE_AT_RISK_DAYS must be at most CRMD_LIFECYCLE_LAPSED_DAYS");
        return false;
    }
    if (cfg->metrics_tier_high_permille < cfg->metrics_tier_top_permille) {
        snprintf(errbuf, errsize,
                 "CRMD_METRICS_TIER_HIGH_PERMILLE must be at least CRMD_METRICS_TIER_TOP_PERMILLE");
        return false;
    }
    /* Half the cores: an I/O thread serves many connections and batches
     * their statements, and the rest of the machine goes to the workers and,
     * usually, to PostgreSQL. On two cores one I/O thread served a point
     * read 40% faster than two, which spent their time waking each other's
     * peers (see README, "Threading"). */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cfg->io_threads == 0)
        cfg->io_threads = cpus >= 2 ? (int)(cpus / 2) : 1;
    if (cfg->threads == 0)
        cfg->threads = cfg->pool_size;
    return true;
}
