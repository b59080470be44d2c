/*
 * fuzz_percent_decode.c — router_percent_decode, which decodes every path
 * segment and query value a client sends.
 *
 * Properties: the output equals that of a plain reference decoder written
 * here; decoding refuses only what the reference turns into a NUL byte or
 * into bytes that are not UTF-8 (crmd may refuse invalid UTF-8 at this
 * point, since PostgreSQL refuses it later); and percent-encoding any byte
 * string and decoding it gives the same bytes back (or a refusal, only when
 * they are not UTF-8), with '+' read as a space in query mode.
 */
#include "fuzz.h"

#include "router.h"

#include <stdbool.h>

static int hexdigit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The reference: "%XY" with two hex digits is a byte, anything else is
 * itself ('+' a space in query mode). Returns the length written to out. */
static size_t reference_decode(const uint8_t *src, size_t len, bool plus_is_space, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '%' && len - i >= 3 && hexdigit(src[i + 1]) >= 0 &&
            hexdigit(src[i + 2]) >= 0) {
            out[o++] = (char)(hexdigit(src[i + 1]) * 16 + hexdigit(src[i + 2]));
            i += 2;
        } else {
            out[o++] = plus_is_space && src[i] == '+' ? ' ' : (char)src[i];
        }
    }
    return o;
}

static void decode_raw(const uint8_t *data, size_t size, bool plus_is_space)
{
    char *want = malloc(size + 1);
    FUZZ_CHECK(want != NULL);
    size_t n = reference_decode(data, size, plus_is_space, want);
    crm_arena arena;
    crm_arena_init(&arena);
    char *out = router_percent_decode(&arena, (const char *)data, size, plus_is_space);
    if (out != NULL) {
        FUZZ_CHECK(memchr(want, '\0', n) == NULL);
        FUZZ_CHECK(strlen(out) == n && memcmp(out, want, n) == 0);
    } else {
        FUZZ_CHECK(memchr(want, '\0', n) != NULL || !fuzz_utf8_valid((unsigned char *)want, n));
    }
    crm_arena_free(&arena);
    free(want);
}

static void encode_then_decode(const uint8_t *data, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strnlen((const char *)data, size); /* up to the first NUL */
    char *enc = malloc(n * 3 + 1);
    FUZZ_CHECK(enc != NULL);
    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = data[i];
        if (c == ' ') {
            enc[e++] = '+'; /* the query-string form of a space */
        } else {
            enc[e++] = '%';
            enc[e++] = hex[c >> 4];
            enc[e++] = hex[c & 15];
        }
    }
    crm_arena arena;
    crm_arena_init(&arena);
    char *out = router_percent_decode(&arena, enc, e, true);
    if (fuzz_utf8_valid(data, n))
        FUZZ_CHECK(out != NULL);
    if (out != NULL)
        FUZZ_CHECK(strlen(out) == n && memcmp(out, data, n) == 0);
    crm_arena_free(&arena);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* crmd decodes C strings (from MHD): the input ends at its first NUL. */
    size = strnlen((const char *)data, size);
    decode_raw(data, size, false);
    decode_raw(data, size, true);
    encode_then_decode(data, size);
    return 0;
}
