/*
 * harness.c — crmd child processes, HTTP over libcurl, keys, and checks
 * shared by the API suites. See harness.h for the contract of each part.
 */
#include "harness.h"
#include "list/cursor.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define STARTUP_LIMIT_MS 20000
#define MAX_CHILDREN 16
#define MAX_ENV 512

api_key harness_admin_key;

static char log_dir[200];

/* ---- small things ------------------------------------------------------- */

long long harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

const char *harness_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "api_tests: the environment variable %s must be set\n", name);
        exit(2);
    }
    return v;
}

int harness_run_env_command(const char *var)
{
    const char *cmd = getenv(var);
    if (cmd == NULL || cmd[0] == '\0')
        return -1;
    char *quiet = NULL;
    if (asprintf(&quiet, "%s >/dev/null 2>&1", cmd) < 0)
        return -1;
    int rc = system(quiet);
    free(quiet);
    if (rc != 0)
        fprintf(stderr, "api_tests: %s ('%s') failed with status %d\n", var, cmd, rc);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* ---- child registry ------------------------------------------------------ */

/* Children still running and the process that started each: the atexit
 * handler of a forked test process must not kill its parent's children. */
static struct {
    pid_t pid, owner;
} children[MAX_CHILDREN];

static void kill_own_children(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i].pid > 0 && children[i].owner == getpid()) {
            kill(children[i].pid, SIGKILL);
            waitpid(children[i].pid, NULL, 0);
            children[i].pid = 0;
        }
    }
}

static void remember_child(pid_t pid)
{
    static bool registered;
    if (!registered) {
        atexit(kill_own_children);
        registered = true;
    }
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i].pid == 0) {
            children[i].pid = pid;
            children[i].owner = getpid();
            return;
        }
    }
}

static void forget_child(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid == pid)
            children[i].pid = 0;
}

/* ---- child environment --------------------------------------------------- */

static bool env_has_name(const char *const *list, const char *entry)
{
    size_t n = strcspn(entry, "=");
    for (; list != NULL && *list != NULL; list++)
        if (strncmp(*list, entry, n) == 0 && (*list)[n] == '=')
            return true;
    return false;
}

/* Builds the child's environment: ours without CRMD_* (and without what
 * extra names), then defaults (unless extra names them), then extra. Every string is borrowed: the
 * caller keeps them alive until the exec. */
static void build_env(char **out, const char *const *defaults, const char *const *extra)
{
    size_t n = 0;
    for (char **e = environ; *e != NULL && n < MAX_ENV - 32; e++)
        if (strncmp(*e, "CRMD_", 5) != 0 && !env_has_name(extra, *e))
            out[n++] = *e;
    for (const char *const *d = defaults; *d != NULL; d++)
        if (!env_has_name(extra, *d))
            out[n++] = (char *)*d;
    for (const char *const *x = extra; x != NULL && *x != NULL && n < MAX_ENV - 1; x++)
        out[n++] = (char *)*x;
    out[n] = NULL;
}

/* fork + exec of CRMD_BIN with args and env; stdout and stderr go to the
 * given descriptors. The child dies with the thread that forked it. */
