/*
 * main.c — runs every unit suite (suites.h) and exits non-zero on failure.
 *
 * The code under test logs its failure paths (a refused connection, a
 * failed statement), which these tests provoke on purpose; logging is
 * therefore off unless CRMD_TEST_LOG names a level ("debug", "warn", ...).
 * CK_RUN_SUITE / CK_RUN_CASE select a part of the run, CK_FORK=no runs every
 * test in this process (for valgrind).
 */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "suites.h"

static void configure_logging(void)
{
    const char *name = getenv("CRMD_TEST_LOG");
    int level = name != NULL ? crm_log_level_parse(name) : -1;
    /* One past the highest level: nothing is written. */
    crm_log_set_level(level >= 0 ? (crm_log_level)level : (crm_log_level)(CRM_LOG_ERROR + 1));
}

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return EXIT_FAILURE;
    }
    configure_logging();

    SRunner *sr = srunner_create(error_suite());
    srunner_add_suite(sr, json_suite());
    srunner_add_suite(sr, copytext_suite());
    srunner_add_suite(sr, csv_suite());
    srunner_add_suite(sr, accept_suite());
    srunner_add_suite(sr, arena_suite());
    srunner_add_suite(sr, router_suite());
    srunner_add_suite(sr, http_edge_suite());
    srunner_add_suite(sr, ratelimit_suite());
    srunner_add_suite(sr, db_suite());
    srunner_add_suite(sr, dbloop_suite());
    srunner_add_suite(sr, migrate_suite());
    srunner_add_suite(sr, auth_suite());
    srunner_add_suite(sr, customers_suite());
    srunner_add_suite(sr, customer_search_suite());
    srunner_add_suite(sr, consents_suite());
    srunner_add_suite(sr, customer_merge_suite());
    srunner_add_suite(sr, customer_privacy_suite());
    srunner_add_suite(sr, sync_suite());
    srunner_add_suite(sr, touchpoints_suite());
    srunner_add_suite(sr, timestamps_suite());
    srunner_add_suite(sr, utf8_suite());
    srunner_add_suite(sr, stored_json_suite());
    srunner_add_suite(sr, merge_chains_suite());
    srunner_add_suite(sr, touchpoint_drift_suite());
    srunner_add_suite(sr, customer_tables_suite());
    srunner_add_suite(sr, allow_lists_suite());
    srunner_add_suite(sr, list_suite());
    srunner_add_suite(sr, metrics_suite());
    srunner_add_suite(sr, metrics_patterns_suite());
    srunner_add_suite(sr, metrics_base_suite());
    srunner_add_suite(sr, jobs_suite());
    srunner_add_suite(sr, btyd_suite());
    srunner_add_suite(sr, campaign_stats_suite());
    srunner_add_suite(sr, currency_suite());
    srunner_add_suite(sr, segment_rules_suite());
    srunner_add_suite(sr, contact_check_suite());
    srunner_add_suite(sr, segment_flips_suite());
    srunner_add_suite(sr, segments_live_suite());

    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
