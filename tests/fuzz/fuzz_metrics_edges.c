/*
 * fuzz_metrics_edges.c — `edges=` of GET /v1/metrics/distribution
 * (metrics_parse_edges), and what is done with the edges it accepts: the
 * bin of a value (metrics_bin_of).
 *
 * Properties: accepted edges are 2 to 201 finite numbers, strictly
 * ascending, one per comma-separated field of the input, and the input has
 * only the characters of decimal numbers; every edge falls in a bin (the
 * last one in the last bin), a value below the first or above the last in
 * none, and a value between two edges in the bin they bound.
 */
#include "fuzz.h"

#include "metrics/internal.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_string(data, size);
    metrics_edges e;
    const char *why = NULL;
    if (metrics_parse_edges(s, &e, &why)) {
        FUZZ_CHECK(e.count >= 2 && e.count <= METRICS_MAX_EDGES);
        FUZZ_CHECK(strspn(s, "0123456789+-.eE,") == strlen(s));
        int commas = 0;
        for (const char *p = s; *p; p++)
            commas += *p == ',';
        FUZZ_CHECK(commas == e.count - 1);
        for (int i = 0; i < e.count; i++) {
            FUZZ_CHECK(isfinite(e.at[i]));
            FUZZ_CHECK(i == 0 || e.at[i] > e.at[i - 1]);
            FUZZ_CHECK(metrics_bin_of(&e, e.at[i]) == (i == e.count - 1 ? i - 1 : i));
        }
        for (int i = 0; i + 1 < e.count; i++) {
            double mid = e.at[i] + (e.at[i + 1] - e.at[i]) / 2;
            if (mid > e.at[i] && mid < e.at[i + 1])
                FUZZ_CHECK(metrics_bin_of(&e, mid) == i);
        }
        FUZZ_CHECK(metrics_bin_of(&e, nextafter(e.at[0], -INFINITY)) == -1);
        FUZZ_CHECK(metrics_bin_of(&e, nextafter(e.at[e.count - 1], INFINITY)) == -1);
    } else {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
    }
    free(s);
    return 0;
}