static pid_t spawn(char *const *argv, char *const *envp, int out_fd, int err_fd)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    execve(argv[0], argv, envp);
    dprintf(err_fd, "api_tests: cannot execute %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* ---- logs ---------------------------------------------------------------- */

bool harness_log_dir_create(void)
{
    const char *tmp = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
    snprintf(log_dir, sizeof log_dir, "%s/crmd-api-XXXXXX", tmp);
    if (mkdtemp(log_dir) == NULL) {
        fprintf(stderr, "api_tests: cannot create %s: %s\n", log_dir, strerror(errno));
        log_dir[0] = '\0';
        return false;
    }
    return true;
}

void harness_log_dir_finish(bool keep)
{
    if (log_dir[0] == '\0')
        return;
    if (keep) {
        fprintf(stderr, "api_tests: the logs of crmd in failed tests are in %s\n", log_dir);
        return;
    }
    DIR *d = opendir(log_dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", log_dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(log_dir);
}

/* ---- the crmd process ---------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static int exit_code_of(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

bool crmd_running(crmd_server *srv)
{
    if (srv->pid <= 0)
        return false;
    int wstatus;
    pid_t r = waitpid(srv->pid, &wstatus, WNOHANG);
    if (r == 0)
        return true;
    if (r == srv->pid) {
        srv->exit_status = exit_code_of(wstatus);
        forget_child(srv->pid);
        srv->pid = 0;
    }
    return false;
}

char *crmd_read_log(const crmd_server *srv)
{
    FILE *f = fopen(srv->log_path, "r");
    if (f == NULL)
        return strdup("");
    char *buf = NULL;
    size_t cap = 0, len = 0, n;
    char chunk[8192];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            buf = realloc(buf, cap);
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf == NULL)
        return strdup("");
    buf[len] = '\0';
    return buf;
}

static void print_log_tail(const crmd_server *srv)
{
    char *log = crmd_read_log(srv);
    size_t len = strlen(log);
    fprintf(stderr, "---- %s (last lines) ----\n%s\n----\n", srv->log_path,
            len > 4000 ? log + len - 4000 : log);
    free(log);
}

/* One attempt on one port; false when the child exited or did not answer. */
static bool start_once(crmd_server *srv, const char *const *extra_env, bool *port_taken)
{
    static char db_var[1024], listen_var[64];
    *port_taken = false;
    srv->port = free_port();
    if (srv->port <= 0)
        return false;
    snprintf(srv->base_url, sizeof srv->base_url, "http://127.0.0.1:%d", srv->port);
    snprintf(db_var, sizeof db_var, "CRMD_DATABASE_URL=%s", harness_env("CRMD_TEST_DATABASE_URL"));
    snprintf(listen_var, sizeof listen_var, "CRMD_LISTEN=127.0.0.1:%d", srv->port);
    /* Suites send hundreds of requests a second with one key: the per-key
     * rate limit is on (its headers on every answer) but out of reach,
     * unless a test sets its own (test_ratelimit.c). No scheduled metrics
     * recompute, whose job would answer a suite's own recompute with 409,
     * unless a test sets it (test_metrics.c). */
    const char *defaults[] = {db_var,
                              listen_var,
                              "CRMD_RATE_LIMIT_RPS=1000000",
                              "CRMD_RATE_LIMIT_BURST=1000000",
                              "CRMD_METRICS_SCHEDULE_HOURS=0",
                              NULL};
    char *envp[MAX_ENV];
    build_env(envp, defaults, extra_env);

    snprintf(srv->log_path, sizeof srv->log_path, "%s/crmd-%d-XXXXXX.log",
             log_dir[0] ? log_dir : "/tmp", srv->port);
    int log_fd = mkstemps(srv->log_path, 4);
    if (log_fd < 0) {
        fprintf(stderr, "api_tests: cannot create %s: %s\n", srv->log_path, strerror(errno));
        return false;
    }
    char *argv[] = {(char *)harness_env("CRMD_BIN"), "serve", NULL};
    srv->pid = spawn(argv, envp, log_fd, log_fd);
    close(log_fd);
    if (srv->pid < 0) {
        srv->pid = 0;
        return false;
    }
    remember_child(srv->pid);

    long long deadline = harness_now_ms() + STARTUP_LIMIT_MS;
    while (harness_now_ms() < deadline) {
        if (!crmd_running(srv)) {
            char *log = crmd_read_log(srv);
            *port_taken = strstr(log, "cannot listen") != NULL;
            free(log);
            if (!*port_taken) {
                fprintf(stderr, "api_tests: crmd exited with status %d while starting\n",
                        srv->exit_status);
                print_log_tail(srv);
            }
            return false;
        }
        http_call call = {.path = "/healthz", .timeout_ms = 1000};
        http_response r = http_send(srv, &call);
        long status = r.status;
        http_response_free(&r);
        if (status == 200)
            return true;
        harness_sleep_ms(20);
    }
    fprintf(stderr, "api_tests: crmd did not answer /healthz within %d ms\n", STARTUP_LIMIT_MS);
    print_log_tail(srv);
    crmd_kill(srv);
    return false;
}

bool crmd_start(crmd_server *srv, const char *const *extra_env)
{
    memset(srv, 0, sizeof *srv);
    srv->exit_status = -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        bool port_taken;
        if (start_once(srv, extra_env, &port_taken))
            return true;
        if (!port_taken)
            return false;
        unlink(srv->log_path);
    }
    return false;
}

int crmd_stop(crmd_server *srv, int timeout_s)
{
    if (!crmd_running(srv))
        return srv->exit_status;
    kill(srv->pid, SIGTERM);
    long long deadline = harness_now_ms() + (long long)timeout_s * 1000;
    while (harness_now_ms() < deadline) {
        if (!crmd_running(srv))
            return srv->exit_status;
        harness_sleep_ms(10);
    }
    fprintf(stderr, "api_tests: crmd (pid %d) ignored SIGTERM for %d s; killing it\n",
            (int)srv->pid, timeout_s);
    crmd_kill(srv);
    srv->exit_status = -1;
    return -1;
}

void crmd_kill(crmd_server *srv)
{
    if (srv->pid <= 0)
        return;
    kill(srv->pid, SIGKILL);
    int wstatus;
    if (waitpid(srv->pid, &wstatus, 0) == srv->pid)
        srv->exit_status = exit_code_of(wstatus);
    forget_child(srv->pid);
    srv->pid = 0;
}

void crmd_fixture_start(crmd_server *srv, const char *const *extra_env)
{
    ck_assert_msg(crmd_start(srv, extra_env), "crmd did not start (see its log above)");
}

void crmd_fixture_stop(crmd_server *srv)
{
    if (srv->pid <= 0 && srv->exit_status == -1)
        return; /* never started */
    int status = crmd_stop(srv, 15);
    if (status != 0)
        print_log_tail(srv);
    ck_assert_msg(status == 0, "crmd exited with status %d after SIGTERM (log: %s)", status,
                  srv->log_path);
    unlink(srv->log_path);
}

/* Finds the access-log line for request id in log; NULL when absent. */
static json_t *find_access_line(const char *log, const char *id, char **raw_line)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\"request_id\":\"%s\"", id);
    for (const char *line = log; *line != '\0';) {
        size_t len = strcspn(line, "\n");
        const char *hit = strstr(line, needle);
        if (hit != NULL && hit < line + len) {
            json_t *doc = json_loadb(line, len, 0, NULL);
            const char *msg = json_string_value(json_object_get(doc, "msg"));
            if (msg != NULL && strcmp(msg, "request") == 0) {
                if (raw_line != NULL)
                    *raw_line = strndup(line, len);
                return doc;
            }
            json_decref(doc);
        }
        line += len;
        if (*line == '\n')
            line++;
    }
    return NULL;
}

