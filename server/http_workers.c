/*
 * http_workers.c — the worker pool: threads that run the handlers that may
 * block (writes, transactions) and check keys the cache did not hold.
 *
 * A request reaches a worker suspended, through the queue (whose mutex
 * orders the I/O thread's writes before the worker's reads). The worker owns
 * it until it resumes the connection: its last change of state is a release
 * store (req_set_state), and after the resume it touches nothing of the
 * request, which its I/O thread may finish and free at once.
 */
#include "http_internal.h"
#include "log.h"

#include <stdint.h>
#include <unistd.h>

void workers_enqueue(http_request *req)
{
    http_server *srv = req->srv;
    req->next = NULL;
    pthread_mutex_lock(&srv->work_mu);
    if (srv->work_tail != NULL)
        srv->work_tail->next = req;
    else
        srv->work_head = req;
    srv->work_tail = req;
    pthread_cond_signal(&srv->work_cv);
    pthread_mutex_unlock(&srv->work_mu);
}

static http_request *next_request(http_server *srv)
{
    pthread_mutex_lock(&srv->work_mu);
    while (srv->work_head == NULL && !srv->work_stop)
        pthread_cond_wait(&srv->work_cv, &srv->work_mu);
    http_request *req = srv->work_head;
    if (req != NULL) {
        srv->work_head = req->next;
        if (srv->work_head == NULL)
            srv->work_tail = NULL;
    }
    pthread_mutex_unlock(&srv->work_mu);
    return req;
}

/* Does what the request came for: a key check at headers time (then back
 * to its I/O thread to read the body, which an unknown key never gets to
 * send), or the handler. */
static void serve(http_request *req)
{
    if (req_get_state(req) == REQ_AUTHENTICATING) {
        if (admit_unchecked_key(req) && admit_body_budget(req))
            req_set_state(req, REQ_READING_BODY);
        return;
    }
    req->match.route->handler(req);
    req_check_answered(req);
}

void *worker_main(void *arg)
{
    http_server *srv = arg;
    http_request *req;
    while ((req = next_request(srv)) != NULL) {
        serve(req);
        /* Read before the resume: the owner may free req right after it. */
        io_thread *io = req->io;
        MHD_resume_connection(req->conn);
        io_kick(io);
    }
    return NULL;
}
