
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * A Redis client on nginx's event loop, for the state that servers of a
 * fleet share: budgets, cooldowns.  Each worker keeps up to keepalive
 * connections to a server, opened when first needed, and pipelines
 * commands on them: a reply answers the oldest command waiting.  No
 * call blocks: connections are nginx's (ngx_event_connect_peer()), the
 * address was resolved with the configuration, and a request that waits
 * for a reply has a timer of its own (see budget.c).
 *
 * Not hiredis: Debian's 0.14 has no timeouts in its asynchronous API,
 * allocates outside nginx's pools and resolves names with a blocking
 * getaddrinfo().  The protocol is in the core (llmr_resp.c).
 *
 * A server that fails (no connection, an error, no reply in time) is
 * down: budgets fall back to the zone, and it is tried again at most
 * once a second.  Its first reply after that reconciles the spend the
 * zone kept meanwhile.
 */


#include "ngx_http_llm_router_module.h"


#define NGX_HTTP_LLM_ROUTER_REDIS_BUF    8192
#define NGX_HTTP_LLM_ROUTER_REDIS_RETRY  1000
#define NGX_HTTP_LLM_ROUTER_REDIS_POLL   1000


static ngx_int_t ngx_http_llm_router_redis_connect(
    ngx_http_llm_router_redis_conn_t *rc);
static ngx_int_t ngx_http_llm_router_redis_hello(
    ngx_http_llm_router_redis_conn_t *rc);
static void ngx_http_llm_router_redis_write(ngx_event_t *wev);
static void ngx_http_llm_router_redis_read(ngx_event_t *rev);
static void ngx_http_llm_router_redis_reply(
    ngx_http_llm_router_redis_cmd_t *cmd, llmr_resp_t *reply);
static void ngx_http_llm_router_redis_fail(
    ngx_http_llm_router_redis_conn_t *rc, const char *reason);
static void ngx_http_llm_router_redis_close(
    ngx_http_llm_router_redis_conn_t *rc);
static void ngx_http_llm_router_redis_up(ngx_http_llm_router_redis_t *redis);
static ngx_uint_t ngx_http_llm_router_redis_used(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_redis_t *redis);
static void ngx_http_llm_router_redis_poll(ngx_event_t *ev);
static u_char *ngx_http_llm_router_redis_family(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, const char *name,
    const char *help, const char *type, ngx_atomic_t *values);
static ngx_atomic_t *ngx_http_llm_router_redis_shm(
    ngx_http_llm_router_redis_t *redis, ngx_uint_t errors);


/*
 * llm_router_redis NAME server=HOST:PORT|unix:PATH [password_file=FILE]
 *     [db=N] [timeout=200ms] [keepalive=1];
 */

char *
ngx_http_llm_router_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    ngx_int_t                     v;
    ngx_str_t                    *value, s, file, what;
    ngx_url_t                     u;
    ngx_uint_t                    i;
    ngx_http_llm_router_redis_t  *redis;

    value = cf->args->elts;

    if (ngx_http_llm_router_find(&lmcf->redis, &value[1]) != NGX_ERROR) {
        return "is duplicate";
    }

    if (lmcf->redis.nelts == NGX_HTTP_LLM_ROUTER_REDIS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "more than %d \"llm_router_redis\"",
                           NGX_HTTP_LLM_ROUTER_REDIS_MAX);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_router_check_label(cf, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    redis = ngx_array_push(&lmcf->redis);
    if (redis == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(redis, sizeof(ngx_http_llm_router_redis_t));
    redis->name = value[1];
    redis->index = lmcf->redis.nelts - 1;
    redis->timeout = 200;
    redis->keepalive = 1;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "server=", 7) == 0) {
            ngx_memzero(&u, sizeof(ngx_url_t));
            u.url.data = value[i].data + 7;
            u.url.len = value[i].len - 7;
            u.default_port = 6379;

            /* the name is resolved now, never by a worker */

            if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s in \"%V\" of \"llm_router_redis\"",
                                   u.err ? u.err : "invalid server",
                                   &u.url);
                return NGX_CONF_ERROR;
            }

            redis->addr = u.addrs;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            file.data = value[i].data + 14;
            file.len = value[i].len - 14;

            ngx_str_set(&what, "\"password_file\" of llm_router_redis");

            /* read by the master, as the keys of models are */

            if (ngx_http_llm_router_read_secret(cf, &file, &what,
                                                &redis->password)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            v = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (v == NGX_ERROR) {
                goto invalid;
            }

            redis->db = v;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            redis->timeout = ngx_parse_time(&s, 0);

            if (redis->timeout == (ngx_msec_t) NGX_ERROR
                || redis->timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "keepalive=", 10) == 0) {
            v = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (v == NGX_ERROR || v == 0 || v > 64) {
                goto invalid;
            }

            redis->keepalive = v;
            continue;
        }

    invalid:

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"llm_router_redis\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (redis->addr == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router_redis\" \"%V\" needs server=",
                           &redis->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * "zone" or "redis:NAME", of store= and llm_router_cooldown_store; what
 * names the directive, for the messages
 */

