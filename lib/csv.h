/*
 * csv.h — writing CSV (RFC 4180) for exports that spreadsheets may open.
 *
 * A field that holds a comma, a double quote, CR or LF is quoted, its
 * quotes doubled; records end with CRLF; text is written as it is (UTF-8).
 * A text field from a customer's record may also be guarded against CSV
 * formula injection (OWASP): when it begins with =, +, -, @, tab or CR, a
 * spreadsheet would run it as a formula, so it gets a leading single quote
 * ("=1+1" is written '=1+1). A field made only of digits, spaces and
 * + - ( ) . is left alone: it can name no function, cell or command, and a
 * phone number ("+39 333 1234567") must reach a delivery system as it is.
 */
#ifndef CRM_CSV_H
#define CRM_CSV_H

#include <stdbool.h>
#include <stdio.h>

/* Writes one field (NULL: an empty one) to out, preceded by a comma unless
 * first; guard: the formula guard above. Errors show in ferror(out). */
void crm_csv_field(FILE *out, const char *value, bool first, bool guard);

/* Ends a record (CRLF). */
void crm_csv_end_record(FILE *out);

/* True when value would get the formula guard's leading quote. */
bool crm_csv_needs_guard(const char *value);

#endif
