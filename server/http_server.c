/*
 * http_server.c — starting and stopping the HTTP edge: the I/O threads with
 * their daemons and database loops, the workers, and figures for /metrics.
 */
#include "http_internal.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* The running server, for /metrics. One per process. */
static http_server *current_server;

/* Keep the path percent-encoded: the router splits on '/' first and decodes
 * each segment, so "%2F" inside an external id stays inside its segment. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* fmt is libmicrohttpd's own format string (the attribute tells clang's
 * -Wformat-nonliteral so). */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    crm_log(CRM_LOG_WARN, "libmicrohttpd: %s", msg);
}

void http_server_stats(int *connections, int *in_flight)
{
    *connections = 0;
    *in_flight = 0;
    http_server *srv = current_server;
    if (srv == NULL)
        return;
    for (int i = 0; i < srv->nio; i++) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(srv->io[i].daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info != NULL)
            *connections += (int)info->num_connections;
    }
    *in_flight = atomic_load(&srv->in_flight);
}

/* Each I/O thread counts its own connections (the kernel spreads them over
 * the threads' sockets): each allows its share of the per-address cap,
 * rounded up. 0: no cap. */
static unsigned per_ip_limit(const http_server *srv)
{
    int cap = srv->cfg->max_connections_per_ip;
    return cap == 0 ? 0u : (unsigned)((cap + srv->nio - 1) / srv->nio);
}

static struct MHD_Daemon *start_daemon(http_server *srv, const struct sockaddr_in *addr,
                                       unsigned connection_limit)
{
    const crmd_config *cfg = srv->cfg;
    /* Room for the request line and headers we accept plus a read buffer;
     * libmicrohttpd answers 431/414 itself (in HTML) only beyond our own
     * limits. Not more: it zeroes the whole pool after every request, and a
     * pool of 850 KB halved the throughput of point reads. Query strings
     * with more arguments than the pool could hold are cut short first
     * (http_uri_seen). */
    size_t memory_limit = cfg->max_header_bytes + cfg->max_url_bytes + 8 * 1024;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, http_access_handler, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)addr, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        1u, MHD_OPTION_CONNECTION_LIMIT, connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory_limit,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_NOTIFY_COMPLETED, http_request_completed,
        srv, MHD_OPTION_NOTIFY_CONNECTION, http_connection_notify, srv,
        MHD_OPTION_URI_LOG_CALLBACK, http_uri_seen, NULL,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip_limit(srv), MHD_OPTION_UNESCAPE_CALLBACK,
        keep_escaped, NULL, MHD_OPTION_END);
}

static bool io_thread_init(io_thread *io, http_server *srv, const struct sockaddr_in *addr,
                           const crm_db_config *dbcfg, crm_error *err)
{
    const crmd_config *cfg = srv->cfg;
    io->srv = srv;
    io->epfd = io->wakefd = io->kickfd = -1;
    unsigned limit = (unsigned)(cfg->max_connections / srv->nio);
    io->daemon = start_daemon(srv, addr, limit > 0 ? limit : 1);
    if (io->daemon == NULL)
        return crm_error_set(err, CRM_E_UNAVAILABLE, "cannot listen on %s:%d", cfg->listen_host,
                             ntohs(addr->sin_port));
    /* The loops run the read routes: their own, shorter statement timeout
     * (review C10), so that a heavy page gives its connection back soon. */
    crm_db_config loopcfg = *dbcfg;
    loopcfg.statement_timeout_ms = cfg->read_timeout_ms;
    io->loop = crm_dbloop_new(&loopcfg, cfg->async_pool_size, err);
    if (io->loop == NULL)
        return false;
    io->epfd = epoll_create1(EPOLL_CLOEXEC);
    io->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    io->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(io->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (io->epfd < 0 || io->wakefd < 0 || io->kickfd < 0 || info == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "cannot create an I/O thread's epoll");
    /* data.ptr tells the sources apart: NULL for the two that only wake the
     * loop, the eventfds by address, a client connection by its watch. */
    int fds[] = {info->epoll_fd, crm_dbloop_fd(io->loop), io->wakefd, io->kickfd};
    void *tags[] = {NULL, NULL, &io->wakefd, &io->kickfd};
    for (int i = 0; i < 4; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tags[i]};
        if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fds[i], &ev) != 0)
            return crm_error_set(err, CRM_E_INTERNAL, "cannot watch an I/O thread's events");
    }
    return true;
}

static void io_thread_release(io_thread *io)
{
    if (io->daemon != NULL)
        MHD_stop_daemon(io->daemon);
    crm_dbloop_free(io->loop);
    if (io->epfd >= 0)
        close(io->epfd);
    if (io->wakefd >= 0)
        close(io->wakefd);
    if (io->kickfd >= 0)
        close(io->kickfd);
}

/* The I/O threads share the port through SO_REUSEPORT, which would also let
 * them share it, silently, with another process of the same user (a second
 * crmd started by mistake). A plain bind first tells whether the port is free. */
