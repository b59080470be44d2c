/*
 * campaigns/stats.c — the statistics of a campaign's results
 * (campaigns/stats.h, where every formula and degenerate case is
 * documented). Pure arithmetic over the counts, with GSL's normal and
 * chi-square distribution functions.
 *
 * The inputs are checked before GSL is called, so every call below is
 * within its domain: the quantile gets a probability in (0.5, 1), the tail
 * functions a finite value >= 0. GSL's error handler is therefore never
 * reached and left as it is.
 */
#include "campaigns/stats.h"

#include <gsl/gsl_cdf.h>
#include <math.h>

static const crm_campaign_interval NO_INTERVAL = {NAN, NAN};

static bool counts_valid(const crm_campaign_group_counts *g)
{
    return g->customers >= 0 && g->customers <= CRM_CAMPAIGN_CUSTOMERS_MAX && g->responders >= 0 &&
           g->responders <= g->customers && isfinite(g->revenue) && isfinite(g->revenue_sq) &&
           g->revenue_sq >= 0;
}

static bool input_valid(const crm_campaign_stats_input *in)
{
    /* Written so that NAN fails every comparison. */
    return counts_valid(&in->treatment) && counts_valid(&in->control) && in->control_share >= 0 &&
           in->control_share <= 0.5 && in->confidence >= 0 && in->confidence < 1;
}

/* The figures of one group (1 and 5). */
static crm_campaign_group_stats group_stats(const crm_campaign_group_counts *g)
{
    crm_campaign_group_stats out = {
        .customers = g->customers,
        .responders = g->responders,
        .revenue = g->revenue,
        .response_rate = NAN,
        .revenue_per_customer = NAN,
        .revenue_variance = NAN,
    };
    if (g->customers == 0)
        return out;
    double n = (double)g->customers;
    out.response_rate = (double)g->responders / n;
    out.revenue_per_customer = g->revenue / n;
    if (g->customers >= 2) {
        /* Q - m S with one rounding; what cancels is then the input's own
         * rounding, not this one's. */
        double ss = fma(-out.revenue_per_customer, g->revenue, g->revenue_sq);
        out.revenue_variance = ss > 0 ? ss / (n - 1) : 0;
    }
    return out;
}

/* The Wilson score interval of x/n (n > 0), clamped to [0, 1]. */
static crm_campaign_interval wilson(double p, double n, double z)
{
    double z2 = z * z;
    double centre = p + z2 / (2 * n);
    double half = z * sqrt(p * (1 - p) / n + z2 / (4 * n * n));
    double scale = 1 + z2 / n;
    crm_campaign_interval w = {(centre - half) / scale, (centre + half) / scale};
    w.low = fmax(w.low, 0);
    w.high = fmin(w.high, 1);
    return w;
}

/* 2 and 3: the absolute uplift, its intervals and the pooled z-test; both
 * groups have customers. */
static void absolute_uplift(const crm_campaign_stats_input *in, crm_campaign_stats *out)
{
    double z = out->z_critical;
    double n_t = (double)in->treatment.customers, n_c = (double)in->control.customers;
    double p_t = out->treatment.response_rate, p_c = out->control.response_rate;
    double d = p_t - p_c;
    out->uplift = d;

    double wald_se = sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c);
    out->wald = (crm_campaign_interval){d - z * wald_se, d + z * wald_se};

    crm_campaign_interval w_t = wilson(p_t, n_t, z), w_c = wilson(p_c, n_c, z);
    out->newcombe.low = d - hypot(p_t - w_t.low, w_c.high - p_c);
    out->newcombe.high = d + hypot(w_t.high - p_t, p_c - w_c.low);

    double pooled = (double)(in->treatment.responders + in->control.responders) / (n_t + n_c);
    if (pooled > 0 && pooled < 1) {
        out->z = d / sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c));
        out->p_value = 2 * gsl_cdf_ugaussian_Q(fabs(out->z));
    }
}

/* 4: the relative lift and its delta-method interval; both groups have
 * customers. */
static void relative_lift(const crm_campaign_stats_input *in, crm_campaign_stats *out)
{
    if (in->control.responders == 0)
        return;
    double p_t = out->treatment.response_rate, p_c = out->control.response_rate;
    out->relative_lift = p_t / p_c - 1;
    if (in->treatment.responders == 0)
        return;
    double n_t = (double)in->treatment.customers, n_c = (double)in->control.customers;
    double log_ratio = log(p_t / p_c);
    double se = sqrt((1 - p_t) / (n_t * p_t) + (1 - p_c) / (n_c * p_c));
    out->relative_lift_ci.low = expm1(log_ratio - out->z_critical * se);
    out->relative_lift_ci.high = expm1(log_ratio + out->z_critical * se);
}

/* 5: the uplift of revenue per customer and its Welch interval; both
 * groups have customers. */
static void revenue_uplift(const crm_campaign_stats_input *in, crm_campaign_stats *out)
{
    out->revenue_uplift = out->treatment.revenue_per_customer - out->control.revenue_per_customer;
    if (in->treatment.customers < 2 || in->control.customers < 2)
        return;
    double se = sqrt(out->treatment.revenue_variance / (double)in->treatment.customers +
                     out->control.revenue_variance / (double)in->control.customers);
    out->revenue_uplift_ci.low = out->revenue_uplift - out->z_critical * se;
    out->revenue_uplift_ci.high = out->revenue_uplift + out->z_critical * se;
}

