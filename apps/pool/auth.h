/* PostgreSQL password authentication for keel-pool: MD5 (PostgreSQL's "md5" scheme) and
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, in both roles: the server
 * side checks a client logging in to the pooler, the client side logs the pooler in to
 * PostgreSQL, with a password or with the ClientKey recovered from a client's proof
 * (PgBouncer's SCRAM pass-through).
 *
 * Pure functions over caller-owned state, no I/O and no global state; libcrypto supplies
 * the primitives. Functions returning int return 0 (or a length) on success and a
 * negative errno on failure:
 *   -EINVAL   malformed input or a call out of order,
 *   -ENOTSUP  a well-formed request for something we do not offer (channel binding
 *             "p=", an authzid "a=", a mandatory extension "m="),
 *   -ENOSPC   the out buffer is too small (nothing useful was written),
 *   -EACCES   wrong password: a client proof or server signature that does not verify,
 *   -EPERM    the server answered with "e=<error>" in its server-final-message,
 *   -EIO      libcrypto failed.
 * Every message written to an out buffer is NUL-terminated; every parser takes the
 * peer's bytes with their length, rejects embedded NULs and never reads past them. */
#ifndef POOL_AUTH_H
#define POOL_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* ---- helpers ---- */

/* Compares n bytes in time independent of their contents (CRYPTO_memcmp). */
bool pool_auth_equal(const void *a, const void *b, size_t n);

/* Writes base64 (RFC 4648, padded) of in[0..len) and a NUL to out. Returns the length
 * written without the NUL, or -ENOSPC. */
int pool_base64_encode(const uint8_t *in, size_t len, char *out, size_t outlen);

/* Decodes padded base64 in[0..len) into out. Strict: no blanks, length a multiple of 4,
 * '=' only as the last one or two characters. Returns the decoded length, -EINVAL on
 * malformed input or -ENOSPC when it would not fit in outcap. */
int pool_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap);

/* ---- MD5 ---- */

/* Length of "md5" + 32 hex digits, and the buffer size with the NUL. */
#define POOL_MD5_LEN 35
#define POOL_MD5_SIZE 36

/* Writes PostgreSQL's stored md5 secret, "md5" + hex(md5(password || user)), to out.
 * Returns 0 or -EIO. */
int pool_md5_secret(const char *user, const char *password, char out[POOL_MD5_SIZE]);

/* Writes the md5 wire response to a 4-byte salt, "md5" + hex(md5(hex || salt)) where hex
 * is the 32 digits of md5_secret. Returns 0, -EINVAL when md5_secret is not "md5" + 32
 * characters, or -EIO. */
int pool_md5_response(const char *md5_secret, const uint8_t salt[4], char out[POOL_MD5_SIZE]);

/* Whether a client's md5 wire response matches the stored secret of the given kind: a
 * plain-text password (user needed to derive the md5 secret) or an "md5..." secret. A
 * SCRAM secret cannot check an md5 response: false. Compares in constant time. */
bool pool_md5_check(const char *stored, pool_secret_kind kind, const char *user,
                    const uint8_t salt[4], const char *response);

/* ---- SCRAM-SHA-256: keys and secrets ---- */

#define POOL_SCRAM_KEY_LEN 32              /* SHA-256 */
#define POOL_SCRAM_SALT_MAX 64             /* decoded bytes */
#define POOL_SCRAM_MAX_ITERATIONS 10000000 /* beyond it a peer is stalling us */
#define POOL_SCRAM_NONCE_RAW 18            /* random bytes in a nonce we make */
#define POOL_SCRAM_NONCE_MAX 256           /* characters in any nonce, combined too */
#define POOL_SCRAM_MSG_MAX 1024            /* bytes of any SCRAM message, NUL included */
#define POOL_SCRAM_FINAL_SIZE (2 + 44 + 1) /* "v=" + base64(32) + NUL */

/* A SCRAM-SHA-256 secret as PostgreSQL stores it (pg_authid.rolpassword):
 * "SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>". */
