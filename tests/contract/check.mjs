#!/usr/bin/env node
/*
 * check.mjs — the contract test: openapi.yaml is valid OpenAPI and describes
 * the server that `crmd routes` says we built.
 *
 *   node tests/contract/check.mjs <crmd binary> <openapi.yaml>
 *
 * Every check is one named assertion. A failure prints one line starting
 * with "FAIL"; the last line is Check's summary format
 * ("N%: Checks: C, Failures: F, Errors: 0"), which scripts/test sums over all
 * suites. Exits 1 when any check failed, 2 on a usage error.
 *
 * What is checked, and why:
 *   - the document parses and passes @seriousme/openapi-schema-validator
 *     (the official OpenAPI JSON schemas, plus its check of local $refs);
 *   - the component schemas are valid JSON Schema 2020-12 and every example
 *     matches its schema (the OpenAPI schema does not look inside Schema
 *     Objects, so a typo there would otherwise pass);
 *   - the route table and the contract list the same (method, path) pairs;
 *   - each operation's x-required-scope is the route's scope ("any-key" for
 *     a route any valid key may call), operations with a scope require
 *     bearerAuth and public ones say `security: []`;
 *   - each operation documents the errors the server's request pipeline
 *     (server/http_admit.c) can give it, with the headers that go with them;
 *   - the schemas accept what the server serves and refuse what it refuses
 *     where the two drifted apart before (partial touchpoint batches, any
 *     X-Request-Id, key names counted in characters);
 *   - every header a handlers_*.c file sends is declared on a response of
 *     an operation that file serves;
 *   - each operation's query parameters are exactly the ones its route
 *     declares (`crmd routes --query`), since any other gets 422.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";

import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import YAML from "yaml";

const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/* Operations that never touch the database, hence never answer 503. */
const NO_DATABASE = new Set(["GET /healthz", "GET /metrics", "GET /openapi.yaml"]);

/* Where the component schemas live for Ajv; any absolute URI would do. */
const SCHEMAS_ID = "urn:crmd:openapi:components";

/* ---- assertions ----------------------------------------------------------- */

const results = [];

/* Records one named assertion; prints the failure with its detail. */
function check(name, ok, detail = "") {
    results.push({ name, ok: Boolean(ok) });
    if (!ok)
        console.log(`FAIL ${name}${detail ? `: ${detail}` : ""}`);
    return Boolean(ok);
}

/* Prints the summary line and exits: 0 when every check passed, else 1. */
function finish() {
    const total = results.length;
    const failed = results.filter((r) => !r.ok).length;
    const percent = total === 0 ? 0 : Math.floor(((total - failed) * 100) / total);
    console.log(`${percent}%: Checks: ${total}, Failures: ${failed}, Errors: 0`);
    process.exit(failed === 0 && total > 0 ? 0 : 1);
}

/* ---- reading the document ------------------------------------------------- */

/* Parses the file as YAML (duplicate keys are errors); null on failure. */
function loadDocument(path) {
    let text;
    try {
        text = readFileSync(path, "utf8");
    } catch (e) {
        check(`${path} can be read`, false, e.message);
        return null;
    }
    try {
        const doc = YAML.parse(text, { prettyErrors: true, uniqueKeys: true });
        return check(`${path} is a YAML mapping`, doc !== null && typeof doc === "object",
                     "the document is not a mapping") ? doc : null;
    } catch (e) {
        check(`${path} is a YAML mapping`, false, e.message);
        return null;
    }
}

/* Formats the validator's (Ajv's) errors as one line each. */
function formatErrors(errors) {
    const list = Array.isArray(errors) ? errors : [errors];
    return list
        .map((e) => typeof e === "object" && e !== null && "message" in e
            ? `${e.instancePath || "/"} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ""}`
            : String(e))
        .join("\n    ");
}

