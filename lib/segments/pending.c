/* TEMPORARY until h-segref and h-flips merge: removed at their merge. */
#include "segments/internal.h"
unsigned crm_rule_reads(const crm_rule *r) { (void)r; return 0xfu; }
int crm_rule_segment_refs(const crm_rule *r, long long *ids, const char **p, int max) { (void)r; (void)ids; (void)p; (void)max; return 0; }
bool crm_rule_has_time(const crm_rule *r) { (void)r; return false; }
bool crm_rule_flip_sql(const crm_rule *r, crm_sqlbuf *s, long long now_ms, crm_arena *a, crm_error *err) { (void)r; (void)now_ms; (void)a; (void)err; crm_sqlbuf_append(s, "NULL::timestamptz"); return true; }
long long crm_rule_next_flip(const crm_rule *r, const crm_rule_state *st, long long now_ms) { (void)r; (void)st; (void)now_ms; return 0; }
