/*
 * suites.h — every Check suite of the unit test executable.
 *
 * Each test_<area>.c defines one <area>_suite(); main.c runs them all in
 * this order. Suites that need PostgreSQL read CRMD_TEST_DATABASE_URL and
 * CRMD_TEST_ADMIN_URL (see tests/CMakeLists.txt).
 */
#ifndef UNIT_SUITES_H
#define UNIT_SUITES_H

#include <check.h>

Suite *error_suite(void);
Suite *json_suite(void);
Suite *copytext_suite(void);
Suite *csv_suite(void);
Suite *accept_suite(void);
Suite *arena_suite(void);
Suite *router_suite(void);
Suite *http_edge_suite(void);
Suite *ratelimit_suite(void);
Suite *db_suite(void);
Suite *dbloop_suite(void);
Suite *migrate_suite(void);
Suite *auth_suite(void);
Suite *customers_suite(void);
Suite *customer_search_suite(void);
Suite *consents_suite(void);
Suite *customer_merge_suite(void);
Suite *customer_privacy_suite(void);
Suite *sync_suite(void);
Suite *touchpoints_suite(void);
Suite *timestamps_suite(void);
Suite *utf8_suite(void);
Suite *stored_json_suite(void);
Suite *merge_chains_suite(void);
Suite *touchpoint_drift_suite(void);
Suite *customer_tables_suite(void);
Suite *allow_lists_suite(void);
Suite *list_suite(void);
Suite *metrics_suite(void);
Suite *metrics_patterns_suite(void);
Suite *metrics_base_suite(void);
Suite *jobs_suite(void);
Suite *btyd_suite(void);
Suite *campaign_stats_suite(void);
Suite *currency_suite(void);
Suite *segment_rules_suite(void);
Suite *segment_flips_suite(void);
Suite *segments_live_suite(void);
Suite *contact_check_suite(void);

#endif
