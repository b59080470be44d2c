/*
 * config.h — crmd's configuration, read once from the environment at start.
 *
 * Every variable is documented in README.md and printed by `crmd --help`
 * from the same table in config.c.
 */
#ifndef HTTP_CONFIG_H
#define HTTP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct crmd_config {
    const char *database_url;
    char listen_host[64];
    int listen_port;
    int threads;
    int io_threads;
    int max_connections;
    int connection_timeout_s;
    int header_timeout_s;
    int body_timeout_s;
    int max_connections_per_ip;
    size_t max_body_bytes;
    size_t body_budget_bytes;
    size_t max_url_bytes;
    size_t max_header_bytes;
    int pool_size;
    int async_pool_size;
    int pool_timeout_ms;
    int db_connect_timeout_s;
    int db_retry_backoff_ms;
    int statement_timeout_ms;
    int read_timeout_ms; /* the event loops' sessions */
    int key_cache_ttl_ms;
    int shutdown_timeout_s;
    int retry_after_s;
    bool access_log;
    int log_level;
    int sync_retention_days;
    int housekeeping_s;
    const char *reporting_currency;
    int metrics_window_days;
    int metrics_horizon_days;
    int metrics_discount_percent;
    int metrics_tier_top_permille;
    int metrics_tier_high_permille;
    int lifecycle_new_days;
    int lifecycle_at_risk_days;
    int lifecycle_at_risk_p_alive_percent;
    int lifecycle_lapsed_days;
    int metrics_follow_ms; /* 0: this process does not follow */
    int metrics_follow_batch;
    int segments_tick_ms; /* 0: this process runs no segments upkeep */
    int campaigns_tick_ms; /* 0: this process attributes no responses, refreshes no results */
    int segments_flip_batch;
    int segments_queue_ms; /* 0: this process judges no queued batch */
    int segments_queue_batches;
    int metrics_follow_duty_percent;
    int metrics_schedule_hours; /* 0: recomputes only on demand */
    int metrics_basket_min_orders;
    int touchpoint_future_tolerance_s;
    const char *cors_origins;
    int rate_limit_rps;
    int rate_limit_burst;
    int job_workers; /* threads that run jobs; 0: none in this process */
    int job_lease_s;
    int job_poll_ms;
    int job_statement_timeout_ms; /* the jobs' own connections */
} crmd_config;

/* Fills cfg from the environment. On a bad value writes a message to errbuf
 * and returns false. */
bool crmd_config_load(crmd_config *cfg, char *errbuf, size_t errsize);

/* Prints the variables, their defaults and meaning. */
void crmd_config_print_help(FILE *out);

#endif
