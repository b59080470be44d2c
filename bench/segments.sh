# bench/segments.sh — the segments' measurements, sourced by bench/run
# (BENCH_ONLY matching "segments"):
#   - a segment of three conditions (one a touchpoint aggregate) created from
#     nothing: its build job (queued to succeeded, as crmd records it) beside
#     the count of its compiled SQL alone (crmd rule-sql), warm, median of 3;
#   - GET /v1/segments/{id}/count with wrk (the kept count: a point read);
#   - batch ingest (POST /v1/touchpoints/batch) with no segment, then with 20
#     live segments that read touchpoints and customers, then with none
#     again: the ratio of the with-segments rate to the mean of the two
#     without. A batch queues its touchpoints for the segments' upkeep,
#     which judges them beside the ingest; after the ingest with segments:
#     how long until the upkeep has judged the last batch (the queue is
#     empty), the rate counted over the ingest and that wait together (the
#     sustained rate, all memberships current at its end), and the customers
#     the ingest touched whose membership then differs from what the rules
#     give (0: every membership a batch changed is current).

SEGMENT_RULE='{"all": [{"field": "address.country", "op": "eq", "value": "IT"}, {"field": "metrics.churn_risk", "op": "gte", "value": 0.6}, {"touchpoints": {"type": "purchase", "within_days": 90}, "agg": "count", "op": "gte", "value": 1}]}'

# rule_count_sql RULE: a psql script counting the active customers that RULE
# holds for, as a segment build evaluates it; the parameters become psql
# variables (-v), which psql quotes as literals: prints the -v arguments on
# the first line (NUL-separated is not needed: bench rules hold no newline)
# and writes the script to $OUT/rule.sql.
rule_count_sql() {
    local lines expr i
    mapfile -t lines < <(printf '%s' "$1" | "$CRMD" rule-sql) || die "crmd rule-sql failed"
    [ "${#lines[@]}" -ge 1 ] || die "crmd rule-sql printed nothing"
    expr=$(sed -E "s/\\\$([0-9]+)/:'p\\1'/g" <<<"${lines[0]}")
    RULE_VARS=()
    for ((i = 1; i < ${#lines[@]}; i++)); do
        RULE_VARS+=(-v "p$i=${lines[i]}")
    done
    printf '%s\n' "SELECT count(*) FROM customers c WHERE c.status = 'active' AND ($expr);" \
        >"$OUT/rule.sql"
}

# time_rule_count: runs $OUT/rule.sql once to warm up and three times timed;
# SEGMENT_SQL_S gets the median, SEGMENT_SQL_COUNT the count.
time_rule_count() {
    local times=() start ns i
    for i in 0 1 2 3; do
        start=$(date +%s%N)
        SEGMENT_SQL_COUNT=$(pg_psql "$PG_NAME" "$DB" "${RULE_VARS[@]}" -f - <"$OUT/rule.sql")
        ns=$(($(date +%s%N) - start))
        [ "$i" -eq 0 ] || times+=("$ns")
    done
    ns=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
    SEGMENT_SQL_S=$(awk -v ns="$ns" 'BEGIN { printf "%.2f", ns / 1e9 }')
}

# create_segment NAME RULE: POST /v1/segments; prints the segment's id and
# leaves its build job's Location in $OUT/segment.headers.
create_segment() {
    local body
    body=$(printf '{"name": "%s", "rule": %s}' "$1" "$2")
    curl -fsS -o "$OUT/segment.json" -D "$OUT/segment.headers" -X POST \
        -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        --data "$body" "http://$LISTEN/v1/segments" || die "POST /v1/segments failed"
    sed -n 's/^{"id": *\([0-9]*\).*/\1/p; s/.*"id":\([0-9]*\),.*/\1/p' "$OUT/segment.json" | head -n 1
}

# wait_segment_built ID: waits for the segment's build job to end (polled
# every half second, like the recompute); SEGMENT_BUILD_S gets the job's own
# time from creation to end.
wait_segment_built() {
    local job state body=$OUT/segment-job.json
    job=$(pg_psql "$PG_NAME" "$DB" -c "SELECT build_job_id FROM segments WHERE id = $1")
    [ -n "$job" ] || die "segment $1 has no build job"
    while :; do
        curl -fsS -o "$body" -H "Authorization: Bearer $ADMIN_KEY" "http://$LISTEN/v1/jobs/$job" ||
            die "GET /v1/jobs/$job failed"
        state=$(sed -n 's/.*"state": *"\([a-z]*\)".*/\1/p' "$body")
        case $state in queued | running) sleep 0.5 ;; *) break ;; esac
    done
    [ "$state" = succeeded ] || die "the build of segment $1 ended $state (see $body)"
    SEGMENT_BUILD_S=$(pg_psql "$PG_NAME" "$DB" -c "SELECT round(extract(epoch FROM finished_at - created_at)::numeric, 2) FROM jobs WHERE id = $job")
}

# live_rule N: the rule of the N-th of the 20 live segments: each reads
# touchpoints (a count, a sum or the latest time over a window) and a
# customer column, so that every batch refreshes all of them.
live_rule() {
    local n=$1 countries=(IT DE FR ES GB NL US CH AT BE) types=(purchase visit email_opened page_view call)
    local c=${countries[n % 10]} t=${types[n % 5]}
    case $((n % 4)) in
    0) printf '{"all": [{"field": "address.country", "op": "eq", "value": "%s"}, {"touchpoints": {"type": "%s", "within_days": %d}, "agg": "count", "op": "gte", "value": %d}]}' "$c" "$t" $((30 + n * 5)) $((1 + n % 3)) ;;
    1) printf '{"all": [{"field": "tags", "op": "contains", "value": "vip"}, {"touchpoints": {"type": "purchase"}, "agg": "sum", "op": "gte", "value": %d}]}' $((50 * n)) ;;
    2) printf '{"any": [{"field": "address.country", "op": "eq", "value": "%s"}, {"touchpoints": {"channel": "web", "type": "%s", "within_days": 60}, "agg": "last", "op": "gte", "value": {"days_ago": 30}}]}' "$c" "$t" ;;
    3) printf '{"not": {"touchpoints": {"type": "%s", "within_days": %d}, "agg": "count", "op": "eq", "value": 0}}' "$t" $((10 + n)) ;;
    esac
}

