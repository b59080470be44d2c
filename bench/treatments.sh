# bench/treatments.sh — the treatments' measurements, sourced by bench/run
# (BENCH_ONLY matching "treatments"):
#   - 20 live segments (those of bench/segments.sh) and 100 active treatment
#     rules made through the API: conditions on customer fields, consent,
#     metrics, touchpoint aggregates and membership of those segments, each
#     with an action, channels, a value and a priority, a fifth with an
#     entitlement; and contact policies: caps on marketing e-mail and SMS,
#     a global cap, and quiet hours;
#   - GET /v1/customers/{id}/treatments?limit=3 with wrk beside GET
#     /v1/customers/{id} in the same run (the issue's targets: p99 under
#     5 ms, at least 0.5 of the plain read), and the server's own time of
#     one evaluation (timing.evaluate_us, and load_us, over 500 answers:
#     median and p99; target under 1 ms);
#   - the ceilings: each of the two reads' one statement alone with pgbench
#     (bench/pgbench/customer_get.sql and customer_treatments.sql, the
#     latter checked against the text crmd sent);
#   - POST /v1/customers/{id}/contacts (a marketing e-mail for customers who
#     granted it, the caps active) beside POST /v1/touchpoints of the same
#     outbound e-mail (target: at least 0.7 of it), in two rounds that
#     alternate, each after the metrics' follower and the segments' upkeep
#     have caught up with the writes before it (their work would otherwise
#     land on the next route measured); a decision a cap refuses answers
#     409, counted apart from errors.

TREATMENT_ROW="GET /v1/customers/{id}/treatments|/v1/customers/{customer_id}/treatments|customer_treatments.lua|key|customer_treatments.sql|p99_ms<5"
TREATMENT_BASE_ROW="GET /v1/customers/{id} (beside treatments)|/v1/customers/{customer_id}|customer_get.lua|key|customer_get.sql|-"
CONTACT_ROW="POST /v1/customers/{id}/contacts|/v1/customers/{customer_id}/contacts|contact.lua|key|-|-"
TOUCHPOINT_ONE_ROW="POST /v1/touchpoints (one outbound e-mail)|/v1/touchpoints/{customer_id}|touchpoint_one.lua|key|-|-"

# post_json PATH BODY: POST with the admin key; prints the answer, dies
# unless it is 2xx.
post_json() {
    curl -fsS -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        --data "$2" "http://$LISTEN$1" || die "POST $1 failed: $2"
}

# treatment_rule N SEGMENT_IDS...: the N-th of the 100 rules.
treatment_rule() {
    local n=$1; shift
    local segs=("$@") countries=(IT DE FR ES GB NL US CH AT BE) channels cond
    local c=${countries[n % 10]} s=${segs[n % ${#segs[@]}]}
    case $((n % 5)) in
    0) cond=$(printf '{"all": [{"field": "address.country", "op": "eq", "value": "%s"}, {"field": "consent.email.marketing", "op": "eq", "value": "granted"}]}' "$c") ;;
    1) cond=$(printf '{"segment": %s}' "$s") ;;
    2) cond=$(printf '{"field": "metrics.churn_risk", "op": "gte", "value": %s}' "0.$((n % 9 + 1))") ;;
    3) cond=$(printf '{"touchpoints": {"type": "purchase", "within_days": %d}, "agg": "count", "op": "gte", "value": %d}' $((30 + n * 3)) $((1 + n % 3))) ;;
    4) cond=$(printf '{"any": [{"field": "tags", "op": "contains", "value": "vip"}, {"segment": %s}, {"field": "address.country", "op": "eq", "value": "%s"}]}' "$s" "$c") ;;
    esac
    case $((n % 3)) in
    0) channels='["email", "sms"]' ;;
    1) channels='["sms"]' ;;
    2) channels='["email"]' ;;
    esac
    printf '{"name": "bench rule %d", "condition": %s, "treatment": {"action": {"code": "act-%d", "text": "Offer %d"}, "offer_code": "OFF-%d", %s"channels": %s, "purpose": "marketing", "value": %d, "priority": %d}, "position": %d}' \
        "$n" "$cond" "$n" "$n" "$n" "$([ $((n % 5)) -eq 0 ] && printf '"entitlement_code": "ENT-%d", ' "$n")" \
        "$channels" $((10 + (n * 37) % 90)) $((n % 7)) "$n"
}

# percentiles FILE: the median and p99 of the numbers of FILE, one a line.
percentiles() {
    sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR > 0) printf "%s %s", v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1] }'
}

