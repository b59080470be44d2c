/*
 * main.c — the API test runner.
 *
 *   api_tests          every suite but the outage one
 *   api_tests outage   only the outage suite (it stops the test database)
 *
 * Needs CRMD_BIN and CRMD_TEST_DATABASE_URL (see harness.h). The admin key
 * every suite uses is made here, once, before any test forks.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    bool outage = argc > 1 && strcmp(argv[1], "outage") == 0;
    if (argc > 2 || (argc == 2 && !outage)) {
        fprintf(stderr, "usage: %s [outage]\n", argv[0]);
        return 2;
    }
    harness_env("CRMD_BIN");
    harness_env("CRMD_TEST_DATABASE_URL");
    if (outage) {
        harness_env("CRMD_TEST_PG_STOP");
        harness_env("CRMD_TEST_PG_START");
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "api_tests: curl_global_init failed\n");
        return 2;
    }
    if (!harness_log_dir_create())
        return 2;
    if (!api_key_create("admin", &harness_admin_key)) {
        fprintf(stderr, "api_tests: could not create the admin key; is the test database up?\n");
        harness_log_dir_finish(false);
        return 2;
    }

    SRunner *sr;
    if (outage) {
        sr = srunner_create(outage_suite());
    } else {
        sr = srunner_create(ops_suite());
        srunner_add_suite(sr, errors_suite());
        srunner_add_suite(sr, apikeys_suite());
        srunner_add_suite(sr, http_suite());
        srunner_add_suite(sr, customers_suite());
        srunner_add_suite(sr, customer_search_suite());
        srunner_add_suite(sr, consents_suite());
        srunner_add_suite(sr, customer_merge_suite());
        srunner_add_suite(sr, customer_privacy_suite());
        srunner_add_suite(sr, sync_suite());
        srunner_add_suite(sr, touchpoints_suite());
        srunner_add_suite(sr, scopes_suite());
        srunner_add_suite(sr, hostile_values_suite());
        srunner_add_suite(sr, query_suite());
        srunner_add_suite(sr, cors_suite());
        srunner_add_suite(sr, ratelimit_suite());
        srunner_add_suite(sr, metrics_suite());
        srunner_add_suite(sr, metrics_patterns_suite());
        srunner_add_suite(sr, metrics_base_suite());
        srunner_add_suite(sr, jobs_suite());
        srunner_add_suite(sr, currency_rates_suite());
        srunner_add_suite(sr, segments_suite());
        srunner_add_suite(sr, treatments_suite());
        srunner_add_suite(sr, treatment_rules_suite());
        srunner_add_suite(sr, contacts_suite());
        srunner_add_suite(sr, campaigns_suite());
        srunner_add_suite(sr, campaign_execution_suite());
    }
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    harness_log_dir_finish(failed != 0);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