/* Validates against the official OpenAPI schema for the document's version. */
async function validateOpenApi(doc) {
    const validator = new Validator();
    let res;
    try {
        res = await validator.validate(structuredClone(doc));
    } catch (e) {
        return check("openapi.yaml is valid OpenAPI", false, e.message);
    }
    if (!check("openapi.yaml is valid OpenAPI", res.valid, `\n    ${formatErrors(res.errors)}`))
        return false;
    return check("openapi.yaml is OpenAPI 3.1", validator.version === "3.1",
                 `the validator read version ${validator.version}`);
}

/* Follows local $refs ("#/a/b") until a plain object is reached. */
function resolve(doc, obj) {
    const seen = new Set();
    while (obj && typeof obj === "object" && typeof obj.$ref === "string") {
        if (seen.has(obj.$ref) || !obj.$ref.startsWith("#/"))
            return undefined;
        seen.add(obj.$ref);
        obj = obj.$ref.slice(2).split("/")
            .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"))
            .reduce((node, key) => (node == null ? undefined : node[key]), doc);
    }
    return obj;
}

/* The operations of the document as "METHOD /path" -> {method, path, op}. */
function contractOperations(doc) {
    const ops = new Map();
    for (const [path, rawItem] of Object.entries(doc.paths ?? {})) {
        const item = resolve(doc, rawItem) ?? {};
        for (const method of HTTP_METHODS) {
            if (item[method])
                ops.set(`${method.toUpperCase()} ${path}`,
                        { method: method.toUpperCase(), path, op: item[method] });
        }
    }
    return ops;
}

/* ---- schemas and examples ------------------------------------------------- */

/* A deep copy with component refs made absolute, so Ajv finds them under
 * SCHEMAS_ID wherever the schema is compiled. */
function absoluteRefs(value) {
    if (Array.isArray(value))
        return value.map(absoluteRefs);
    if (value === null || typeof value !== "object")
        return value;
    const out = {};
    for (const [k, v] of Object.entries(value)) {
        out[k] = k === "$ref" && typeof v === "string" && v.startsWith("#/components/schemas/")
            ? `${SCHEMAS_ID}#/$defs/${v.slice("#/components/schemas/".length)}`
            : absoluteRefs(v);
    }
    return out;
}

/* An Ajv that knows the component schemas, or null when they are not valid
 * JSON Schema 2020-12. Strict mode makes unknown keywords (typos) errors;
 * the OpenAPI-only keywords are declared so they are allowed. */
function schemaCompiler(doc) {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true, allErrors: true });
    addFormats(ajv);
    ajv.addVocabulary(["example", "xml", "externalDocs", "discriminator"]);
    const defs = {};
    for (const [name, schema] of Object.entries(doc.components?.schemas ?? {}))
        defs[name] = absoluteRefs(schema);
    const root = { $schema: "https://json-schema.org/draft/2020-12/schema", $id: SCHEMAS_ID, $defs: defs };
    if (!check("component schemas are valid JSON Schema 2020-12", ajv.validateSchema(root),
               ajv.errorsText(ajv.errors)))
        return null;
    ajv.addSchema(root);
    return ajv;
}

/* Compiles a schema; the validating function, or null after a failed check. */
function compileChecked(ajv, schema, what) {
    try {
        const fn = ajv.compile(absoluteRefs(schema));
        check(`${what} compiles`, true);
        return fn;
    } catch (e) {
        check(`${what} compiles`, false, e.message);
        return null;
    }
}