ngx_int_t
ngx_http_llm_router_redis_resolve(ngx_conf_t *cf, ngx_str_t *store,
    ngx_str_t *what, ngx_http_llm_router_redis_t **redis)
{
    ngx_int_t                         i;
    ngx_str_t                         name;
    ngx_http_llm_router_main_conf_t  *lmcf;

    *redis = NULL;

    if (store->len == 0
        || (store->len == 4 && ngx_strncmp(store->data, "zone", 4) == 0))
    {
        return NGX_OK;
    }

    if (store->len <= 6 || ngx_strncmp(store->data, "redis:", 6) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "invalid store \"%V\" in %V: \"zone\" or "
                      "\"redis:NAME\" expected", store, what);
        return NGX_ERROR;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    name.data = store->data + 6;
    name.len = store->len - 6;

    i = ngx_http_llm_router_find(&lmcf->redis, &name);

    if (i == NGX_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "unknown \"llm_router_redis\" \"%V\" in %V", &name,
                      what);
        return NGX_ERROR;
    }

    *redis = (ngx_http_llm_router_redis_t *) lmcf->redis.elts + i;

    return NGX_OK;
}


/* a worker starts: its connections, none open yet */

ngx_int_t
ngx_http_llm_router_redis_init(ngx_cycle_t *cycle)
{
    ngx_uint_t                         i, k;
    ngx_http_llm_router_redis_t       *redis;
    ngx_http_llm_router_main_conf_t   *lmcf;
    ngx_http_llm_router_redis_conn_t  *rc;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_router_module);
    if (lmcf == NULL) {
        return NGX_OK;
    }

    redis = lmcf->redis.elts;

    for (i = 0; i < lmcf->redis.nelts; i++) {
        rc = ngx_pcalloc(cycle->pool,
                         redis[i].keepalive
                         * sizeof(ngx_http_llm_router_redis_conn_t));
        if (rc == NULL) {
            return NGX_ERROR;
        }

        for (k = 0; k < redis[i].keepalive; k++) {
            rc[k].redis = &redis[i];
            ngx_queue_init(&rc[k].out);
            ngx_queue_init(&rc[k].sent);

            rc[k].in = ngx_create_temp_buf(cycle->pool,
                                           NGX_HTTP_LLM_ROUTER_REDIS_BUF);
            if (rc[k].in == NULL) {
                return NGX_ERROR;
            }
        }

        redis[i].conns = rc;

        if (lmcf->shm && ngx_http_llm_router_redis_used(lmcf, &redis[i])) {
            ngx_http_llm_router_event(&redis[i].poll,
                                      ngx_http_llm_router_redis_poll, &redis[i],
                                      cycle->log);
            redis[i].poll.cancelable = 1;

            ngx_add_timer(&redis[i].poll, NGX_HTTP_LLM_ROUTER_REDIS_POLL);
        }
    }

    return NGX_OK;
}


/* a server that budgets or cooldowns keep state in: one to read from */

static ngx_uint_t
ngx_http_llm_router_redis_used(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_redis_t *redis)
{
    ngx_uint_t                     i;
    ngx_http_llm_router_budget_t  *b;

    if (lmcf->cooldown_redis == redis) {
        return 1;
    }

    b = lmcf->budgets.elts;

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        if (b[i].redis == redis) {
            return 1;
        }
    }

    return 0;
}