/* 6: the sample-ratio test. */
static void sample_ratio(const crm_campaign_stats_input *in, crm_campaign_stats *out)
{
    double s = in->control_share;
    out->expected_control_share = s;
    long long total = in->treatment.customers + in->control.customers;
    if (total == 0)
        return;
    double n = (double)total;
    out->observed_control_share = (double)in->control.customers / n;
    if (s == 0)
        return;
    double e_c = s * n, e_t = (1 - s) * n;
    double dev_c = (double)in->control.customers - e_c;
    double dev_t = (double)in->treatment.customers - e_t;
    out->chi_square = dev_c * dev_c / e_c + dev_t * dev_t / e_t;
    out->srm_p_value = gsl_cdf_chisq_Q(out->chi_square, 1);
    out->srm_defined = true;
    out->srm_mismatch = out->srm_p_value < CRM_CAMPAIGN_SRM_ALPHA;
}

static void clear(const crm_campaign_stats_input *in, crm_campaign_stats *out)
{
    *out = (crm_campaign_stats){
        .confidence = NAN,
        .z_critical = NAN,
        .treatment = {in->treatment.customers, in->treatment.responders, NAN, NAN, NAN, NAN},
        .control = {in->control.customers, in->control.responders, NAN, NAN, NAN, NAN},
        .uplift = NAN,
        .wald = NO_INTERVAL,
        .newcombe = NO_INTERVAL,
        .z = NAN,
        .p_value = NAN,
        .relative_lift = NAN,
        .relative_lift_ci = NO_INTERVAL,
        .revenue_uplift = NAN,
        .revenue_uplift_ci = NO_INTERVAL,
        .expected_control_share = NAN,
        .observed_control_share = NAN,
        .chi_square = NAN,
        .srm_p_value = NAN,
        .srm_defined = false,
        .srm_mismatch = false,
    };
}

bool crm_campaign_stats_compute(const crm_campaign_stats_input *in, crm_campaign_stats *out)
{
    clear(in, out);
    if (!input_valid(in))
        return false;
    out->confidence = in->confidence == 0 ? CRM_CAMPAIGN_CONFIDENCE_DEFAULT : in->confidence;
    double alpha = 1 - out->confidence;
    out->z_critical = gsl_cdf_ugaussian_Pinv(1 - alpha / 2);
    out->treatment = group_stats(&in->treatment);
    out->control = group_stats(&in->control);
    if (in->treatment.customers > 0 && in->control.customers > 0) {
        absolute_uplift(in, out);
        relative_lift(in, out);
        revenue_uplift(in, out);
    }
    sample_ratio(in, out);
    return true;
}

/* ---- JSON ------------------------------------------------------------------ */

static void put_real(crm_jbuf *b, const char *key, double v)
{
    crm_jbuf_key(b, key);
    if (isfinite(v))
        crm_jbuf_real(b, v);
    else
        crm_jbuf_null(b);
}

static void put_interval(crm_jbuf *b, const char *key, crm_campaign_interval i)
{
    crm_jbuf_key(b, key);
    crm_jbuf_begin_object(b);
    put_real(b, "low", i.low);
    put_real(b, "high", i.high);
    crm_jbuf_end_object(b);
}

static void put_group(crm_jbuf *b, const char *key, const crm_campaign_group_stats *g)
{
    crm_jbuf_key(b, key);
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "customers");
    crm_jbuf_int(b, g->customers);
    crm_jbuf_key(b, "responders");
    crm_jbuf_int(b, g->responders);
    put_real(b, "response_rate", g->response_rate);
    put_real(b, "revenue", g->revenue);
    put_real(b, "revenue_per_customer", g->revenue_per_customer);
    crm_jbuf_end_object(b);
}

static void put_estimate(crm_jbuf *b, const char *key, double value, crm_campaign_interval i)
{
    crm_jbuf_key(b, key);
    crm_jbuf_begin_object(b);
    put_real(b, "value", value);
    put_real(b, "low", i.low);
    put_real(b, "high", i.high);
    crm_jbuf_end_object(b);
}

void crm_campaign_stats_write_json(crm_jbuf *b, const crm_campaign_stats *st)
{
    crm_jbuf_begin_object(b);
    put_group(b, "treatment", &st->treatment);
    put_group(b, "control", &st->control);

    crm_jbuf_key(b, "uplift");
    crm_jbuf_begin_object(b);
    put_real(b, "absolute", st->uplift);
    put_interval(b, "wald", st->wald);
    put_interval(b, "newcombe", st->newcombe);
    put_real(b, "z", st->z);
    put_real(b, "p_value", st->p_value);
    crm_jbuf_end_object(b);

    put_estimate(b, "relative_lift", st->relative_lift, st->relative_lift_ci);
    put_estimate(b, "revenue_per_customer_uplift", st->revenue_uplift, st->revenue_uplift_ci);

    crm_jbuf_key(b, "sample_ratio");
    crm_jbuf_begin_object(b);
    put_real(b, "expected_control_share", st->expected_control_share);
    put_real(b, "observed_control_share", st->observed_control_share);
    put_real(b, "chi_square", st->chi_square);
    put_real(b, "p_value", st->srm_p_value);
    crm_jbuf_key(b, "mismatch");
    if (st->srm_defined)
        crm_jbuf_bool(b, st->srm_mismatch);
    else
        crm_jbuf_null(b);
    crm_jbuf_end_object(b);

    put_real(b, "confidence", st->confidence);
    crm_jbuf_end_object(b);
}
