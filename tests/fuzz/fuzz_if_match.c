/*
 * fuzz_if_match.c — crm_etag_matches, which reads the If-Match header of
 * PATCH, DELETE and PUT on customers (a list of entity tags, or "*").
 *
 * Input: the first byte is the stored version (0 to 255), the rest the
 * header. Properties: the header "<version>" in quotes matches, and alone
 * with the next version does not; a header that matches holds "*" or the
 * quoted version (nothing else can stand for the stored customer).
 */
#include "fuzz.h"

#include "customers.h"

#include <stdbool.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int version = data[0];
    char tag[24];
    snprintf(tag, sizeof tag, "\"%d\"", version);
    FUZZ_CHECK(crm_etag_matches(tag, version));
    FUZZ_CHECK(!crm_etag_matches(tag, version + 1));

    char *header = fuzz_string(data + 1, size - 1);
    if (crm_etag_matches(header, version))
        FUZZ_CHECK(strchr(header, '*') != NULL || strstr(header, tag) != NULL);
    free(header);
    return 0;
}
