/* Prepared statements in transaction and statement pooling, as PgBouncer
 * 1.21+ does with max_prepared_statements: a client's named statements are
 * tracked by name, renamed to a server-side name shared by every client
 * that prepares the same text, and prepared on whichever server connection
 * the client gets, transparently (prep.c explains the reply bookkeeping). */
#ifndef POOL_PREP_H
#define POOL_PREP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

/* Whether the client message type t needs rewriting (Parse, Bind, Describe,
 * Close with a statement name) in c's pool mode. */
bool prep_wants(const pclient *c, uint8_t t);
/* How many bytes of the message at off must be buffered to rewrite it (0:
 * none beyond what is there). */
size_t prep_need(pclient *c, keel_conn *cc, size_t off, uint8_t t, uint32_t len);
/* Rewrites the message at the start of c's input (type t, length len) onto
 * s's output and consumes it (or sets c->fwd_left for the rest of a large
 * Bind). Returns 0 or -EPROTO. */
int prep_rewrite(pclient *c, pserver *s, uint8_t t, uint32_t len);
/* Whether the server reply type t needs bookkeeping. */
bool prep_inspects_reply(const pserver *s, uint8_t t);
/* Bookkeeping for a reply; *drop set when the client must not see it. */
int prep_reply(pserver *s, const uint8_t *m, size_t len, bool *drop);
/* A Query, Sync or FunctionCall went to s; a ReadyForQuery came from s. */
void prep_note_sync(pserver *s);
void prep_on_ready(pserver *s);
/* The server's statements are gone (DISCARD ALL). */
void prep_server_reset(pserver *s);
void prep_server_free(pserver *s);
/* Frees a server's prepared-statement state detached from its server. */
void prep_state_free(void *state);
void prep_client_free(pclient *c);

#endif