typedef struct pool_scram_secret {
    int iterations;
    uint8_t salt[POOL_SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[POOL_SCRAM_KEY_LEN];
    uint8_t server_key[POOL_SCRAM_KEY_LEN];
} pool_scram_secret;

/* Parses a stored secret. Iterations must be 1..POOL_SCRAM_MAX_ITERATIONS, the salt
 * 1..POOL_SCRAM_SALT_MAX bytes, both keys exactly 32 bytes. Returns 0 or -EINVAL. */
int pool_scram_parse_secret(const char *text, pool_scram_secret *out);

/* Hi(password, salt, iterations), i.e. PBKDF2-HMAC-SHA256: the SaltedPassword. Costs
 * `iterations` HMACs: the caller runs it off the event loop. The password is used as
 * given (no SASLprep). Returns 0, -EINVAL on bad arguments or -EIO. */
int pool_scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                               int iterations, uint8_t out[POOL_SCRAM_KEY_LEN]);

/* From a SaltedPassword: ClientKey = HMAC(salted, "Client Key"), StoredKey = H(ClientKey),
 * ServerKey = HMAC(salted, "Server Key"). Any out pointer may be NULL. Returns 0 or -EIO. */
int pool_scram_keys(const uint8_t salted[POOL_SCRAM_KEY_LEN], uint8_t client_key[32],
                    uint8_t stored_key[32], uint8_t server_key[32]);

/* Writes "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" for password to out.
 * Costly like pool_scram_salted_password(). Returns the length written, -EINVAL, -ENOSPC
 * or -EIO. */
int pool_scram_make_secret(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, char *out, size_t outlen);

/* ---- SCRAM-SHA-256: server side (a client logging in to the pooler) ---- */

/* One exchange; zero it (or let server_first do so) before use. Fields are private to
 * auth.c except client_key/have_client_key, read after a successful server_final. */
typedef struct pool_scram_server {
    int _state;
    pool_scram_secret _secret;
    char _gs2_header[8]; /* "n,," or "y,," as the client sent it */
    size_t _gs2_len;
    char _nonce[POOL_SCRAM_NONCE_MAX]; /* client nonce + server nonce, NUL-terminated */
    size_t _nonce_len;
    char _client_first_bare[POOL_SCRAM_MSG_MAX];
    size_t _client_first_bare_len;
    char _server_first[POOL_SCRAM_MSG_MAX];
    size_t _server_first_len;
    /* After a successful pool_scram_server_final: the client's ClientKey, which logs the
     * pooler in to PostgreSQL as this user when the backend holds the same secret. */
    uint8_t client_key[POOL_SCRAM_KEY_LEN];
    bool have_client_key;
} pool_scram_server;

/* Starts an exchange: parses the client-first-message of the SASLInitialResponse
 * ("n,,n=user,r=nonce"), then writes the server-first-message
 * ("r=<client nonce><server nonce>,s=<b64 salt>,i=<iterations>") to out. The "n=" user
 * name is ignored, as PostgreSQL does (the startup packet names the user). Flag 'y' is
 * accepted since we offer no SCRAM-SHA-256-PLUS; 'p=' channel binding, an authzid or
 * "m=" is -ENOTSUP. The server nonce is 18 bytes from RAND_bytes, base64. secret is
 * copied. Returns the length written to out, or a negative errno (see the top). */
int pool_scram_server_first(pool_scram_server *s, const pool_scram_secret *secret,
                            const char *client_first, size_t len, char *out, size_t outlen);

/* Like pool_scram_server_first() with a given server nonce (printable ASCII but ','),
 * for tests. */
int pool_scram_server_first_with_nonce(pool_scram_server *s, const pool_scram_secret *secret,
                                       const char *client_first, size_t len,
                                       const char *server_nonce, char *out, size_t outlen);

/* Finishes an exchange: parses the client-final-message ("c=biws,r=<nonce>,p=<proof>"),
 * checks that c= carries the gs2 header of the client-first-message, that the nonce is
 * the combined one, and the proof against StoredKey. On success writes the
 * server-final-message ("v=<b64 ServerSignature>", needs POOL_SCRAM_FINAL_SIZE bytes) to
 * out, sets s->client_key (proof XOR ClientSignature) and s->have_client_key, and returns
 * its length. A wrong proof is -EACCES. Any failure ends the exchange. */