# segment_ingest_round LABEL: one wrk run of batch ingest; prints events/s.
segment_ingest_round() {
    local f=$OUT/segments-ingest-$1.wrk.txt
    log "segments: batch ingest, $1, $SENDERS senders of 1,000 events"
    wrk -c "$SENDERS" -t "$(( SENDERS < THREADS ? SENDERS : THREADS ))" -d "${SECONDS_EACH}s" \
        --timeout 60s -H "Authorization: Bearer $ADMIN_KEY" -s "$BENCH/wrk/touchpoint_batch.lua" \
        "http://$LISTEN/" -- "$CUSTOMER_FIRST" "$CUSTOMER_LAST" "$(date +%s)-seg-$1" >"$f" 2>&1 ||
        die "wrk failed on the batch ingest (see $f)"
    SEGMENT_INGEST_ERRS=$((SEGMENT_INGEST_ERRS + $(field non2xx "$f") + $(field socket_errors "$f")))
    awk -v r="$(field rps "$f")" 'BEGIN { printf "%.0f", r * 1000 }'
}

# ingest_cleanup: the rounds' touchpoints go (the segments that read them
# are rebuilt by whoever measures next; here they are deleted first).
ingest_cleanup() {
    pg_psql "$PG_NAME" "$DB" -c "DELETE FROM touchpoints WHERE source = 'bench-batch'"
    pg_psql "$PG_NAME" "$DB" -c "VACUUM (ANALYZE) touchpoints"
}

# stale_memberships IDS...: how many of the customers the last ingest
# touched stand differently in a segment than its rule gives now.
stale_memberships() {
    local id rule total=0 n
    for id in "$@"; do
        rule=$(pg_psql "$PG_NAME" "$DB" -c "SELECT rule::text FROM segments WHERE id = $id")
        rule_count_sql "$rule"
        sed -i "s/^SELECT count(\*) FROM customers c WHERE c.status = 'active' AND (\(.*\));\$/SELECT count(*) FROM customers c WHERE c.id IN (SELECT DISTINCT customer_id FROM touchpoints WHERE source = 'bench-batch') AND (c.status = 'active' AND (\1)) IS DISTINCT FROM EXISTS (SELECT 1 FROM segment_memberships m WHERE m.segment_id = $id AND m.customer_id = c.id);/" "$OUT/rule.sql"
        n=$(pg_psql "$PG_NAME" "$DB" "${RULE_VARS[@]}" -f - <"$OUT/rule.sql")
        total=$((total + n))
    done
    echo "$total"
}

# wait_queue_empty: SEGMENT_LAG_S gets the seconds until no batch is left
# for the segments' upkeep to judge (polled every 50 ms).
wait_queue_empty() {
    local start n
    start=$(date +%s%N)
    while :; do
        n=$(pg_psql "$PG_NAME" "$DB" -c "SELECT count(*) FROM segment_pending")
        [ "$n" -eq 0 ] && break
        sleep 0.05
    done
    SEGMENT_LAG_S=$(awk -v ns="$(($(date +%s%N) - start))" 'BEGIN { printf "%.2f", ns / 1e9 }')
}

