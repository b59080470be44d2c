/* TEMPORARY until h-flips merges: removed at its merge. */
#include "segments/internal.h"
bool crm_rule_flip_sql(const crm_rule *r, crm_sqlbuf *s, long long now_ms, crm_arena *a, crm_error *err) { (void)r; (void)now_ms; (void)a; (void)err; crm_sqlbuf_append(s, "NULL::timestamptz"); return true; }
long long crm_rule_next_flip(const crm_rule *r, const crm_rule_state *st, long long now_ms) { (void)r; (void)st; (void)now_ms; return 0; }
