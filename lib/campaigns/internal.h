/*
 * campaigns/internal.h — what the parts of lib/campaigns share.
 */
#ifndef CRM_CAMPAIGNS_INTERNAL_H
#define CRM_CAMPAIGNS_INTERNAL_H

#include <jansson.h>

#include "db.h"
#include "error.h"

/* Keeps campaign id as it now stands (in the caller's transaction on c) as
 * its version, with the key that made it, and returns its representation
 * (the caller owns it); NULL with err. */
json_t *campaign_keep_version(crm_conn *c, long long id, long long api_key_id, crm_error *err);

#endif