/*
 * Every second, the first worker of a server whose timer comes reads
 * for all of them what other servers changed: the cooldowns, and the
 * fleet's spend of the keys this server holds.
 */

static void
ngx_http_llm_router_redis_poll(ngx_event_t *ev)
{
    ngx_http_llm_router_redis_t *redis = ev->data;

    ngx_msec_t                        last;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_main_conf_t  *lmcf;

    ngx_add_timer(ev, NGX_HTTP_LLM_ROUTER_REDIS_POLL);

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);
    shm = lmcf->shm;
    last = shm->redis_polled[redis->index];

    if (ngx_current_msec - last < NGX_HTTP_LLM_ROUTER_REDIS_POLL
        || !ngx_atomic_cmp_set(&shm->redis_polled[redis->index], last,
                               ngx_current_msec)
        || !ngx_http_llm_router_redis_available(redis))
    {
        return;
    }

    if (lmcf->cooldown_redis == redis) {
        ngx_http_llm_router_cooldown_refresh(lmcf);
    }

    ngx_http_llm_router_spend_refresh(redis);
}


/* the worker exits: no socket is left open behind it */

void
ngx_http_llm_router_redis_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i, k;
    ngx_http_llm_router_redis_t      *redis;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_router_module);
    if (lmcf == NULL) {
        return;
    }

    redis = lmcf->redis.elts;

    for (i = 0; i < lmcf->redis.nelts; i++) {
        for (k = 0; redis[i].conns && k < redis[i].keepalive; k++) {
            ngx_http_llm_router_redis_close(&redis[i].conns[k]);
        }
    }
}


/* down, a request does not wait for it: but once a second, it is tried */

ngx_int_t
ngx_http_llm_router_redis_available(ngx_http_llm_router_redis_t *redis)
{
    return !redis->down
           || (ngx_msec_int_t) (ngx_current_msec - redis->retry) >= 0;
}


/*
 * A command of argc strings, and extra bytes for its caller after it,
 * in memory of its own: it may outlive the request that made it.
 */

ngx_http_llm_router_redis_cmd_t *
ngx_http_llm_router_redis_command(ngx_http_llm_router_redis_t *redis,
    ngx_uint_t argc, llmr_str_t *argv, size_t extra)
{
    size_t                            len;
    ngx_http_llm_router_redis_cmd_t  *cmd;

    len = llmr_resp_command_size(argc, argv);

    cmd = ngx_alloc(sizeof(ngx_http_llm_router_redis_cmd_t) + len + extra,
                    ngx_cycle->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_llm_router_redis_cmd_t));

    cmd->redis = redis;
    cmd->pos = (u_char *) (cmd + 1);
    cmd->last = llmr_resp_command(cmd->pos, argc, argv);

    return cmd;
}


/*
 * The command goes on the connection with the fewest commands waiting;
 * it is written from the connection's write event, never from here, so
 * that a failure never runs into its caller.  NGX_OK, or NGX_DECLINED:
 * the server is down, and the command is freed.
 */