/* Checks one example against a compiled schema. */
function checkExample(validate, example, what) {
    check(`${what} matches its schema`, validate(example),
          validate.errors ? validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; ") : "");
}

/* The media types of a response or request body, with a label for each. */
function* mediaTypes(doc, owners) {
    for (const [label, raw] of owners) {
        const obj = resolve(doc, raw);
        if (raw?.$ref || !obj?.content)
            continue; /* a $ref is checked where it is defined */
        for (const [type, media] of Object.entries(obj.content))
            yield [`${label} (${type})`, media];
    }
}

/* Every response and request body defined in the document, labelled. */
function* bodyOwners(doc, ops) {
    for (const [name, r] of Object.entries(doc.components?.responses ?? {}))
        yield [`response ${name}`, r];
    for (const [name, r] of Object.entries(doc.components?.requestBodies ?? {}))
        yield [`request body ${name}`, r];
    for (const [key, { op }] of ops) {
        if (op.requestBody)
            yield [`${key} request body`, op.requestBody];
        for (const [status, r] of Object.entries(op.responses ?? {}))
            yield [`${key} ${status}`, r];
    }
}

function checkSchemasAndExamples(doc, ops) {
    const ajv = schemaCompiler(doc);
    if (ajv === null)
        return null;
    for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) {
        const validate = compileChecked(ajv, { $ref: `#/components/schemas/${name}` }, `schema ${name}`);
        if (validate === null)
            continue;
        const examples = [...(schema.examples ?? []), ...("example" in schema ? [schema.example] : [])];
        examples.forEach((ex, i) => checkExample(validate, ex, `schema ${name} example ${i}`));
    }
    for (const [label, media] of mediaTypes(doc, bodyOwners(doc, ops))) {
        const examples = [
            ...("example" in media ? [["example", media.example]] : []),
            ...Object.entries(media.examples ?? {}).map(([n, e]) => [`example ${n}`, resolve(doc, e)?.value]),
        ];
        if (!media.schema || examples.length === 0)
            continue;
        const validate = compileChecked(ajv, media.schema, `${label} schema`);
        if (validate !== null)
            for (const [n, ex] of examples)
                checkExample(validate, ex, `${label} ${n}`);
    }
    return ajv;
}

/* ---- what the server accepts, as the schemas say it ----------------------- */

/* Checks that a schema accepts (want true) or refuses (want false) each
 * value: the contract must neither refuse what crmd serves (a strict
 * validator in front of crmd would then refuse it too) nor allow what crmd
 * refuses. */
function checkValues(ajv, schema, what, values, want) {
    if (!schema)
        return check(`${what} is defined`, false);
    let validate;
    try {
        validate = ajv.compile(absoluteRefs(schema));
    } catch (e) {
        return check(`${what} compiles`, false, e.message);
    }
    for (const v of values) {
        const shown = JSON.stringify(v).slice(0, 60);
        check(`${what} ${want ? "accepts" : "refuses"} ${shown}`, validate(v) === want,
              want && validate.errors ? validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; ") : "");
    }
}

function checkAcceptance(doc, ops, ajv) {
    /* A batch is answered item by item (lib/touchpoints/batch.c): items that break
     * the rules are rejected in the report, so the request takes any item. */
    const batch = ops.get("POST /v1/touchpoints/batch")?.op;
    const batchSchema = resolve(doc, batch?.requestBody)?.content?.["application/json"]?.schema;
    checkValues(ajv, batchSchema, "POST /v1/touchpoints/batch request schema",
                [[{}], [17, null, "x"], [{ channel: "fax", colour: "red" }]], true);
    checkValues(ajv, batchSchema, "POST /v1/touchpoints/batch request schema", [{}, "x"], false);

    /* X-Request-Id (server/http.c): any value is served; a sane one is kept. */
    const params = [];
    for (const [key, { op }] of ops)
        for (const p of op.parameters ?? []) {
            const param = resolve(doc, p);
            if (param?.in === "header" && param.name?.toLowerCase() === "x-request-id")
                params.push([key, param]);
        }
    check("operations document the X-Request-Id request header", params.length > 0);
    const anyIds = ["a b", "{2a1e}", "x".repeat(200), "é", ""];
    for (const [key, param] of params.slice(0, 1))
        checkValues(ajv, param.schema, `${key}: the X-Request-Id parameter`, anyIds, true);
    const unrestricted = params.filter(([, p]) => JSON.stringify(p.schema) === JSON.stringify(params[0][1].schema));
    check("every operation's X-Request-Id parameter has the same schema", unrestricted.length === params.length);
    const header = resolve(doc, doc.components?.headers?.["X-Request-Id"])?.schema;
    checkValues(ajv, header, "the X-Request-Id response header",
                ["a", "A-z_0.9:", "f".repeat(32), "x".repeat(63)], true);
    checkValues(ajv, header, "the X-Request-Id response header", ["", "x".repeat(64), "a b", "é"], false);

    /* Key names (lib/auth.c): 1 to 200 characters, however many bytes. */
    const name = doc.components?.schemas?.ApiKeyCreate?.properties?.name;
    checkValues(ajv, name, "ApiKeyCreate.name", ["n", "è".repeat(200), "n".repeat(200)], true);
    checkValues(ajv, name, "ApiKeyCreate.name", ["", "è".repeat(201), "n".repeat(201)], false);
}

/* ---- headers the handlers send ------------------------------------------- */

/* handler function -> "METHOD /pattern", from the route table in router.c
 * (positional rows {"GET", "/path", handle_x, ...} or designated ones). */
function routeHandlers(serverDir) {
    const text = readFileSync(join(serverDir, "router.c"), "utf8");
    const byHandler = new Map();
    const rows = [
        /\{\s*"([A-Z]+)",\s*"(\/[^"]*)",\s*(handle_\w+)/g,
        /\.method\s*=\s*"([A-Z]+)",\s*\.pattern\s*=\s*"(\/[^"]*)",\s*\.handler\s*=\s*(handle_\w+)/g,
    ];
    for (const re of rows)
        for (const m of text.matchAll(re))
            byHandler.set(m[3], [...(byHandler.get(m[3]) ?? []), `${m[1]} ${m[2]}`]);
    return byHandler;
}

