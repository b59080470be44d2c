-- 0008: `q` searches words, through an index of words in creation order.
--
-- A substring search walked customers in creation order testing every row
-- (a common surname: ~2,000 rows per page of 50), or collected every match
-- through the trigram index and sorted them (a rare one). Measured with
-- bench/run on a million customers, PostgreSQL alone managed ~1,100 pages/s
-- at 32 clients for a surname held by 5% of them.
--
-- Now every word of a live customer's names, e-mail and company is a row
-- (term, created_at, customer_id), so the customers holding a word are an
-- index range already in page order: a page reads its 50 rows and stops. A
-- word of `q` matches the terms it begins: "ferr" finds Ferrari. Words are
-- split at ASCII white space and punctuation, the same set as in
-- lib/customer_list.c.

CREATE FUNCTION crm_search_words(source text) RETURNS SETOF text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT DISTINCT w
    FROM regexp_split_to_table(
             translate(lower(source), '!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~', repeat(' ', 32)),
             '[ \t\n\r\f\v]+') AS w
    WHERE w <> ''
$$;

CREATE TABLE customer_search_terms (
    term        text COLLATE "C" NOT NULL,
    created_at  timestamptz NOT NULL,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    PRIMARY KEY (term, created_at, customer_id)
);
-- Replacing a customer's words, and the other words of a many-word `q`.
CREATE INDEX customer_search_terms_customer_idx ON customer_search_terms (customer_id, term);

-- Kept in step by statement triggers, one set-based statement per change.
CREATE FUNCTION customer_search_terms_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_search_terms (term, created_at, customer_id)
    SELECT w, n.created_at, n.id
    FROM new_rows n, crm_search_words(n.search_text) AS w
    WHERE n.status = 'active';
    RETURN NULL;
END
$$;

CREATE FUNCTION customer_search_terms_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM customer_search_terms t
    USING old_rows o JOIN new_rows n ON n.id = o.id
    WHERE t.customer_id = o.id
      AND (n.search_text IS DISTINCT FROM o.search_text OR n.status <> o.status
           OR n.created_at <> o.created_at);
    INSERT INTO customer_search_terms (term, created_at, customer_id)
    SELECT w, n.created_at, n.id
    FROM old_rows o JOIN new_rows n ON n.id = o.id, crm_search_words(n.search_text) AS w
    WHERE n.status = 'active'
      AND (n.search_text IS DISTINCT FROM o.search_text OR n.status <> o.status
           OR n.created_at <> o.created_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER customers_search_terms_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_search_terms_insert();
CREATE TRIGGER customers_search_terms_update AFTER UPDATE ON customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_search_terms_update();

INSERT INTO customer_search_terms (term, created_at, customer_id)
SELECT w, c.created_at, c.id
FROM customers c, crm_search_words(c.search_text) AS w
WHERE c.status = 'active';

-- The trigram index served the substring search only.
DROP INDEX customers_search_idx;