static bool port_is_free(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return true; /* let the real bind report the problem */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bool free_port = bind(fd, (const struct sockaddr *)addr, sizeof *addr) == 0;
    close(fd);
    return free_port;
}

http_server *http_server_start(const crmd_config *cfg, const crm_db_config *dbcfg, crm_error *err)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->listen_port)};
    if (inet_pton(AF_INET, cfg->listen_host, &addr.sin_addr) != 1) {
        crm_error_set(err, CRM_E_INVALID, "CRMD_LISTEN host must be an IPv4 address, got '%s'",
                      cfg->listen_host);
        return NULL;
    }
    if (cfg->listen_port != 0 && !port_is_free(&addr)) {
        crm_error_set(err, CRM_E_UNAVAILABLE, "cannot listen on %s:%d: the address is in use",
                      cfg->listen_host, cfg->listen_port);
        return NULL;
    }
    http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    srv->cfg = cfg;
    srv->nio = cfg->io_threads;
    srv->nworkers = cfg->threads;
    srv->io = calloc((size_t)srv->nio, sizeof *srv->io);
    srv->workers = calloc((size_t)srv->nworkers, sizeof *srv->workers);
    /* No descriptors yet: a failed start must not close fd 0 for a thread
     * whose init never ran. */
    for (int i = 0; srv->io != NULL && i < srv->nio; i++)
        srv->io[i].epfd = srv->io[i].wakefd = srv->io[i].kickfd = -1;
    pthread_mutex_init(&srv->work_mu, NULL);
    pthread_cond_init(&srv->work_cv, NULL);
    router_init();

    bool ok = srv->io != NULL && srv->workers != NULL && metrics_init();
    for (int i = 0; ok && i < srv->nio; i++) {
        ok = io_thread_init(&srv->io[i], srv, &addr, dbcfg, err);
        if (ok && i == 0) { /* the others bind the port the first one got */
            const union MHD_DaemonInfo *info =
                MHD_get_daemon_info(srv->io[0].daemon, MHD_DAEMON_INFO_BIND_PORT);
            srv->port = info ? info->port : cfg->listen_port;
            addr.sin_port = htons((uint16_t)srv->port);
        }
    }
    /* Published before the threads start, which read it (/metrics). */
    current_server = srv;
    int started_io = 0, started_workers = 0;
    while (ok && started_io < srv->nio) {
        ok = pthread_create(&srv->io[started_io].thread, NULL, io_main, &srv->io[started_io]) == 0;
        started_io += ok;
    }
    while (ok && started_workers < srv->nworkers) {
        ok = pthread_create(&srv->workers[started_workers], NULL, worker_main, srv) == 0;
        started_workers += ok;
    }
    if (!ok) {
        if (err->code == CRM_OK)
            crm_error_set(err, CRM_E_INTERNAL, "cannot start the HTTP threads");
        srv->nio = started_io;
        srv->nworkers = started_workers;
        http_server_stop(srv);
        return NULL;
    }
    return srv;
}

int http_server_port(const http_server *srv)
{
    return srv->port;
}

void http_server_stop(http_server *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->stopping, true);
    for (int i = 0; i < srv->nio; i++) {
        if (srv->io[i].daemon == NULL)
            continue;
        MHD_socket listen_fd = MHD_quiesce_daemon(srv->io[i].daemon);
        if (listen_fd != MHD_INVALID_SOCKET)
            close(listen_fd);
    }
    /* Let requests already started finish; new requests on kept-alive
     * connections are still answered, with Connection: close. */
    long waited_ms = 0, limit_ms = (long)srv->cfg->shutdown_timeout_s * 1000;
    while (atomic_load(&srv->in_flight) > 0 && waited_ms < limit_ms) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
        waited_ms += 10;
    }
    if (atomic_load(&srv->in_flight) > 0)
        crm_log(CRM_LOG_WARN, "shutdown timeout: %d requests still in flight",
                atomic_load(&srv->in_flight));
    /* The deadline: each I/O thread fails its database loop's statements,
     * lets their requests answer 503, and ends once none is suspended
     * (io_main). Workers keep running until then: a request on a worker
     * comes back to its I/O thread before that thread may stop. */
    atomic_store(&srv->abandon, true);
    for (int i = 0; i < srv->nio; i++) {
        uint64_t one = 1;
        ssize_t rc = write(srv->io[i].wakefd, &one, sizeof one);
        (void)rc;
    }
    for (int i = 0; i < srv->nio; i++)
        pthread_join(srv->io[i].thread, NULL);
    pthread_mutex_lock(&srv->work_mu);
    srv->work_stop = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->work_mu);
    for (int i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    for (int i = 0; srv->io != NULL && i < srv->cfg->io_threads; i++)
        io_thread_release(&srv->io[i]);
    pthread_mutex_destroy(&srv->work_mu);
    pthread_cond_destroy(&srv->work_cv);
    current_server = NULL;
    free(srv->io);
    free(srv->workers);
    free(srv);
}
