/*
 * fuzz_metrics_query.c — the values of the cohorts' and market basket's
 * query parameters (crm_metrics_parse_month, _decimal and _count).
 *
 * Properties: an accepted month is exactly "YYYY-MM" between 0001-01 and
 * 9999-12, and printing the month count back gives the input; an accepted
 * decimal is finite, not negative, and only of the characters of a plain
 * decimal number; an accepted count is within 1..max, and printing it back
 * gives the input once its leading zeros are dropped.
 */
#include "fuzz.h"

#include "customer_metrics.h"

#include <math.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_string(data, size);
    int month = -1;
    if (crm_metrics_parse_month(s, &month)) {
        FUZZ_CHECK(month >= 12 && month <= 9999 * 12 + 11);
        char back[16];
        snprintf(back, sizeof back, "%04d-%02d", month / 12, month % 12 + 1);
        FUZZ_CHECK(strcmp(back, s) == 0);
    }
    double v = crm_metrics_parse_decimal(s);
    if (!isnan(v)) {
        FUZZ_CHECK(isfinite(v) && v >= 0);
        FUZZ_CHECK(strspn(s, "0123456789.eE+-") == strlen(s));
    }
    int n = crm_metrics_parse_count(s, 120);
    if (n != 0) {
        FUZZ_CHECK(n >= 1 && n <= 120);
        const char *digits = s;
        while (*digits == '0' && digits[1] != '\0')
            digits++;
        char back[16];
        snprintf(back, sizeof back, "%d", n);
        FUZZ_CHECK(strcmp(back, digits) == 0);
    }
    free(s);
    return 0;
}