/* Every header a handlers_*.c file can add (string literals in the name
 * argument of http_add_header) must be declared on a response of an
 * operation that file serves: a client cannot rely on what the contract
 * does not say (Content-Location was sent but not declared). */
function checkSentHeaders(doc, ops, specPath) {
    const serverDir = join(dirname(specPath), "server");
    let files;
    try {
        files = readdirSync(serverDir).filter((f) => /^handlers.*\.c$/.test(f));
    } catch (e) {
        check("server/ handlers can be read", false, e.message);
        return;
    }
    const byHandler = routeHandlers(serverDir);
    if (!check("the route table in server/router.c can be read", byHandler.size > 0, "no rows recognised"))
        return;
    for (const file of files) {
        const text = readFileSync(join(serverDir, file), "utf8");
        const served = [...text.matchAll(/^void (handle_\w+)\s*\(/gm)]
            .flatMap((m) => byHandler.get(m[1]) ?? []);
        const sent = new Set();
        for (const m of text.matchAll(/http_add_header\(\s*\w+\s*,([^;]*?),[^,;]*\);/g))
            for (const lit of m[1].matchAll(/"([A-Za-z][A-Za-z-]*)"/g))
                sent.add(lit[1]);
        for (const name of sent) {
            const declaredOn = served.filter((key) => Object.values(ops.get(key)?.op.responses ?? {})
                .some((r) => headerNames(doc, r).includes(name.toLowerCase())));
            check(`${name} (sent by server/${file}) is declared on a response of an operation it serves`,
                  declaredOn.length > 0, `serves ${served.join(", ") || "nothing known"}`);
        }
    }
}

/* ---- the route table ------------------------------------------------------ */

/* Runs `crmd routes`; "METHOD PATTERN" -> scope ("-" for none), or null. */
function serverRoutes(binary) {
    let out;
    try {
        out = execFileSync(binary, ["routes"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
        check(`${binary} routes runs`, false, (e.stderr || e.message || "").toString().trim());
        return null;
    }
    const routes = new Map();
    const bad = [];
    for (const line of out.split("\n").filter((l) => l.trim() !== "")) {
        const m = /^([A-Z]+) (\/\S*) (\S+)$/.exec(line);
        if (m)
            routes.set(`${m[1]} ${m[2]}`, m[3]);
        else
            bad.push(JSON.stringify(line));
    }
    check(`${binary} routes prints "METHOD PATTERN SCOPE" lines`, bad.length === 0 && routes.size > 0,
          bad.length ? `unexpected lines: ${bad.join(", ")}` : "no routes printed");
    return routes;
}

function checkSameOperations(routes, ops) {
    for (const key of routes.keys())
        check(`route ${key} is in the contract`, ops.has(key), "no such operation in openapi.yaml");
    for (const key of ops.keys())
        check(`operation ${key} is in the route table`, routes.has(key), "crmd routes does not list it");
}

/* Runs `crmd routes --query`; "METHOD PATTERN" -> sorted parameter names, or null. */
function serverQueryParameters(binary) {
    let out;
    try {
        out = execFileSync(binary, ["routes", "--query"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
        check(`${binary} routes --query runs`, false, (e.stderr || e.message || "").toString().trim());
        return null;
    }
    const params = new Map();
    for (const line of out.split("\n").filter((l) => l.trim() !== "")) {
        const m = /^([A-Z]+) (\/\S*) (\S+)$/.exec(line);
        if (m)
            params.set(`${m[1]} ${m[2]}`, m[3] === "-" ? [] : m[3].split(",").sort());
    }
    return params;
}

/* The names of the query parameters an operation documents (path-level ones
 * included), sorted. */
function contractQueryParameters(doc, path, op) {
    const item = resolve(doc, doc.paths[path]) ?? {};
    return [...(item.parameters ?? []), ...(op.parameters ?? [])]
        .map((p) => resolve(doc, p))
        .filter((p) => p?.in === "query")
        .map((p) => p.name)
        .sort();
}

function checkQueryParameters(doc, key, path, op, declared) {
    const documented = contractQueryParameters(doc, path, op);
    const want = declared ?? [];
    check(`${key}: documents exactly the query parameters its route accepts`,
          JSON.stringify(documented) === JSON.stringify(want),
          `route table: ${want.join(", ") || "none"}; contract: ${documented.join(", ") || "none"}`);
}

/* ---- per-operation rules -------------------------------------------------- */

function checkOperationShape(ops) {
    const ids = new Map();
    for (const [key, { op }] of ops) {
        const missing = ["operationId", "summary", "tags"].filter((f) => !op[f] || op[f].length === 0);
        check(`${key}: has operationId, summary and tags`, missing.length === 0, `missing ${missing.join(", ")}`);
        if (op.operationId)
            ids.set(op.operationId, [...(ids.get(op.operationId) ?? []), key]);
    }
    const dups = [...ids].filter(([, keys]) => keys.length > 1);
    check("operationIds are unique", dups.length === 0,
          dups.map(([id, keys]) => `${id} on ${keys.join(" and ")}`).join("; "));
}

function checkSecurityScheme(doc) {
    const s = resolve(doc, doc.components?.securitySchemes?.bearerAuth);
    check("components.securitySchemes.bearerAuth is HTTP bearer",
          s?.type === "http" && String(s?.scheme).toLowerCase() === "bearer",
          s ? `type ${s.type}, scheme ${s.scheme}` : "not defined");
}

/* Scope and security of one operation that the route table also has. */
function checkScopeAndSecurity(doc, key, op, routeScope) {
    const contractScope = op["x-required-scope"] ?? "-";
    check(`${key}: x-required-scope matches the route table`, contractScope === routeScope,
          `route table says ${routeScope}, contract says ${contractScope}`);
    if (routeScope === "-") {
        check(`${key}: public, so security is []`, Array.isArray(op.security) && op.security.length === 0,
              `security is ${JSON.stringify(op.security)}`);
        return;
    }
    const effective = op.security ?? doc.security ?? [];
    /* Every alternative must include bearerAuth; an empty {} would make the
     * key optional. */
    check(`${key}: needs a key, so security requires bearerAuth`,
          effective.length > 0 && effective.every((req) => req && "bearerAuth" in req),
          `security is ${JSON.stringify(effective)}`);
}

/* The status codes the request pipeline can give this operation, with the
 * response header each must document (besides X-Request-Id). */
function expectedErrors(key, op, path, routeScope) {
    const expected = [
        ["414", null], /* URL over CRMD_MAX_URL_BYTES: checked before routing */
        ["431", null], /* headers over CRMD_MAX_HEADER_BYTES: likewise */
    ];
    if (routeScope !== "-") /* 429: the per-key rate limit (server/throttle.c) */
        expected.push(["401", "WWW-Authenticate"], ["429", "Retry-After"]);
    /* 403: a key without the route's scope. A route for any key
     * (ROUTE_ANY_KEY, server/router.h) has none to lack. */
    if (routeScope !== "-" && routeScope !== "any-key")
        expected.push(["403", null]);
    /* 413 everywhere: an operation that takes no body refuses any. */
    expected.push(["413", null]);
    if (op.requestBody)
        expected.push(["400", null], ["415", null], ["422", null]);
    if (path.includes("{"))
        expected.push(["404", null]);
    if (!NO_DATABASE.has(key))
        expected.push(["503", "Retry-After"]);
    return expected;
}

function headerNames(doc, response) {
    return Object.keys(resolve(doc, response)?.headers ?? {}).map((h) => h.toLowerCase());
}

function checkErrorResponses(doc, key, op, path, routeScope) {
    const responses = op.responses ?? {};
    for (const [status, header] of expectedErrors(key, op, path, routeScope)) {
        let problem = "";
        if (!(status in responses))
            problem = `no ${status} response`;
        else if (header !== null && !headerNames(doc, responses[status]).includes(header.toLowerCase()))
            problem = `the ${status} response has no ${header} header`;
        check(`${key}: documents ${status}${header ? ` with ${header}` : ""}`, problem === "", problem);
    }
}

function checkResponseHeadersAndTypes(doc, key, op) {
    const noId = [], notProblem = [];
    for (const [status, raw] of Object.entries(op.responses ?? {})) {
        if (!headerNames(doc, raw).includes("x-request-id"))
            noId.push(status);
        const content = resolve(doc, raw)?.content ?? {};
        if (/^[45]/.test(status) && !("application/problem+json" in content))
            notProblem.push(status);
    }
    check(`${key}: every response declares X-Request-Id`, noId.length === 0, `missing on ${noId.join(", ")}`);
    check(`${key}: error responses are application/problem+json`, notProblem.length === 0,
          `not on ${notProblem.join(", ")}`);
}

/* ---- main ----------------------------------------------------------------- */

async function main() {
    const [binary, specPath] = process.argv.slice(2);
    if (!binary || !specPath) {
        console.error("usage: node check.mjs <crmd binary> <openapi.yaml>");
        process.exit(2);
    }
    const doc = loadDocument(specPath);
    if (doc === null)
        finish();
    const valid = await validateOpenApi(doc);
    const ops = contractOperations(doc);
    const ajv = valid ? checkSchemasAndExamples(doc, ops) : null;
    if (ajv !== null)
        checkAcceptance(doc, ops, ajv);
    checkSentHeaders(doc, ops, specPath);

    const routes = serverRoutes(binary);
    if (routes === null)
        finish();
    const queryParams = serverQueryParameters(binary);
    checkSameOperations(routes, ops);
    checkOperationShape(ops);
    checkSecurityScheme(doc);
    for (const [key, { path, op }] of ops) {
        if (!routes.has(key))
            continue; /* already a failure; its scope is unknown */
        const scope = routes.get(key);
        checkScopeAndSecurity(doc, key, op, scope);
        checkErrorResponses(doc, key, op, path, scope);
        checkResponseHeadersAndTypes(doc, key, op);
        if (queryParams !== null)
            checkQueryParameters(doc, key, path, op, queryParams.get(key));
    }
    finish();
}

await main();
