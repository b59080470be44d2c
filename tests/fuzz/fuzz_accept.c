/*
 * fuzz_accept.c — http_accept_weight, which reads the Accept header of
 * GET /v1/campaigns/{id}/contacts (CSV or JSON).
 *
 * Input: the header. Properties: the weight is 0 to 1000; a type gets a
 * weight above 0 only from a range that can name it (its own text, case
 * aside, or a wildcard).
 */
#include "fuzz.h"

#include "handlers.h"

#include <strings.h>

/* True when s holds needle, ASCII case aside. */
static bool holds(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s != '\0'; s++)
        if (strncasecmp(s, needle, n) == 0)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *header = fuzz_string(data, size);
    const char *types[] = {"text/csv", "application/json"};
    for (int i = 0; i < 2; i++) {
        int w = http_accept_weight(header, types[i]);
        FUZZ_CHECK(w >= 0 && w <= 1000);
        if (w > 0)
            FUZZ_CHECK(strchr(header, '*') != NULL || holds(header, types[i]));
    }
    free(header);
    return 0;
}