# sample_timing: 500 answers of the treatments route for random customers;
# TREATMENT_EVAL_US and TREATMENT_LOAD_US get "median p99".
sample_timing() {
    local i id body
    : >"$OUT/treatments-eval.txt"
    : >"$OUT/treatments-load.txt"
    for i in $(seq 1 500); do
        id=$((CUSTOMER_FIRST + (RANDOM * 32768 + RANDOM) % (CUSTOMER_LAST - CUSTOMER_FIRST + 1)))
        body=$(curl -fsS -H "Authorization: Bearer $ADMIN_KEY" \
            "http://$LISTEN/v1/customers/$id/treatments?limit=3") || die "GET treatments of $id failed"
        sed -n 's/.*"evaluate_us": *\([0-9]*\).*/\1/p' <<<"$body" >>"$OUT/treatments-eval.txt"
        sed -n 's/.*"load_us": *\([0-9]*\).*/\1/p' <<<"$body" >>"$OUT/treatments-load.txt"
    done
    TREATMENT_EVAL_US=$(percentiles "$OUT/treatments-eval.txt")
    TREATMENT_LOAD_US=$(percentiles "$OUT/treatments-load.txt")
}

# check_treatments_sql: the statement of one GET .../treatments, as crmd
# sent it, must be the runtime pgbench script's.
check_treatments_sql() {
    local log_from sql=$OUT/treatments-statements.txt
    log_from=$(($(as_pg_user stat -c %s "$PG_LOG") + 1))
    set_statement_log all
    sleep 0.5
    curl -fsS -o /dev/null -H "Authorization: Bearer $ADMIN_KEY" \
        "http://$LISTEN/v1/customers/$CUSTOMER_FIRST/treatments?limit=3" || die "GET treatments failed"
    set_statement_log none
    as_pg_user tail -c "+$log_from" "$PG_LOG" |
        sed -n 's/.* LOG:  execute treatments_everything: //p' | sort -u >"$sql"
    pgbench_sql "$BENCH/pgbench/customer_treatments.sql" | grep -qxF -f "$sql" ||
        die "bench/pgbench/customer_treatments.sql does not match the SQL crmd ran (see $sql)"
}