json_t *crmd_wait_access_log(const crmd_server *srv, const char *id, int timeout_ms,
                             char **raw_line)
{
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        char *log = crmd_read_log(srv);
        json_t *doc = find_access_line(log, id, raw_line);
        free(log);
        if (doc != NULL || harness_now_ms() >= deadline)
            return doc;
        harness_sleep_ms(20);
    }
}

/* ---- HTTP ----------------------------------------------------------------- */

typedef struct body_source {
    const char *data;
    size_t len, pos;
} body_source;

/* Hands out at most 1000 bytes per call, so a chunked body has chunks. */
static size_t read_body(char *dest, size_t size, size_t nitems, void *userdata)
{
    body_source *src = userdata;
    size_t n = size * nitems;
    if (n > 1000)
        n = 1000;
    if (n > src->len - src->pos)
        n = src->len - src->pos;
    memcpy(dest, src->data + src->pos, n);
    src->pos += n;
    return n;
}

static size_t collect_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_response *r = userdata;
    size_t n = size * nmemb;
    if (r->body_len + n + 1 > r->body_cap) { /* doubling: long bodies stay linear */
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *grown = realloc(r->body, cap);
        if (grown == NULL)
            return 0;
        r->body = grown;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static void clear_headers(http_response *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->header_names[i]);
        free(r->header_values[i]);
    }
    r->nheaders = 0;
}

static size_t collect_header(char *ptr, size_t size, size_t nitems, void *userdata)
{
    http_response *r = userdata;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) { /* a new response (after 1xx) */
        clear_headers(r);
        return n;
    }
    const char *colon = memchr(ptr, ':', n);
    if (colon == NULL)
        return n;
    const char *v = colon + 1, *end = ptr + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    char **names = realloc(r->header_names, (r->nheaders + 1) * sizeof *names);
    if (names == NULL)
        return 0;
    r->header_names = names;
    char **values = realloc(r->header_values, (r->nheaders + 1) * sizeof *values);
    if (values == NULL)
        return 0;
    r->header_values = values;
    r->header_names[r->nheaders] = strndup(ptr, (size_t)(colon - ptr));
    r->header_values[r->nheaders] = strndup(v, (size_t)(end - v));
    r->nheaders++;
    return n;
}

