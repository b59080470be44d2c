/*
 * currency.h — the ISO 4217 currency codes crmd knows: those an amount may
 * carry (touchpoints) and the rate table may convert (metrics).
 *
 * One list for both, so that a rate can be set for every currency a
 * purchase can be in and for no other. It is ISO 4217's List One (the SIX
 * maintenance agency's table of current codes) restricted to currencies in
 * circulation: no fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW),
 * precious metals (XAG, XAU, XPD, XPT), SDR and other units (XDR, XSU, XUA,
 * XBA..XBD) or test codes (XTS, XXX); as amended to 2025: VED, ZWG and XCG
 * in; HRK, CUC, SLL and ZWL, replaced, out; ANG kept beside its successor
 * XCG for the purchases made before the change.
 */
#ifndef CRM_CURRENCY_H
#define CRM_CURRENCY_H

#include <stdbool.h>
#include <stddef.h>

/* The codes, sorted by strcmp, NULL-terminated. */
extern const char *const crm_currency_codes[];

/* How many codes crm_currency_codes holds (without the NULL). */
extern const size_t crm_currency_count;

/* True when code is one of crm_currency_codes (exactly: uppercase, three
 * letters, NUL-terminated). A binary search; NULL is false. */
bool crm_currency_known(const char *code);

#endif
