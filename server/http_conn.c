/*
 * http_conn.c — deadlines and departures of client connections.
 *
 * libmicrohttpd's own timeout (CRMD_CONNECTION_TIMEOUT_S) counts idle time
 * only: a client sending one header byte a second is never idle, and 4,096
 * connections that send nothing hold every slot for a minute. So each
 * connection has a phase with a deadline: its headers must be in within
 * CRMD_HEADER_TIMEOUT_S of the accept (of the last answer plus the idle
 * allowance, on a kept-alive connection), and its body within
 * CRMD_BODY_TIMEOUT_S of the headers. Past it the connection is shut down;
 * libmicrohttpd sees the end of the stream and closes it.
 *
 * The same shutdown drops a client that closed its side mid-request: the
 * socket is also in the I/O thread's own epoll for EPOLLRDHUP, since
 * libmicrohttpd (edge-triggered) does not read again after a FIN that came
 * with the last data and would hold the request until its idle timeout.
 */
#include "http_internal.h"
#include "log.h"

#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

long long monotonic_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void enter(conn_watch *w, conn_phase phase, long long within_ms)
{
    w->phase = phase;
    w->deadline_ms = monotonic_ms() + within_ms;
}

void conn_set_phase(http_request *req, conn_phase phase)
{
    conn_watch *w = req->watch;
    if (w == NULL || w->phase == phase)
        return;
    const crmd_config *cfg = req->srv->cfg;
    switch (phase) {
    case CONN_WAIT_HEADERS:
        /* Kept alive: idle for up to the idle timeout (libmicrohttpd's),
         * then the next request's headers. */
        enter(w, phase, ((long long)cfg->connection_timeout_s + cfg->header_timeout_s) * 1000);
        break;
    case CONN_READING_BODY:
        enter(w, phase, (long long)cfg->body_timeout_s * 1000);
        break;
    case CONN_BUSY:
        w->phase = phase;
        break;
    }
}

static void unlink_hup(conn_watch *w)
{
    if (!w->peer_closed)
        return;
    for (conn_watch **p = &w->io->hup; *p != NULL; p = &(*p)->hup_next)
        if (*p == w) {
            *p = w->hup_next;
            break;
        }
    w->peer_closed = false;
}

static void forget(conn_watch *w)
{
    io_thread *io = w->io;
    unlink_hup(w);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        io->watches = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    epoll_ctl(io->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    free(w);
}

void http_connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
    http_server *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (*socket_context != NULL)
            forget(*socket_context);
        *socket_context = NULL;
        return;
    }
    io_thread *io = http_current_io;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_watch *w = io != NULL && info != NULL ? calloc(1, sizeof *w) : NULL;
    if (w == NULL)
        return; /* no deadlines for this one; libmicrohttpd's idle timeout remains */
    w->io = io;
    w->fd = info->connect_fd;
    enter(w, CONN_WAIT_HEADERS, (long long)srv->cfg->header_timeout_s * 1000);
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = w};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, w->fd, &ev) != 0) {
        free(w);
        return;
    }
    w->next = io->watches;
    if (io->watches != NULL)
        io->watches->prev = w;
    io->watches = w;
    *socket_context = w;
}

void conn_on_event(conn_watch *w, uint32_t events)
{
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !w->peer_closed) {
        w->peer_closed = true;
        w->hup_next = w->io->hup;
        w->io->hup = w;
    }
}

/* Ends the connection: libmicrohttpd reads the end of the stream and
 * closes it (completing its request, if any). */
static void cut(conn_watch *w, const char *why)
{
    if (w->cut)
        return;
    w->cut = true;
    crm_log(CRM_LOG_DEBUG, "closing a client connection: %s", why);
    shutdown(w->fd, SHUT_RDWR);
}

void conn_sweep(io_thread *io)
{
    /* A client that closed its side cannot finish its headers or body;
     * one whose request is complete still gets its answer. */
    while (io->hup != NULL) {
        conn_watch *w = io->hup;
        io->hup = w->hup_next;
        w->peer_closed = false;
        if (w->phase != CONN_BUSY)
            cut(w, "the client closed it mid-request");
    }
    long long now = monotonic_ms();
    if (now < io->next_sweep_ms)
        return;
    io->next_sweep_ms = now + 1000;
    for (conn_watch *w = io->watches; w != NULL; w = w->next)
        if (w->phase != CONN_BUSY && now >= w->deadline_ms)
            cut(w, w->phase == CONN_WAIT_HEADERS ? "headers too slow" : "body too slow");
}