int pool_scram_server_final(pool_scram_server *s, const char *client_final, size_t len, char *out,
                            size_t outlen);

/* ---- SCRAM-SHA-256: client side (the pooler logging in to PostgreSQL) ---- */

/* One exchange; pool_scram_client_first() initializes it. After
 * pool_scram_client_server_first(), salt/salt_len/iterations hold what the server sent. */
typedef struct pool_scram_client {
    int _state;
    char _client_nonce[POOL_SCRAM_NONCE_MAX];
    size_t _client_nonce_len;
    char _nonce[POOL_SCRAM_NONCE_MAX]; /* combined, from server-first */
    size_t _nonce_len;
    char _client_first_bare[POOL_SCRAM_MSG_MAX];
    size_t _client_first_bare_len;
    char _server_first[POOL_SCRAM_MSG_MAX];
    size_t _server_first_len;
    uint8_t salt[POOL_SCRAM_SALT_MAX];
    size_t salt_len;
    int iterations;
    uint8_t _client_key[POOL_SCRAM_KEY_LEN];
    uint8_t _server_key[POOL_SCRAM_KEY_LEN];
    bool _have_keys;
    uint8_t _server_signature[POOL_SCRAM_KEY_LEN];
} pool_scram_client;

/* Starts an exchange (resetting c) and writes the client-first-message
 * ("n,,n=,r=<nonce>"; PostgreSQL ignores n=) to out, the nonce 18 bytes from RAND_bytes,
 * base64. Returns the length written, -ENOSPC or -EIO. */
int pool_scram_client_first(pool_scram_client *c, char *out, size_t outlen);

/* Like pool_scram_client_first() with a given nonce (printable ASCII but ','), for tests. */
int pool_scram_client_first_with_nonce(pool_scram_client *c, const char *nonce, char *out,
                                       size_t outlen);

/* Like pool_scram_client_first_with_nonce() naming user in "n=" (',' and '=' escaped as
 * RFC 5802 says, no SASLprep); NULL is "". For RFC test vectors and non-PostgreSQL peers. */
int pool_scram_client_first_ex(pool_scram_client *c, const char *user, const char *nonce, char *out,
                               size_t outlen);

/* Parses the server-first-message: the nonce must extend ours, the salt decode to
 * 1..POOL_SCRAM_SALT_MAX bytes, iterations be 1..POOL_SCRAM_MAX_ITERATIONS. Then the
 * caller provides keys with pool_scram_client_set_salted() or pool_scram_client_set_keys().
 * Returns 0, -EINVAL or -ENOTSUP ("m="). */
int pool_scram_client_server_first(pool_scram_client *c, const char *msg, size_t len);

/* Provides keys from Hi(password, c->salt, c->iterations), which the caller computed off
 * the event loop. Returns 0, -EINVAL when out of order, or -EIO. */
int pool_scram_client_set_salted(pool_scram_client *c, const uint8_t salted[POOL_SCRAM_KEY_LEN]);

/* Provides ClientKey and ServerKey directly (pass-through or cached); salt and
 * iterations are then not needed. */
void pool_scram_client_set_keys(pool_scram_client *c, const uint8_t client_key[32],
                                const uint8_t server_key[32]);

/* Writes the client-final-message ("c=biws,r=<nonce>,p=<b64 proof>") to out. Needs
 * server_first done and keys set. Returns the length written, -EINVAL, -ENOSPC or -EIO. */
int pool_scram_client_final(pool_scram_client *c, char *out, size_t outlen);

/* Verifies the server-final-message against ServerKey. Returns 0 when "v=" matches,
 * -EACCES when it does not, -EPERM for "e=<error>", -EINVAL when malformed. */
int pool_scram_client_verify(pool_scram_client *c, const char *msg, size_t len);

#endif
