/*
 * segments/reads.c — what a parsed rule depends on, for the segments that
 * keep their memberships as writes happen (lib/segments.h): the kinds of
 * data it reads (so a write refreshes only the segments it can change), the
 * segments it names (kept first, and checked for cycles) and whether time
 * alone can change its value (so flips are scheduled). Walks of the tree,
 * no allocation.
 */
#include "segments/internal.h"

static unsigned node_reads(const rule_node *n)
{
    unsigned bits = 0;
    switch (n->kind) {
    case NODE_ALL:
    case NODE_ANY:
    case NODE_NOT:
        for (int i = 0; i < n->nchildren; i++)
            bits |= node_reads(n->children[i]);
        return bits;
    case NODE_FIELD:
        switch (n->field->source) {
        case SRC_CUSTOMER:
        case SRC_ATTRIBUTES:
            return CRM_RULE_READS_CUSTOMER;
        case SRC_CONSENT:
            return CRM_RULE_READS_CONSENT;
        case SRC_METRICS:
            return CRM_RULE_READS_METRICS;
        }
        return 0;
    case NODE_TOUCHPOINTS:
        return CRM_RULE_READS_TOUCHPOINTS;
    case NODE_SEGMENT:
        return CRM_RULE_READS_SEGMENTS;
    }
    return 0;
}

unsigned crm_rule_reads(const crm_rule *r)
{
    return node_reads(r->root);
}

/* The segment nodes under n, in the order they appear in the rule (a node
 * before its children, children in order), into found (at most
 * CRM_RULE_MAX_NODES, which no rule exceeds). */
static void collect_segments(const rule_node *n, const rule_node **found, int *nfound)
{
    if (n->kind == NODE_SEGMENT) {
        if (*nfound < CRM_RULE_MAX_NODES)
            found[(*nfound)++] = n;
        return;
    }
    for (int i = 0; i < n->nchildren; i++)
        collect_segments(n->children[i], found, nfound);
}

int crm_rule_segment_refs(const crm_rule *r, long long *ids, const char **pointers, int max)
{
    const rule_node *found[CRM_RULE_MAX_NODES];
    int nfound = 0, distinct = 0;
    collect_segments(r->root, found, &nfound);
    for (int i = 0; i < nfound; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = found[j]->segment_id == found[i]->segment_id;
        if (seen)
            continue;
        if (distinct < max) {
            ids[distinct] = found[i]->segment_id;
            if (pointers != NULL)
                pointers[distinct] = found[i]->pointer;
        }
        distinct++;
    }
    return distinct;
}

static bool node_has_time(const rule_node *n)
{
    switch (n->kind) {
    case NODE_ALL:
    case NODE_ANY:
    case NODE_NOT:
        for (int i = 0; i < n->nchildren; i++)
            if (node_has_time(n->children[i]))
                return true;
        return false;
    case NODE_TOUCHPOINTS:
        if (n->within_days > 0)
            return true;
        break;
    case NODE_FIELD:
        break;
    case NODE_SEGMENT:
        /* a change of the named segment's membership is a write */
        return false;
    }
    for (int i = 0; i < n->nvalues; i++)
        if (n->values[i].kind == VAL_DAYS_AGO)
            return true;
    return false;
}

bool crm_rule_has_time(const crm_rule *r)
{
    return node_has_time(r->root);
}

static bool node_counts(const rule_node *n, const rule_touchpoint *tp, long long now_ms)
{
    if (n->kind == NODE_TOUCHPOINTS)
        return rule_touchpoint_matches(n, tp, now_ms);
    for (int i = 0; i < n->nchildren; i++)
        if (node_counts(n->children[i], tp, now_ms))
            return true;
    return false;
}

bool crm_rule_touchpoint_counts(const crm_rule *r, const crm_rule_touchpoint_facts *t,
                                long long now_ms)
{
    rule_touchpoint tp = {.type = t->type ? t->type : "",
                          .channel = t->channel ? t->channel : "",
                          .campaign_id = t->campaign_id,
                          .offer_code = t->offer_code,
                          .skus = t->skus,
                          .nskus = t->nskus,
                          .occurred_us = t->occurred_us};
    return node_counts(r->root, &tp, now_ms);
}
