/*
 * fuzz_cursor.c — the cursor codec (lib/list/cursor.h) under arbitrary
 * bytes: decoding anything must never crash or read out of bounds, and
 * every cursor the encoder makes must decode to exactly its fields.
 *
 * The first byte picks what to do: decode the rest as a client's string
 * (with each list's expectations), or build a cursor from the rest and
 * check the round trip, or both on a tampered copy.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "list/cursor.h"

static void set_key_once(void)
{
    static int done;
    if (!done) {
        unsigned char key[CRM_CURSOR_SECRET_BYTES];
        memset(key, 0x5a, sizeof key);
        crm_cursor_secret_set(key);
        done = 1;
    }
}

/* Decodes text with every expectation a list has: none may crash. */
static void decode_all(const char *text)
{
    crm_cursor out;
    for (unsigned kind = 0; kind <= CRM_CURSOR_CUSTOMER_SEARCH; kind++)
        for (int nints = 0; nints <= 4; nints++)
            for (int with_text = 0; with_text < 2; with_text++)
                if (crm_cursor_decode(text, (crm_cursor_kind)kind, kind % 2, nints, with_text,
                                      &out) &&
                    (out.nints != nints || out.has_text != (with_text != 0) ||
                     strlen(out.text) != out.text_len))
                    __builtin_trap();
}

/* Builds a cursor from data, encodes it, and checks that it decodes to
 * the same fields, and that a one-byte change of it does not. */
static void round_trip(const uint8_t *data, size_t size)
{
    if (size < 3)
        return;
    crm_cursor c;
    crm_cursor_init(&c, (crm_cursor_kind)(1 + data[0] % 4), data[1]);
    int nints = data[2] % (CRM_CURSOR_MAX_INTS + 1);
    bool with_text = (data[2] & 0x80) != 0;
    size_t at = 3;
    for (int i = 0; i < nints; i++) {
        uint64_t v = 0;
        for (int b = 0; b < 8; b++)
            v = v << 8 | (at < size ? data[at++] : 0);
        crm_cursor_add_int(&c, (long long)v);
    }
    if (with_text) {
        size_t len = size - at;
        if (len > CRM_CURSOR_MAX_TEXT)
            len = CRM_CURSOR_MAX_TEXT;
        if (memchr(data + at, '\0', len) != NULL || !crm_cursor_set_text(&c, (const char *)data + at, len))
            with_text = false;
    }
    char *text = crm_cursor_encode(&c, NULL);
    if (text == NULL)
        __builtin_trap();
    crm_cursor out;
    if (!crm_cursor_decode(text, c.kind, c.order, c.nints, c.has_text, &out) ||
        out.nints != c.nints || memcmp(out.ints, c.ints, sizeof(long long) * (size_t)c.nints) != 0 ||
        out.has_text != c.has_text || out.text_len != c.text_len ||
        memcmp(out.text, c.text, c.text_len) != 0)
        __builtin_trap();
    /* Any change of one character is refused (or decodes to the same). */
    size_t len = strlen(text);
    size_t i = (size_t)data[1] % len;
    text[i] = text[i] == 'A' ? 'B' : 'A';
    if (crm_cursor_decode(text, c.kind, c.order, c.nints, c.has_text, &out) &&
        (out.nints != c.nints || memcmp(out.ints, c.ints, sizeof(long long) * (size_t)c.nints) != 0))
        __builtin_trap();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    set_key_once();
    if (size == 0)
        return 0;
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 1)
        decode_all(text);
    else
        round_trip(data + 1, size - 1);
    free(text);
    return 0;
}