ngx_int_t
ngx_http_llm_router_redis_send(ngx_http_llm_router_redis_cmd_t *cmd)
{
    ngx_uint_t                         i;
    ngx_http_llm_router_redis_t       *redis;
    ngx_http_llm_router_redis_conn_t  *rc;

    redis = cmd->redis;

    if (!ngx_http_llm_router_redis_available(redis) || redis->conns == NULL) {
        ngx_free(cmd);
        return NGX_DECLINED;
    }

    rc = &redis->conns[redis->next];
    redis->next = (redis->next + 1) % redis->keepalive;

    for (i = 0; i < redis->keepalive; i++) {
        if (redis->conns[i].peer.connection
            && ngx_queue_empty(&redis->conns[i].sent)
            && ngx_queue_empty(&redis->conns[i].out))
        {
            rc = &redis->conns[i];
            break;
        }
    }

    if (rc->peer.connection == NULL
        && ngx_http_llm_router_redis_connect(rc) != NGX_OK)
    {
        ngx_free(cmd);
        return NGX_DECLINED;
    }

    ngx_queue_insert_tail(&rc->out, &cmd->queue);

    rc->peer.connection->idle = 0;

    ngx_post_event(rc->peer.connection->write, &ngx_posted_events);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_redis_connect(ngx_http_llm_router_redis_conn_t *rc)
{
    ngx_int_t                     rv;
    ngx_connection_t             *c;
    ngx_peer_connection_t        *pc;
    ngx_http_llm_router_redis_t  *redis;

    redis = rc->redis;
    pc = &rc->peer;

    ngx_memzero(pc, sizeof(ngx_peer_connection_t));

    pc->sockaddr = redis->addr->sockaddr;
    pc->socklen = redis->addr->socklen;
    pc->name = &redis->addr->name;
    pc->get = ngx_event_get_peer;
    pc->log = ngx_cycle->log;

    /* the module says once a minute what nginx would say at each try */
    pc->log_error = NGX_ERROR_INFO;

    rv = ngx_event_connect_peer(pc);

    if (rv == NGX_ERROR || rv == NGX_BUSY || rv == NGX_DECLINED) {
        if (pc->connection) {
            ngx_close_connection(pc->connection);
            pc->connection = NULL;
        }

        ngx_http_llm_router_redis_error(redis, "could not be connected to",
                                        NULL);
        return NGX_ERROR;
    }

    c = pc->connection;
    c->data = rc;
    c->read->handler = ngx_http_llm_router_redis_read;
    c->write->handler = ngx_http_llm_router_redis_write;
    c->sendfile = 0;

    rc->in->pos = rc->in->start;
    rc->in->last = rc->in->start;

    if (rv == NGX_AGAIN) {
        ngx_add_timer(c->write, redis->timeout);
    }

    if (ngx_http_llm_router_redis_hello(rc) != NGX_OK) {
        ngx_http_llm_router_redis_close(rc);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* AUTH and SELECT first, when the configuration has them */

static ngx_int_t
ngx_http_llm_router_redis_hello(ngx_http_llm_router_redis_conn_t *rc)
{
    u_char                            db[NGX_INT_T_LEN];
    llmr_str_t                        argv[2];
    ngx_http_llm_router_redis_t      *redis;
    ngx_http_llm_router_redis_cmd_t  *cmd;

    redis = rc->redis;

    if (redis->password.len) {
        argv[0].data = (u_char *) "AUTH";
        argv[0].len = 4;
        argv[1].data = redis->password.data;
        argv[1].len = redis->password.len;

        cmd = ngx_http_llm_router_redis_command(redis, 2, argv, 0);
        if (cmd == NULL) {
            return NGX_ERROR;
        }

        cmd->handler = ngx_http_llm_router_redis_ignore;
        ngx_queue_insert_tail(&rc->out, &cmd->queue);
    }

    if (redis->db) {
        argv[0].data = (u_char *) "SELECT";
        argv[0].len = 6;
        argv[1].data = db;
        argv[1].len = ngx_sprintf(db, "%ui", redis->db) - db;

        cmd = ngx_http_llm_router_redis_command(redis, 2, argv, 0);
        if (cmd == NULL) {
            return NGX_ERROR;
        }

        cmd->handler = ngx_http_llm_router_redis_ignore;
        ngx_queue_insert_tail(&rc->out, &cmd->queue);
    }

    return NGX_OK;
}


/*
 * The reply of a command nobody waits for (AUTH, SELECT, a cooldown): an
 * error was counted; a cooldown not shared is still this server's.
 */

void
ngx_http_llm_router_redis_ignore(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply)
{
}


static void
ngx_http_llm_router_redis_write(ngx_event_t *wev)
{
    ssize_t                            n;
    ngx_queue_t                       *q;
    ngx_connection_t                  *c;
    ngx_http_llm_router_redis_cmd_t   *cmd;
    ngx_http_llm_router_redis_conn_t  *rc;

    c = wev->data;
    rc = c->data;

    if (wev->timedout) {
        ngx_http_llm_router_redis_fail(rc, "could not be connected to in "
                                           "time");
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    while (!ngx_queue_empty(&rc->out)) {
        q = ngx_queue_head(&rc->out);
        cmd = ngx_queue_data(q, ngx_http_llm_router_redis_cmd_t, queue);

        n = c->send(c, cmd->pos, cmd->last - cmd->pos);

        if (n == NGX_ERROR) {
            ngx_http_llm_router_redis_fail(rc, "could not be written to");
            return;
        }

        if (n == NGX_AGAIN) {
            break;
        }

        cmd->pos += n;

        if (cmd->pos == cmd->last) {
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&rc->sent, q);
        }
    }

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_http_llm_router_redis_fail(rc, "could not be written to");
    }
}


static void
ngx_http_llm_router_redis_read(ngx_event_t *rev)
{
    size_t                             used;
    ssize_t                            n;
    ngx_int_t                          rv;
    ngx_buf_t                         *b;
    ngx_queue_t                       *q;
    llmr_resp_t                        reply;
    ngx_connection_t                  *c;
    ngx_http_llm_router_redis_cmd_t   *cmd;
    ngx_http_llm_router_redis_conn_t  *rc;

    c = rev->data;
    rc = c->data;
    b = rc->in;

    /* nginx closes idle connections when it shuts down */

    if (c->close) {
        ngx_http_llm_router_redis_close(rc);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, b->last, b->end - b->last);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_llm_router_redis_fail(rc, "closed the connection");
            return;
        }

        b->last += n;

        for ( ;; ) {
            rv = llmr_resp_parse(b->pos, b->last - b->pos, &reply, &used);

            if (rv == LLMR_AGAIN) {
                break;
            }

            if (rv == LLMR_ERROR || ngx_queue_empty(&rc->sent)) {
                ngx_http_llm_router_redis_fail(rc, "sent what is no reply");
                return;
            }

            q = ngx_queue_head(&rc->sent);
            ngx_queue_remove(q);
            cmd = ngx_queue_data(q, ngx_http_llm_router_redis_cmd_t, queue);

            ngx_http_llm_router_redis_reply(cmd, &reply);

            /* a reply's text points into the buffer: used after it */
            b->pos += used;
        }

        if (b->pos == b->last) {
            b->pos = b->start;
            b->last = b->start;

        } else if (b->last == b->end) {
            if (b->pos == b->start) {
                ngx_http_llm_router_redis_fail(rc, "sent too long a reply");
                return;
            }

            b->last = ngx_movemem(b->start, b->pos, b->last - b->pos);
            b->pos = b->start;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_llm_router_redis_fail(rc, "could not be read from");
        return;
    }

    /* nothing waited for: nginx may close it when it shuts down */

    c->idle = ngx_queue_empty(&rc->sent) && ngx_queue_empty(&rc->out);

    if (c->idle && ngx_exiting) {
        ngx_http_llm_router_redis_close(rc);
    }
}


/* a reply, of a command or of an error of Redis's: the server is up */

static void
ngx_http_llm_router_redis_reply(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply)
{
    ngx_str_t                     answer;
    ngx_http_llm_router_redis_t  *redis;

    redis = cmd->redis;

    if (reply->type == LLMR_RESP_ERROR) {
        answer.data = (u_char *) reply->text.data;
        answer.len = ngx_min(reply->text.len, 256);

        ngx_http_llm_router_redis_error(redis, "answered", &answer);
        cmd->handler(cmd, NULL);

    } else {
        ngx_http_llm_router_redis_up(redis);
        cmd->handler(cmd, reply);
    }

    ngx_free(cmd);
}


/*
 * The connection is lost: every command on it gets no reply.  Their
 * handlers may send commands of their own: the server is down by then,
 * and those are declined.
 */

static void
ngx_http_llm_router_redis_fail(ngx_http_llm_router_redis_conn_t *rc,
    const char *reason)
{
    ngx_http_llm_router_redis_error(rc->redis, reason, NULL);
    ngx_http_llm_router_redis_close(rc);
}


static void
ngx_http_llm_router_redis_close(ngx_http_llm_router_redis_conn_t *rc)
{
    ngx_queue_t                      *q;
    ngx_http_llm_router_redis_cmd_t  *cmd;

    if (rc->peer.connection) {
        ngx_close_connection(rc->peer.connection);
        rc->peer.connection = NULL;
    }

    while (!ngx_queue_empty(&rc->sent) || !ngx_queue_empty(&rc->out)) {
        q = ngx_queue_empty(&rc->sent) ? ngx_queue_head(&rc->out)
                                       : ngx_queue_head(&rc->sent);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_llm_router_redis_cmd_t, queue);
        cmd->handler(cmd, NULL);
        ngx_free(cmd);
    }
}