http_response http_send(const crmd_server *srv, const http_call *call)
{
    http_response r = {0};
    CURL *curl = call->curl;
    if (curl != NULL)
        curl_easy_reset(curl); /* keeps the connection cache */
    else
        curl = curl_easy_init();
    if (curl == NULL) {
        r.curl_code = CURLE_FAILED_INIT;
        return r;
    }

    char url[16384];
    snprintf(url, sizeof url, "%s%s", srv->base_url, call->path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     call->timeout_ms > 0 ? call->timeout_ms : (long)HARNESS_HTTP_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, r.curl_error);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);

    struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
    char line[256];
    if (call->api_key != NULL) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", call->api_key);
        headers = curl_slist_append(headers, line);
    }
    bool has_body = call->body != NULL || call->read_cb != NULL;
    if (has_body) {
        snprintf(line, sizeof line, "Content-Type: %s",
                 call->content_type ? call->content_type : "application/json");
        headers = curl_slist_append(headers, line);
    }
    for (const char *const *h = call->headers; h != NULL && *h != NULL; h++)
        headers = curl_slist_append(headers, *h);

    body_source src = {call->body, 0, 0};
    if (call->body != NULL) {
        src.len = call->body_len ? call->body_len : strlen(call->body);
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        if (call->chunked) {
            headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
            curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_body);
            curl_easy_setopt(curl, CURLOPT_READDATA, &src);
        } else {
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call->body);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)src.len);
        }
    } else if (call->read_cb != NULL) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, call->read_cb);
        curl_easy_setopt(curl, CURLOPT_READDATA, call->read_data);
        if (call->read_len >= 0)
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, call->read_len);
        else
            headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
    }

    const char *method = call->method ? call->method : has_body ? "POST" : "GET";
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, has_body ? "POST" : "GET") != 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

    r.curl_code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &r.num_connects);
    if (r.curl_code != CURLE_OK && r.curl_error[0] == '\0')
        snprintf(r.curl_error, sizeof r.curl_error, "%s", curl_easy_strerror(r.curl_code));
    /* Our buffers are about to go; the reused handle must not point at them. */
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    if (call->curl == NULL)
        curl_easy_cleanup(curl);
    if (r.body == NULL)
        r.body = calloc(1, 1);
    return r;
}

http_response http_get(const crmd_server *srv, const char *path, const char *key)
{
    http_call call = {.path = path, .api_key = key};
    return http_send(srv, &call);
}

http_response http_post_json(const crmd_server *srv, const char *path, const char *key,
                             const char *body)
{
    http_call call = {.path = path, .api_key = key, .body = body};
    return http_send(srv, &call);
}

http_response http_delete(const crmd_server *srv, const char *path, const char *key)
{
    http_call call = {.method = "DELETE", .path = path, .api_key = key};
    return http_send(srv, &call);
}