# settle_writes: waits until the metrics' follower has taken in every
# touchpoint written so far and the segments' upkeep has no batch queued.
settle_writes() {
    local last start=$SECONDS
    last=$(pg_psql "$PG_NAME" "$DB" -c "SELECT change_xid || ',' || change_seq FROM touchpoints
            ORDER BY change_xid DESC, change_seq DESC LIMIT 1")
    until [ "$(pg_psql "$PG_NAME" "$DB" -c "SELECT (tp_xid, tp_seq) > ('${last%,*}'::xid8, ${last#*,})
            AND NOT EXISTS (SELECT FROM segment_pending) FROM metrics_follow")" = t ]; do
        [ $((SECONDS - start)) -lt 300 ] || die "the follower did not catch up in 300 s"
        sleep 0.2
    done
}

treatments_cleanup() {
    pg_psql "$PG_NAME" "$DB" -c "DELETE FROM contacts"
    pg_psql "$PG_NAME" "$DB" -c "DELETE FROM touchpoints WHERE source IN ('bench-one', 'bench-contact')"
    pg_psql "$PG_NAME" "$DB" -c "UPDATE contact_policies SET deleted_at = now() WHERE deleted_at IS NULL"
    pg_psql "$PG_NAME" "$DB" -c "UPDATE treatment_rules SET deleted_at = now() WHERE deleted_at IS NULL"
    pg_psql "$PG_NAME" "$DB" -c "UPDATE treatment_config SET stamp = stamp + 1"
    pg_psql "$PG_NAME" "$DB" -c "DELETE FROM segments"
}

measure_treatments() {
    local segs=() i
    local rows
    rows=$(pg_psql "$PG_NAME" "$DB" -c "SELECT count(*) FROM customer_metrics")
    if [ "$rows" -eq 0 ]; then
        log "treatments: no customer has metrics yet: recomputing first"
        run_recompute
    fi
    wait_for_jobs_idle
    treatments_cleanup
    log "treatments: 20 live segments, 100 treatment rules, 4 contact policies"
    for i in $(seq 0 19); do
        segs+=("$(create_segment "bench live $i" "$(live_rule "$i")")")
    done
    for i in "${segs[@]}"; do wait_segment_built "$i"; done
    for i in $(seq 0 99); do
        post_json /v1/treatment-rules "$(treatment_rule "$i" "${segs[@]}")" >/dev/null
    done
    post_json /v1/contact-policies '{"name": "bench e-mail", "channel": "email", "purpose": "marketing", "cap": {"max_contacts": 3, "period_hours": 168}}' >/dev/null
    post_json /v1/contact-policies '{"name": "bench sms", "channel": "sms", "cap": {"max_contacts": 1, "period_hours": 24}}' >/dev/null
    post_json /v1/contact-policies '{"name": "bench all", "cap": {"max_contacts": 10, "period_hours": 720}}' >/dev/null
    post_json /v1/contact-policies '{"name": "bench night", "quiet_hours": {"from": "03:00", "until": "03:05", "time_zone": "Pacific/Kiritimati"}}' >/dev/null
    # The log of decisions as a server in service has one (100,000 refusals
    # of 40 days ago, outside every cap's period), its statistics current:
    # crmd's statements are planned once per connection, and a plan made
    # over the empty table would scan it whole as the measurement fills it.
    pg_psql "$PG_NAME" "$DB" -c "INSERT INTO contacts (customer_id, channel, purpose, source,
        event_id, allowed, decided_at) SELECT id, 'email', 'marketing', 'bench-seed', 'seed-' || id,
        false, now() - interval '40 days' FROM customers WHERE id % 10 = 0" -c "VACUUM (ANALYZE) contacts"
    wait_for_jobs_idle
    check_treatments_sql
    measure_wrk "$TREATMENT_BASE_ROW"
    measure_wrk "$TREATMENT_ROW"
    sample_timing
    measure_pgbench "$TREATMENT_BASE_ROW"
    measure_pgbench "$TREATMENT_ROW"
    local round o=${TOUCHPOINT_ONE_ROW%%|*} c=${CONTACT_ROW%%|*}
    WRITE_ROUNDS=() WRITE_O=0 WRITE_C=0
    for round in 1 2; do
        settle_writes
        measure_wrk "$TOUCHPOINT_ONE_ROW"
        settle_writes
        measure_wrk "$CONTACT_ROW"
        WRITE_ROUNDS+=("${RPS[$c]}/${RPS[$o]}")
        WRITE_O=$(awk -v a="$WRITE_O" -v b="${RPS[$o]}" 'BEGIN { print a + b }')
        WRITE_C=$(awk -v a="$WRITE_C" -v b="${RPS[$c]}" 'BEGIN { print a + b }')
    done
    CONTACT_ALLOWED=$(pg_psql "$PG_NAME" "$DB" -c "SELECT count(*) FILTER (WHERE allowed) || ' allowed, ' || count(*) FILTER (WHERE NOT allowed) || ' refused' FROM contacts WHERE source = 'bench-contact'")
    treatments_cleanup
}

print_treatments_report() {
    local t=${TREATMENT_ROW%%|*} b=${TREATMENT_BASE_ROW%%|*} c=${CONTACT_ROW%%|*} o=${TOUCHPOINT_ONE_ROW%%|*}
    local w=${#o} label
    printf '\ntreatments (%s customers, 100 rules, 20 segments, 4 contact policies):\n' "$CUSTOMERS"
    printf "  %-${w}s %10s %8s %8s %7s\n" route req/s 'p50 ms' 'p99 ms' errors
    for label in "$b" "$t" "$o" "$c"; do
        printf "  %-${w}s %10s %8s %8s %7s\n" "$label" "${RPS[$label]}" "${P50[$label]}" \
            "${P99[$label]}" "${ERRS[$label]}"
    done
    printf '  treatments vs the plain read: %s (target >= 0.5: %s); p99 %s ms (target < 5: %s)\n' \
        "$(ratio "${RPS[$t]}" "${RPS[$b]}")" \
        "$(awk -v r="$(ratio "${RPS[$t]}" "${RPS[$b]}")" 'BEGIN { print (r + 0 >= 0.5) ? "met" : "NOT met" }')" \
        "${P99[$t]}" "$(awk -v p="${P99[$t]}" 'BEGIN { print (p + 0 < 5) ? "met" : "NOT met" }')"
    printf '  server time of one answer, median and p99 over 500: evaluation %s us (target < 1000: %s), loading %s us\n' \
        "$TREATMENT_EVAL_US" \
        "$(awk -v p="${TREATMENT_EVAL_US#* }" 'BEGIN { print (p + 0 < 1000) ? "met" : "NOT met" }')" \
        "$TREATMENT_LOAD_US"
    printf '  the statements alone (pgbench, %s clients): the plain read %s tps, treatments %s tps (%s of it); the route vs its statement: %s\n' \
        "$CONNECTIONS" "${TPS[$b]}" "${TPS[$t]}" "$(ratio "${TPS[$t]}" "${TPS[$b]}")" \
        "$(ratio "${RPS[$t]}" "${TPS[$t]}")"
    printf '  contacts vs one touchpoint, two alternating rounds (%s): %s (target >= 0.7: %s); decisions: %s (a 409 is a refusal, among the errors)\n' \
        "${WRITE_ROUNDS[*]}" "$(ratio "$WRITE_C" "$WRITE_O")" \
        "$(awk -v r="$(ratio "$WRITE_C" "$WRITE_O")" 'BEGIN { print (r + 0 >= 0.7) ? "met" : "NOT met" }')" \
        "$CONTACT_ALLOWED"
}