/*
 * The server is down: counted, said at most once a minute by a worker,
 * with its answer if it gave one, and not asked again for a second.
 */

void
ngx_http_llm_router_redis_error(ngx_http_llm_router_redis_t *redis,
    const char *reason, ngx_str_t *answer)
{
    ngx_str_t      quoted;
    ngx_atomic_t  *a;

    a = ngx_http_llm_router_redis_shm(redis, 1);

    if (a) {
        (void) ngx_atomic_fetch_add(a, 1);
    }

    a = ngx_http_llm_router_redis_shm(redis, 0);

    if (a) {
        *a = 0;
    }

    redis->down = 1;
    redis->retry = ngx_current_msec + NGX_HTTP_LLM_ROUTER_REDIS_RETRY;

    if (ngx_time() - redis->logged < 60) {
        return;
    }

    redis->logged = ngx_time();

    ngx_str_set(&quoted, "");

    if (answer) {
        quoted = *answer;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "llm_router: redis \"%V\" %s%s%V%s; budgets are kept in "
                  "the zone until it answers", &redis->name, reason,
                  answer ? " \"" : "", &quoted, answer ? "\"" : "");
}


static void
ngx_http_llm_router_redis_up(ngx_http_llm_router_redis_t *redis)
{
    ngx_atomic_t  *a;

    a = ngx_http_llm_router_redis_shm(redis, 0);

    if (a) {
        *a = 1;
    }

    if (!redis->down) {
        return;
    }

    redis->down = 0;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "llm_router: redis \"%V\" answers again", &redis->name);

    /* what the zone kept meanwhile goes to Redis */

    ngx_http_llm_router_reconcile(redis);
}


