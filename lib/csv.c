/*
 * csv.c — RFC 4180 fields with the formula guard (see csv.h).
 */
#include "csv.h"

#include <string.h>

/* Only digits, spaces and + - ( ) . : a number or a phone number. */
static bool plain_number(const char *s)
{
    for (; *s != '\0'; s++)
        if (strchr("0123456789 +-().", *s) == NULL)
            return false;
    return true;
}

bool crm_csv_needs_guard(const char *value)
{
    if (value == NULL || value[0] == '\0' || strchr("=+-@\t\r", value[0]) == NULL)
        return false;
    return !plain_number(value);
}

void crm_csv_field(FILE *out, const char *value, bool first, bool guard)
{
    if (!first)
        fputc(',', out);
    if (value == NULL)
        return;
    bool quote = strpbrk(value, ",\"\r\n") != NULL;
    if (quote)
        fputc('"', out);
    if (guard && crm_csv_needs_guard(value))
        fputc('\'', out);
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '"')
            fputc('"', out);
        fputc(*p, out);
    }
    if (quote)
        fputc('"', out);
}

void crm_csv_end_record(FILE *out)
{
    fputs("\r\n", out);
}
