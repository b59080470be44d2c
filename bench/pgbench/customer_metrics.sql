-- GET /v1/customers/{id}/metrics: the statement metrics_customer in
-- lib/metrics/customer.c (METRICS_DOC_FIELDS expanded into its columns), on
-- a random id among the generated customers. The compiler joins the
-- literals into this one string, which is how the runner finds it in the
-- binary.
\set id random(:customer_first, :customer_last)
SELECT c0.id, c.id, m.as_of, m.computed_at, NULL, m.purchases, m.refunds, m.unrated, m.first_purchase_at, m.last_purchase_at, m.historic_value, round(m.average_order_value, 4), m.predicted_purchases, m.predicted_value, NULL, m.value_tier, m.recency_days, m.frequency, m.monetary, NULL, m.r_score, m.f_score, m.m_score, m.rfm_cell, m.rfm_group, m.lifecycle_stage, m.p_alive, 1 - m.p_alive, m.overdue_days, m.touchpoints_90d, round(m.touchpoints_90d / 3.0, 4), m.last_inbound_at, m.nps_latest, m.nps_mean, m.nps_responses, m.csat_latest, m.csat_mean, m.csat_responses, m.x, m.t_x, m.t_age, round(m.repeat_mean_value, 4), m.interval_mean, m.interval_cv, m.interval_trend, m.spend_cv, m.spend_trend, m.last_gap_days FROM customers c0 JOIN customers c ON c.id = CASE WHEN c0.status = 'merged' THEN c0.merged_into  ELSE c0.id END AND c.status = 'active' LEFT JOIN customer_metrics m ON m.customer_id = c.id WHERE c0.id = :id;