void http_response_free(http_response *r)
{
    clear_headers(r);
    free(r->header_names);
    free(r->header_values);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *http_response_header(const http_response *r, const char *name)
{
    for (size_t i = r->nheaders; i > 0; i--)
        if (strcasecmp(r->header_names[i - 1], name) == 0)
            return r->header_values[i - 1];
    return NULL;
}

json_t *http_response_json(const http_response *r)
{
    if (r->body == NULL)
        return NULL;
    return json_loadb(r->body, r->body_len, 0, NULL);
}

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

char *http_raw_exchange(const crmd_server *srv, const char *request, size_t *len, int timeout_ms)
{
    int fd = connect_loopback(srv->port);
    if (fd < 0)
        return NULL;
    size_t sent = 0, total = strlen(request);
    while (sent < total) {
        ssize_t n = send(fd, request + sent, total - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    size_t cap = 4096;
    char *buf = malloc(cap);
    *len = 0;
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - harness_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (*len + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + *len, cap - *len - 1, 0);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    buf[*len] = '\0';
    close(fd);
    return buf;
}

bool http_connect_refused(const crmd_server *srv)
{
    int fd = connect_loopback(srv->port);
    if (fd >= 0) {
        close(fd);
        return false;
    }
    return errno == ECONNREFUSED;
}

/* ---- API keys -------------------------------------------------------------- */

bool api_key_create(const char *scopes, api_key *out)
{
    static char db_var[1024];
    snprintf(db_var, sizeof db_var, "CRMD_DATABASE_URL=%s", harness_env("CRMD_TEST_DATABASE_URL"));
    const char *defaults[] = {db_var, "CRMD_LOG_LEVEL=warn", NULL};
    char *envp[MAX_ENV];
    build_env(envp, defaults, NULL);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return false;
    char *argv[] = {(char *)harness_env("CRMD_BIN"),
                    "keys",
                    "create",
                    "--name",
                    "t",
                    "--scopes",
                    (char *)scopes,
                    NULL};
    pid_t pid = spawn(argv, envp, fds[1], STDERR_FILENO);
    close(fds[1]);
    char output[1024];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof output - 1 && (n = read(fds[0], output + len, sizeof output - 1 - len)) > 0)
        len += (size_t)n;
    output[len] = '\0';
    close(fds[0]);
    int wstatus = 0;
    if (pid < 0 || waitpid(pid, &wstatus, 0) != pid || exit_code_of(wstatus) != 0) {
        fprintf(stderr, "api_tests: crmd keys create --scopes %s failed: %s\n", scopes, output);
        return false;
    }
    memset(out, 0, sizeof *out);
    size_t first = strcspn(output, "\n");
    const char *id = strstr(output, "\nid: ");
    const char *prefix = strstr(output, "\nprefix: ");
    if (first == 0 || first >= sizeof out->secret || id == NULL || prefix == NULL) {
        fprintf(stderr, "api_tests: unexpected output of crmd keys create: %s\n", output);
        return false;
    }
    memcpy(out->secret, output, first);
    out->id = atoll(id + 5);
    snprintf(out->prefix, sizeof out->prefix, "%.*s", (int)strcspn(prefix + 9, "\n"), prefix + 9);
    return true;
}

/* ---- assertions ------------------------------------------------------------- */

/* ck_assert_msg with the caller's position in front of the message. */
#define CHECK_AT(cond, fmt, ...)                                                                   \
    ck_assert_msg(cond, "%s:%d: " fmt, short_name(file), line, __VA_ARGS__)

static const char *short_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

json_t *assert_problem_at(const http_response *r, long status, const char *file, int line)
{
    CHECK_AT(r->curl_code == CURLE_OK, "transport failure: %s", r->curl_error);
    CHECK_AT(r->status == status, "expected HTTP %ld, got %ld: %.300s", status, r->status, r->body);
    const char *ct = http_response_header(r, "Content-Type");
    CHECK_AT(ct != NULL && strncmp(ct, "application/problem+json", 24) == 0,
             "HTTP %ld came as '%s', not application/problem+json", status, ct ? ct : "");
    json_t *doc = http_response_json(r);
    CHECK_AT(json_is_object(doc), "problem body is not a JSON object: %.300s", r->body);
    CHECK_AT(json_integer_value(json_object_get(doc, "status")) == status,
             "\"status\" differs from HTTP %ld: %.300s", status, r->body);
    const char *type = json_string_value(json_object_get(doc, "type"));
    CHECK_AT(type != NULL && type[0] != '\0', "problem without a type: %.300s", r->body);
    CHECK_AT(json_is_string(json_object_get(doc, "title")), "no title: %.300s", r->body);
    CHECK_AT(json_is_string(json_object_get(doc, "detail")), "no detail: %.300s", r->body);
    const char *instance = json_string_value(json_object_get(doc, "instance"));
    CHECK_AT(instance != NULL && instance[0] != '\0', "problem without an instance: %.300s",
             r->body);
    const char *rid = json_string_value(json_object_get(doc, "request_id"));
    const char *hdr = http_response_header(r, "X-Request-Id");
    CHECK_AT(rid != NULL && hdr != NULL && strcmp(rid, hdr) == 0,
             "request_id '%s' differs from X-Request-Id '%s'", rid ? rid : "", hdr ? hdr : "");
    return doc;
}

bool problem_names_field(json_t *problem, const char *field)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(problem, "errors"), i, e)
    {
        const char *f = json_string_value(json_object_get(e, "field"));
        if (f != NULL && strcmp(f, field) == 0)
            return true;
    }
    return false;
}

void harness_unique(char *buf, size_t size, const char *what)
{
    static unsigned serial;
    snprintf(buf, size, "%s%ld%u%08x", what, (long)getpid(), serial++, randombytes_random());
}

PGconn *harness_db_connect(void)
{
    PGconn *c = PQconnectdb(harness_env("CRMD_TEST_DATABASE_URL"));
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

long long harness_sql_number(PGconn *db, const char *sql, const char *param)
{
    const char *params[] = {param};
    PGresult *res = PQexecParams(db, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1, "%s: %s", sql,
                  PQresultErrorMessage(res));
    long long v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

void harness_cursor_secret_load(void)
{
    PGconn *db = harness_db_connect();
    PGresult *res = PQexec(db, "SELECT encode(secret, 'hex') FROM cursor_secret WHERE id = 1");
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1,
                  "no cursor secret: %s", PQresultErrorMessage(res));
    unsigned char key[CRM_CURSOR_SECRET_BYTES];
    size_t len = 0;
    ck_assert(sodium_hex2bin(key, sizeof key, PQgetvalue(res, 0, 0),
                             (size_t)PQgetlength(res, 0, 0), NULL, &len, NULL) == 0 &&
              len == sizeof key);
    crm_cursor_secret_set(key);
    PQclear(res);
    PQfinish(db);
}