measure_segments() {
    local rows seg ids=() i none1 none2 with
    rows=$(pg_psql "$PG_NAME" "$DB" -c "SELECT count(*) FROM customer_metrics")
    if [ "$rows" -eq 0 ]; then
        log "segments: no customer has metrics yet: recomputing first"
        run_recompute
    fi
    wait_for_jobs_idle
    pg_psql "$PG_NAME" "$DB" -c "DELETE FROM segments"
    log "segments: the rule's SQL alone, once to warm up and three times timed"
    rule_count_sql "$SEGMENT_RULE"
    time_rule_count
    log "segments: POST /v1/segments with the same rule"
    seg=$(create_segment "bench three conditions" "$SEGMENT_RULE")
    [ -n "$seg" ] || die "no segment id in $OUT/segment.json"
    wait_segment_built "$seg"
    SEGMENT_FIRST_BUILD_S=$SEGMENT_BUILD_S
    SEGMENT_SIZE=$(curl -fsS -H "Authorization: Bearer $ADMIN_KEY" "http://$LISTEN/v1/segments/$seg/count" |
        sed -n 's/.*"count": *\([0-9]*\).*/\1/p')
    SEGMENT_COUNT_ROW="GET /v1/segments/{id}/count|/v1/segments/$seg/count|report.lua|key|-|p99_ms<5"
    measure_wrk "$SEGMENT_COUNT_ROW"
    SEGMENT_INGEST_ERRS=0
    none1=$(segment_ingest_round "no segments")
    ingest_cleanup
    log "segments: 20 live segments"
    for i in $(seq 0 19); do
        ids+=("$(create_segment "bench live $i" "$(live_rule "$i")")")
    done
    for i in "${ids[@]}"; do wait_segment_built "$i"; done
    wait_for_jobs_idle
    with=$(segment_ingest_round "20 live segments")
    wait_queue_empty
    SEGMENT_STALE=$(stale_memberships "${ids[@]}")
    ingest_cleanup
    pg_psql "$PG_NAME" "$DB" -c "DELETE FROM segments"
    none2=$(segment_ingest_round "no segments again")
    ingest_cleanup
    SEGMENT_INGEST_NONE="$none1, $none2"
    SEGMENT_INGEST_WITH=$with
    SEGMENT_INGEST_RATIO=$(awk -v w="$with" -v a="$none1" -v b="$none2" 'BEGIN { printf "%.2f", w / ((a + b) / 2) }')
    SEGMENT_INGEST_SUSTAINED=$(awk -v w="$with" -v d="$SECONDS_EACH" -v l="$SEGMENT_LAG_S" 'BEGIN { printf "%.0f", w * d / (d + l) }')
    SEGMENT_SUSTAINED_RATIO=$(awk -v w="$SEGMENT_INGEST_SUSTAINED" -v a="$none1" -v b="$none2" 'BEGIN { printf "%.2f", w / ((a + b) / 2) }')
}

print_segments_report() {
    local w=${#SEGMENT_COUNT_ROW} v label=${SEGMENT_COUNT_ROW%%|*}
    printf '\nsegments (%s customers, %s touchpoints):\n' "$CUSTOMERS" "$TOUCHPOINTS"
    printf '  the rule'"'"'s SQL alone (count, warm, median of 3): %s s, %s customers\n' \
        "$SEGMENT_SQL_S" "$SEGMENT_SQL_COUNT"
    printf '  segment build job, queued to succeeded: %s s = %s x the SQL (target <= 2: %s), %s members\n' \
        "$SEGMENT_FIRST_BUILD_S" "$(ratio "$SEGMENT_FIRST_BUILD_S" "$SEGMENT_SQL_S")" \
        "$(awk -v j="$SEGMENT_FIRST_BUILD_S" -v a="$SEGMENT_SQL_S" 'BEGIN { print (j <= 2 * a) ? "met" : "NOT met" }')" \
        "$SEGMENT_SIZE"
    w=${#label}
    printf "  %-${w}s %10s %8s %8s %7s %12s\n" route req/s 'p50 ms' 'p99 ms' errors 'vs /healthz'
    printf "  %-${w}s %10s %8s %8s %7s %12s\n" "$label" "${RPS[$label]}" "${P50[$label]}" \
        "${P99[$label]}" "${ERRS[$label]}" "$(ratio "${RPS[$label]}" "${RPS[${ROUTES[0]%%|*}]:-}")"
    verdict "$label" "p99_ms<5" >/dev/null
    v=$(verdict "$label" "p99_ms<5")
    printf '  count: %s (%s)\n' "$v" "$VERDICT_DETAIL"
    printf '  batch ingest, events/s: no segments %s; 20 live segments %s; ratio %s (target >= 0.8: %s); %s errors\n' \
        "$SEGMENT_INGEST_NONE" "$SEGMENT_INGEST_WITH" "$SEGMENT_INGEST_RATIO" \
        "$(awk -v r="$SEGMENT_INGEST_RATIO" 'BEGIN { print (r + 0 >= 0.8) ? "met" : "NOT met" }')" \
        "$SEGMENT_INGEST_ERRS"
    printf '  the upkeep judged the last batch %s s after the ingest ended; counted over the ingest and that wait: %s events/s, ratio %s\n' \
        "$SEGMENT_LAG_S" "$SEGMENT_INGEST_SUSTAINED" "$SEGMENT_SUSTAINED_RATIO"
    printf '  customers of the ingest whose membership then differs from the rules: %s\n' \
        "$SEGMENT_STALE"
}