/* its gauge of being up, or its counter of errors, in the zone */

static ngx_atomic_t *
ngx_http_llm_router_redis_shm(ngx_http_llm_router_redis_t *redis,
    ngx_uint_t errors)
{
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);
    shm = lmcf->shm;

    if (shm == NULL) {
        return NULL;
    }

    return errors ? &shm->redis_errors[redis->index]
                  : &shm->redis_up[redis->index];
}


/* the status page's lines of each server */

u_char *
ngx_http_llm_router_redis_status(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_uint_t json)
{
    ngx_uint_t                    i;
    ngx_http_llm_router_shm_t    *shm;
    ngx_http_llm_router_redis_t  *redis;

    shm = lmcf->shm;
    redis = lmcf->redis.elts;

    if (lmcf->redis.nelts == 0) {
        return p;
    }

    if (json) {
        p = ngx_cpymem(p, ",\"redis\":{", sizeof(",\"redis\":{") - 1);

        for (i = 0; i < lmcf->redis.nelts; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_http_llm_router_json_string(p, redis[i].name.data,
                                                redis[i].name.len);
            p = ngx_sprintf(p, ":{\"up\":%uA,\"errors\":%uA}",
                            shm->redis_up[i], shm->redis_errors[i]);
        }

        *p++ = '}';

        return p;
    }

    p = ngx_http_llm_router_redis_family(p, lmcf, "llm_router_redis_up",
              "Whether the Redis server answered the last command of this "
              "server.", "gauge", shm->redis_up);

    return ngx_http_llm_router_redis_family(p, lmcf,
              "llm_router_redis_errors_total",
              "Failed connections and commands, by Redis server.",
              "counter", shm->redis_errors);
}


static u_char *
ngx_http_llm_router_redis_family(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, const char *name,
    const char *help, const char *type, ngx_atomic_t *values)
{
    ngx_uint_t                    i;
    ngx_http_llm_router_redis_t  *redis;

    redis = lmcf->redis.elts;

    p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                    type);

    for (i = 0; i < lmcf->redis.nelts; i++) {
        p = ngx_sprintf(p, "%s{name=\"", name);
        p = ngx_http_llm_router_prom_escape(p, redis[i].name.data,
                                            redis[i].name.len);
        p = ngx_sprintf(p, "\"} %uA\n", values[i]);
    }

    return p;
}
