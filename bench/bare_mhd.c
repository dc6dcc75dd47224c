/* bare_mhd.c - the ceiling for bench/serve.sh: libmicrohttpd configured as lambda-serve is
 * (internal polling thread, epoll, a pool of THREADS threads, default 2) answering every request
 * with the same 200-byte JSON document on the second call of its access handler, as
 * lambda-serve does. Prints "port=N" on stdout once listening; SIGTERM stops it.
 *
 *   bare_mhd [THREADS] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

static char body[201];

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    static int seen;

    (void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    if (*req_cls != &seen) { /* answer on the second call, or MHD closes the connection */
        *req_cls = &seen;
        return MHD_YES;
    }
    r = MHD_create_response_from_buffer(200, body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 2u;
    struct MHD_Daemon *d;
    sigset_t stop;
    int sig;

    snprintf(body, sizeof(body),
             "{\"merchant_id\":\"m-04242\",\"order_count\":1050,"
             "\"revenue_cents\":1834200,\"note\":\"");
    memset(body + strlen(body), 'x', 200 - strlen(body) - 2);
    memcpy(body + 198, "\"}", 2);
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, on_request,
                         NULL, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
                         512u, MHD_OPTION_END);
    if (!d)
        return 1;
    printf("port=%u\n", MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
    fflush(stdout);
    sigwait(&stop, &sig);
    MHD_stop_daemon(d);
    return 0;
}
